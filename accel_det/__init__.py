"""accel-det: data-driven low-rank acceleration of very deep CNNs (Zhang et al., TPAMI 2016)."""

__version__ = "0.1.0"

import warnings

# fvcore (imported by detectron2) calls torch.jit.script at import time, which torch >= 2.10 marks
# deprecated; the warning says nothing about accel-det and would precede every tool's output.
warnings.filterwarnings(
    "ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning
)
