"""The main job (``make demo``): Fast R-CNN AP50 against speedup on synthetic data, on the CPU;
``run_fpn_demo``: the second demo, a ResNet-18-FPN Faster R-CNN compressed as a whole detector."""

from .fpn import FPNDemoRun, run_fpn_demo
from .options import DemoOptions
from .stages import DemoRun, run_demo

__all__ = ["DemoOptions", "DemoRun", "FPNDemoRun", "run_demo", "run_fpn_demo"]
