"""The runtime axis of the speed benchmark: one model, the forms users run it in.

On the CPU: torch eager (contiguous and channels_last), frozen TorchScript
(``torch.jit.freeze`` + ``optimize_for_inference``: oneDNN convs with bias and ReLU fused, weights
prepacked), ONNX Runtime and OpenVINO (the model exported once by :mod:`accel_det.deploy`, checked
against PyTorch, then loaded at each thread count). On a CUDA device: torch eager channels_last in
float32, float16 and bfloat16.

A form is built by :func:`build_call`, which returns a zero-argument callable (inputs bound) for
:func:`accel_det.utils.timing.time_calls`.
"""

from __future__ import annotations

import copy
import os
import warnings
from typing import Callable, Sequence, Tuple

import torch
from torch import nn

from ..deploy.export import Graph, export_graph
from ..deploy.runtime import load_runtime
from ..errors import AccelDetError

CPU_FORMS = ("eager", "channels_last", "torchscript", "onnxruntime", "openvino")
EXPORTED = ("onnxruntime", "openvino")
CUDA_DTYPES = {
    "cuda fp32 channels_last": torch.float32,
    "cuda fp16 channels_last": torch.float16,
    "cuda bf16 channels_last": torch.bfloat16,
}
CUDA_FORMS = tuple(CUDA_DTYPES)
# what a form's name means, for the tables' footnotes
DESCRIPTIONS = {
    "eager": "torch eager, contiguous (NCHW)",
    "channels_last": "torch eager, channels_last (NHWC)",
    "torchscript": "torch.jit.trace + freeze + optimize_for_inference (oneDNN, fused, prepacked)",
    "onnxruntime": "ONNX Runtime, CPU execution provider, sequential",
    "openvino": "OpenVINO CPU plugin, LATENCY hint, f32 precision",
}


def forms_for(device: torch.device, requested: Sequence[str] = ()) -> Tuple[str, ...]:
    """The forms timed on ``device`` (``requested``, checked, or all of that device's)."""
    known = CUDA_FORMS if device.type == "cuda" else CPU_FORMS
    if not requested:
        return known
    unknown = [f for f in requested if f not in known]
    if unknown:
        raise AccelDetError(
            f"unknown form(s) {', '.join(unknown)} on {device.type}: choose from {', '.join(known)}"
        )
    return tuple(requested)


def export_onnx(module: nn.Module, inputs: tuple, path: str, dynamic_shapes=None, names=None):
    """``module`` as ONNX at ``path``, checked against PyTorch on ``inputs``."""
    input_names, output_names = names or ([f"input{i}" for i in range(len(inputs))], ["output"])
    graph = Graph(
        copy.deepcopy(module).eval(),
        [inputs],
        input_names,
        output_names,
        dynamic_shapes=dynamic_shapes,
        description=os.path.basename(path),
    )
    export_graph(graph, path, "onnx", overwrite=True)
    return path


def torchscript(module: nn.Module, inputs: tuple) -> torch.jit.ScriptModule:
    """The frozen, inference-optimised TorchScript of ``module`` traced on ``inputs``."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings on shape arithmetic
        traced = torch.jit.trace(copy.deepcopy(module).eval(), inputs, check_trace=False)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced))


def build_call(
    form: str,
    module: nn.Module,
    inputs: tuple,
    *,
    threads: int = 1,
    onnx_path: str = "",
    device: torch.device = torch.device("cpu"),
) -> Callable[[], object]:
    """A zero-argument callable running ``module`` on ``inputs`` in ``form``. ``threads``: the
    exported runtimes' thread count (torch forms use torch's, set by the timer); ``onnx_path``:
    the model exported by :func:`export_onnx` (the exported forms)."""
    if form == "eager":
        model = copy.deepcopy(module).eval()
        return lambda: model(*inputs)
    if form == "channels_last":
        model = copy.deepcopy(module).eval().to(memory_format=torch.channels_last)
        fed = tuple(channels_last(x) for x in inputs)
        return lambda: model(*fed)
    if form == "torchscript":
        model = torchscript(module, inputs)
        return lambda: model(*inputs)
    if form in EXPORTED:
        if not onnx_path:
            raise AccelDetError(f"the form {form} needs the model exported (onnx_path)")
        runtime = load_runtime(onnx_path, form, threads)
        arrays = tuple(x.detach().cpu().numpy() for x in inputs)
        return lambda: runtime(*arrays)
    if form in CUDA_DTYPES:
        dtype = CUDA_DTYPES[form]
        model = copy.deepcopy(module).eval().to(device=device, dtype=dtype)
        model = model.to(memory_format=torch.channels_last)
        fed = tuple(channels_last(x.to(device=device, dtype=dtype)) for x in inputs)
        return lambda: model(*fed)
    raise AccelDetError(f"unknown form {form!r}: choose from {', '.join(CPU_FORMS + CUDA_FORMS)}")


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """A 4-d tensor in channels_last memory format (others as they are)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
