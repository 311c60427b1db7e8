"""Exported models in an inference runtime: ONNX Runtime or OpenVINO, a chosen number of threads.

    run = load_runtime("vgg16_4x.onnx", runtime="onnxruntime", threads=1)
    logits, = run(images)               # numpy arrays or torch tensors in, numpy arrays out

OpenVINO runs ``.xml`` (its IR) and ``.onnx`` files, ONNX Runtime ``.onnx`` files. OpenVINO is
asked for float32 arithmetic: on CPUs with bfloat16 support its default is bfloat16, which
differs from PyTorch by up to a few per cent.
"""

from __future__ import annotations

import os
from typing import List, Optional

import numpy as np

from ..errors import AccelDetError
from ..utils.files import not_found

RUNTIMES = ("onnxruntime", "openvino")
DISPLAY_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}
INSTALL_HINT = "install the deploy extra: pip install -e '.[deploy]' (make venv does)"


def default_runtime(path: str) -> str:
    """OpenVINO for its ``.xml`` IR, ONNX Runtime otherwise."""
    return "openvino" if path.endswith(".xml") else "onnxruntime"


class Runtime:
    """An exported model loaded in a runtime. Call it with the inputs in order (or by name), as
    numpy arrays or torch tensors; it returns numpy arrays in the order of ``output_names``."""

    def __init__(self, name: str, path: str, threads: int):
        self.name, self.path, self.threads = name, path, threads
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
        return f"{type(self).__name__}({self.path!r}, threads={self.threads})"


class OnnxRuntime(Runtime):
    def __init__(self, path: str, threads: int = 1):
        super().__init__("onnxruntime", path, threads)
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
    def __init__(self, path: str, threads: int = 1, precision: str = "f32"):
        super().__init__("openvino", path, threads)
        ov = import_runtime("openvino")
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
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


def check_runtime(path: str, runtime: Optional[str] = None) -> str:
    """The runtime that runs ``path``: ``runtime``, checked, or the default for its suffix."""
    runtime = runtime or default_runtime(path)
    if runtime not in RUNTIMES:
        raise AccelDetError(f"unknown runtime {runtime!r}: choose {' or '.join(RUNTIMES)}")
    return runtime


def load_runtime(
    path: str, runtime: Optional[str] = None, threads: int = 1, precision: str = "f32"
) -> Runtime:
    """``path`` (an exported ``.onnx`` or OpenVINO ``.xml``) loaded in ``runtime`` (default: by
    the file's suffix) with ``threads`` threads (0: the runtime's default, all cores), on the CPU.
    ``precision`` is OpenVINO's ``INFERENCE_PRECISION_HINT`` (``f32``, ``bf16``, ``f16``)."""
    runtime = check_runtime(path, runtime)
    if not os.path.isfile(path):
        raise not_found("exported model file", path)
    if runtime == "onnxruntime":
        if path.endswith(".xml"):
            raise AccelDetError(f"{path} is OpenVINO IR: run it with --runtime openvino")
        return OnnxRuntime(path, threads)
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
