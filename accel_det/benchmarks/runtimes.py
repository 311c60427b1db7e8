"""The runtime axis of the speed benchmark: one model, the forms users run it in.

On the CPU: torch eager (contiguous and channels_last), frozen TorchScript
(``torch.jit.freeze`` + ``optimize_for_inference``: oneDNN convs with bias and ReLU fused, weights
prepacked), ONNX Runtime and OpenVINO (the model exported once by :mod:`accel_det.deploy`, checked
against PyTorch, then loaded at each thread count), and the reduced precisions users deploy
(:mod:`accel_det.deploy.precision`): eager channels_last under ``torch.autocast`` bfloat16,
OpenVINO with its bf16 hint, and the int8 QDQ model (:mod:`accel_det.deploy.quantize`, calibrated
on the timed input: speed does not depend on the ranges) in ONNX Runtime and in OpenVINO. On a
CUDA device: torch eager channels_last in float32, float16 and bfloat16.

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
from ..deploy.quantize import quantize_onnx
from ..deploy.runtime import load_runtime
from ..errors import AccelDetError

CPU_FORMS = (
    "eager",
    "channels_last",
    "torchscript",
    "onnxruntime",
    "openvino",
    "channels_last bf16",
    "openvino bf16",
    "onnxruntime int8",
    "openvino int8",
)
# the forms that run an exported file, and the runtime each runs it in
EXPORTED = {
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
    "openvino bf16": "openvino",
    "onnxruntime int8": "onnxruntime",
    "openvino int8": "openvino",
}
INT8_FORMS = ("onnxruntime int8", "openvino int8")
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
    "channels_last bf16": "torch eager, channels_last, torch.autocast('cpu', torch.bfloat16)",
    "openvino bf16": "OpenVINO CPU plugin, LATENCY hint, INFERENCE_PRECISION_HINT bf16 (the "
    "float32 file)",
    "onnxruntime int8": "ONNX Runtime, the int8 QDQ model (quantize_static, per-channel weights)",
    "openvino int8": "OpenVINO CPU plugin, LATENCY hint, the int8 QDQ model",
}


def form_precision(form: str) -> str:
    """``fp32``, ``bf16`` or ``int8``: the arithmetic of ``form`` (a CUDA form's dtype)."""
    for precision in ("int8", "bf16", "fp16"):
        if precision in form.split():
            return precision
    return "fp32"


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


def quantize_for_timing(onnx_path: str, inputs: tuple, path: str) -> str:
    """The int8 QDQ form of the float32 ``onnx_path`` at ``path``, calibrated on ``inputs`` (speed
    does not depend on the activation ranges; quality is the export's business)."""
    import onnx

    names = [i.name for i in onnx.load(onnx_path, load_external_data=False).graph.input]
    arrays = tuple(x.detach().cpu().numpy() for x in inputs)
    quantize_onnx(onnx_path, path, names, [arrays])
    return path


def int8_path(onnx_path: str) -> str:
    """Where :func:`quantize_for_timing` puts the int8 form of ``onnx_path``."""
    return onnx_path[: -len(".onnx")] + ".int8.onnx"


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
    the model exported by :func:`export_onnx` (the exported forms; the int8 forms run
    :func:`int8_path` of it, made by :func:`quantize_for_timing`)."""
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
    if form == "channels_last bf16":
        model = copy.deepcopy(module).eval().to(memory_format=torch.channels_last)
        fed = tuple(channels_last(x) for x in inputs)

        def autocast_bf16():
            with torch.autocast("cpu", torch.bfloat16):
                return model(*fed)

        return autocast_bf16
    if form in EXPORTED:
        if not onnx_path:
            raise AccelDetError(f"the form {form} needs the model exported (onnx_path)")
        precision = form_precision(form)
        path = int8_path(onnx_path) if precision == "int8" else onnx_path
        runtime = load_runtime(path, EXPORTED[form], threads, precision)
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
