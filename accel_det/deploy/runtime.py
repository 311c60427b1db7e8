"""Exported models in an inference runtime: ONNX Runtime or OpenVINO, a chosen number of threads.

    run = load_runtime("vgg16_4x.onnx", runtime="onnxruntime", threads=1)
    logits, = run(images)               # numpy arrays or torch tensors in, numpy arrays out

OpenVINO runs ``.xml`` (its IR) and ``.onnx`` files, ONNX Runtime ``.onnx`` files. The precision
(:mod:`.precision`) is the one the model's record names (``fp32`` without a record): OpenVINO is
asked for float32 arithmetic for ``fp32`` and ``int8`` models (on CPUs with bfloat16 support its
default is bfloat16, which differs from PyTorch by up to a few per cent) and for bfloat16 for
``bf16`` ones; ``int8`` files carry their quantization in the graph. A ``bf16`` model runs in
OpenVINO only (ONNX Runtime's CPU provider has no bfloat16 arithmetic on x86).
"""

from __future__ import annotations

import json
import os
from typing import List, Optional

import numpy as np

from ..errors import AccelDetError
from ..utils.files import not_found
from .precision import OPENVINO_HINTS, check_precision

RUNTIMES = ("onnxruntime", "openvino")
DISPLAY_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}
INSTALL_HINT = "install the deploy extra: pip install -e '.[deploy]' (make venv does)"


def default_runtime(path: str, precision: str = "fp32") -> str:
    """OpenVINO for its ``.xml`` IR and for a bf16 model, ONNX Runtime otherwise."""
    return "openvino" if path.endswith(".xml") or precision == "bf16" else "onnxruntime"


def recorded_precision(path: str) -> str:
    """The precision the record next to ``path`` names (``X.onnx.json``; ``fp32`` when there is
    none or it cannot be read: :func:`accel_det.deploy.record.read_export_record` checks records
    where it matters)."""
    try:
        with open(path + ".json", encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return "fp32"
    precision = record.get("precision", "fp32") if isinstance(record, dict) else "fp32"
    return precision if isinstance(precision, str) else "fp32"


class Runtime:
    """An exported model loaded in a runtime. Call it with the inputs in order (or by name), as
    numpy arrays or torch tensors; it returns numpy arrays in the order of ``output_names``."""

    def __init__(self, name: str, path: str, threads: int, precision: str = "fp32"):
        self.name, self.path, self.threads, self.precision = name, path, threads, precision
        self.input_names: List[str] = []
        self.output_names: List[str] = []

    def __call__(self, *inputs, **named) -> List[np.ndarray]:
        if len(inputs) > len(self.input_names):
            raise AccelDetError(
                f"{self.path} takes {len(self.input_names)} inputs "
                f"({', '.join(self.input_names)}), got {len(inputs)}"
            )
        feed = dict(zip(self.input_names, inputs), **named)
        missing = [n for n in self.input_names if n not in feed]
        if missing or len(feed) != len(self.input_names):
            raise AccelDetError(
                f"{self.path} takes the inputs {', '.join(self.input_names)}, got {', '.join(feed)}"
            )
        feed = {name: as_array(value) for name, value in feed.items()}
        try:
            return self.run(feed)
        except Exception as error:  # the runtimes raise their own types
            shapes = ", ".join(f"{name} {list(value.shape)}" for name, value in feed.items())
            raise AccelDetError(
                f"{DISPLAY_NAMES[self.name]} cannot run {self.path} on {shapes}: {one_line(error)}"
            ) from error

    def run(self, feed: dict) -> List[np.ndarray]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.path!r}, threads={self.threads}, "
            f"precision={self.precision!r})"
        )


class OnnxRuntime(Runtime):
    def __init__(self, path: str, threads: int = 1, precision: str = "fp32"):
        super().__init__("onnxruntime", path, threads, precision)
        ort = import_runtime("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: ONNX Runtime's default, all cores
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as error:
            raise AccelDetError(f"ONNX Runtime cannot load {path}: {one_line(error)}") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feed: dict) -> List[np.ndarray]:
        return list(self.session.run(self.output_names, feed))


class OpenVinoRuntime(Runtime):
    def __init__(self, path: str, threads: int = 1, precision: str = "fp32"):
        super().__init__("openvino", path, threads, precision)
        ov = import_runtime("openvino")
        hint = OPENVINO_HINTS[precision]
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            self.model = ov.Core().compile_model(path, "CPU", config)
        except Exception as error:
            raise AccelDetError(f"OpenVINO cannot load {path}: {one_line(error)}") from None
        self.input_names = [i.get_any_name() for i in self.model.inputs]
        self.output_names = [o.get_any_name() for o in self.model.outputs]
        self.request = self.model.create_infer_request()

    def run(self, feed: dict) -> List[np.ndarray]:
        results = self.request.infer(feed)
        return [np.array(results[output]) for output in self.model.outputs]


def check_runtime(path: str, runtime: Optional[str] = None, precision: Optional[str] = None) -> str:
    """The runtime that runs ``path``: ``runtime``, checked, or the default for its suffix and
    precision (``None``: the one its record names)."""
    precision = recorded_precision(path) if precision is None else precision
    runtime = runtime or default_runtime(path, precision)
    if runtime not in RUNTIMES:
        raise AccelDetError(f"unknown runtime {runtime!r}: choose {' or '.join(RUNTIMES)}")
    if runtime == "onnxruntime" and precision == "bf16":
        raise AccelDetError(
            f"{path} is a bf16 model: ONNX Runtime's CPU provider has no bfloat16 arithmetic, "
            "run it with --runtime openvino"
        )
    return runtime


def load_runtime(
    path: str, runtime: Optional[str] = None, threads: int = 1, precision: Optional[str] = None
) -> Runtime:
    """``path`` (an exported ``.onnx`` or OpenVINO ``.xml``) loaded in ``runtime`` (default: by
    the file's suffix and precision) with ``threads`` threads (0: the runtime's default, all
    cores), on the CPU, in ``precision`` (``fp32``, ``bf16``, ``int8``; default: the one its
    record names, :mod:`.precision`)."""
    precision = check_precision(recorded_precision(path) if precision is None else precision)
    runtime = check_runtime(path, runtime, precision)
    if not os.path.isfile(path):
        raise not_found("exported model file", path)
    if runtime == "onnxruntime":
        if path.endswith(".xml"):
            raise AccelDetError(f"{path} is OpenVINO IR: run it with --runtime openvino")
        return OnnxRuntime(path, threads, precision)
    return OpenVinoRuntime(path, threads, precision)


def as_array(value) -> np.ndarray:
    """A C-contiguous numpy array of a torch tensor, a numpy array or a list (float64 made
    float32)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    array = np.ascontiguousarray(value)
    return array.astype(np.float32) if array.dtype == np.float64 else array


def import_runtime(module: str):
    """The module ``onnxruntime`` or ``openvino``, or one line saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise AccelDetError(f"{module} is not installed: {INSTALL_HINT}") from None


def one_line(error: Exception) -> str:
    """An exception's message on one line, at most 300 characters."""
    text = " ".join(str(error).split())
    return text[:300] or type(error).__name__
