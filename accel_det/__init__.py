"""accel-det: data-driven low-rank acceleration of very deep CNNs (Zhang et al., TPAMI 2016)."""

__version__ = "0.1.0"

import os
import warnings

# ONNX Runtime (1.32 on Linux) queues usage events for Microsoft (a device id, the OS, CPU, memory,
# the Python executable) in ~/.cache/Microsoft/DeveloperTools from the moment it is imported,
# unless ORT_DISABLE_TELEMETRY is set: accel-det sets it, unless the user has.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

# fvcore (imported by detectron2) calls torch.jit.script at import time, which torch >= 2.10 marks
# deprecated; the warning says nothing about accel-det and would precede every tool's output.
warnings.filterwarnings(
    "ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning
)
