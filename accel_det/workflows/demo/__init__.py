"""The main job (``make demo``): Fast R-CNN AP50 against speedup on synthetic data, on the CPU."""

from .options import DemoOptions
from .stages import DemoRun, run_demo

__all__ = ["DemoOptions", "DemoRun", "run_demo"]
