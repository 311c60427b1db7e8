"""The forms the R-CNN speed benchmark runs a detector in, and the timer of its stages.

Backbone + FPN (``model.backbone`` on a normalized, padded image): torch eager, TorchScript
(``torch.jit.trace`` + ``freeze``), ONNX Runtime and OpenVINO (exported once by
:mod:`accel_det.deploy.backbone`, checked against PyTorch). The whole model
(``GeneralizedRCNN.inference`` on one image, pre- and post-processing included): eager; eager
with the backbone in ONNX Runtime or OpenVINO (:class:`RuntimeBackbone`); TorchScript of the
whole model, traced through Detectron2's ``TracingAdapter``.

A form is a zero-argument callable; whole-model forms run by eager Python carry a
:class:`StageTimer` whose ``last`` holds the seconds of each stage of the latest call.
"""

from __future__ import annotations

import copy
import time
import warnings
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ..deploy.backbone import BackboneGraph
from ..deploy.runtime import load_runtime

BACKBONE_FORMS = ("eager", "torchscript", "onnxruntime", "openvino")
MODEL_FORMS = ("eager", "eager + onnxruntime backbone", "eager + openvino backbone", "torchscript")
EXPORTED = ("onnxruntime", "openvino")
STAGES = ("preprocess", "backbone", "fpn", "rpn", "roi_heads", "postprocess")
DESCRIPTIONS = {
    "eager": "torch eager",
    "torchscript": "torch.jit.trace + freeze (whole model: through detectron2's TracingAdapter)",
    "onnxruntime": "ONNX Runtime, CPU execution provider",
    "openvino": "OpenVINO CPU plugin, LATENCY hint, f32",
    "eager + onnxruntime backbone": "backbone + FPN in ONNX Runtime, the rest torch eager",
    "eager + openvino backbone": "backbone + FPN in OpenVINO, the rest torch eager",
}


def traced_backbone(backbone: nn.Module, image: torch.Tensor) -> torch.jit.ScriptModule:
    """The frozen TorchScript of ``backbone`` (as :class:`BackboneGraph`) traced on ``image``."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings on shape arithmetic
        traced = torch.jit.trace(BackboneGraph(copy.deepcopy(backbone)).eval(), (image,))
        return torch.jit.freeze(traced)


def backbone_call(
    form: str, backbone: nn.Module, image: torch.Tensor, *, threads: int, onnx_path: str = ""
) -> Callable[[], object]:
    """``backbone(image)`` in ``form`` (:data:`BACKBONE_FORMS`); ``threads``: the exported
    runtimes' (torch's is set by the timer); ``onnx_path``: the exported backbone."""
    if form == "eager":
        return lambda: backbone(image)
    if form == "torchscript":
        traced = traced_backbone(backbone, image)
        return lambda: traced(image)
    runtime = load_runtime(onnx_path, form, threads)
    array = image.numpy()
    return lambda: runtime(array)


class RuntimeBackbone(nn.Module):
    """A Detectron2 backbone's stand-in that runs the exported backbone in a runtime: same
    ``output_shape()``, ``size_divisibility`` and ``padding_constraints``, so
    ``GeneralizedRCNN`` pads its images as before and its heads read the same features."""

    def __init__(self, backbone: nn.Module, runtime):
        super().__init__()
        self.runtime = runtime
        self.names = list(backbone.output_shape())
        self.shapes = backbone.output_shape()
        self.size_divisibility = backbone.size_divisibility
        self.padding_constraints = getattr(backbone, "padding_constraints", {})

    def output_shape(self):
        return self.shapes

    def forward(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
        outputs = self.runtime(image.contiguous().numpy())
        return {n: torch.from_numpy(np.asarray(o)) for n, o in zip(self.names, outputs)}


class StageTimer:
    """Seconds of each stage (:data:`STAGES`) of a ``GeneralizedRCNN``'s latest inference call,
    from forward hooks on ``backbone.bottom_up``, ``backbone``, ``proposal_generator`` and
    ``roi_heads`` and a timed ``roi_heads.box_predictor.inference`` (score threshold and NMS,
    counted as post-processing with the rescale to the image's size). A backbone without
    ``bottom_up`` (an exported one) is all ``backbone``, ``fpn`` 0."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.marks: Dict[str, float] = {}
        self.last: Dict[str, float] = {}
        self.handles = []
        modules = {
            "bottom_up": getattr(model.backbone, "bottom_up", None),
            "backbone": model.backbone,
            "rpn": model.proposal_generator,
            "roi_heads": model.roi_heads,
        }
        for name, module in modules.items():
            if module is not None:
                self.handles.append(module.register_forward_pre_hook(self.mark(name + ".start")))
                self.handles.append(module.register_forward_hook(self.mark(name + ".end")))
        predictor = model.roi_heads.box_predictor
        inference = predictor.inference

        def timed_inference(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inference(*args, **kwargs)
            finally:
                self.marks["nms"] = self.marks.get("nms", 0.0) + time.perf_counter() - start

        predictor.inference = timed_inference

    def mark(self, key: str):
        def hook(*_):
            self.marks[key] = time.perf_counter()

        return hook

    def __call__(self, inputs: List[dict]):
        self.marks = {"nms": 0.0}
        start = time.perf_counter()
        outputs = self.model.inference(inputs, do_postprocess=True)
        end = time.perf_counter()
        m = self.marks
        backbone = m["backbone.end"] - m["backbone.start"]
        bottom_up = m["bottom_up.end"] - m["bottom_up.start"] if "bottom_up.end" in m else backbone
        self.last = {
            "preprocess": m["backbone.start"] - start,
            "backbone": bottom_up,
            "fpn": backbone - bottom_up,
            "rpn": m["rpn.end"] - m["rpn.start"],
            "roi_heads": m["roi_heads.end"] - m["roi_heads.start"] - m["nms"],
            "postprocess": m["nms"] + end - m["roi_heads.end"],
        }
        self.last["total"] = end - start
        return outputs


def model_inputs(image: torch.Tensor) -> List[dict]:
    """Detectron2's input of one image (3×H×W, 0-255, already at its test size)."""
    return [{"image": image, "height": image.shape[-2], "width": image.shape[-1]}]


def model_call(
    form: str, model: nn.Module, image: torch.Tensor, *, threads: int, onnx_path: str = ""
) -> Tuple[Callable[[], object], Optional[StageTimer]]:
    """The whole ``model`` on ``image`` in ``form`` (:data:`MODEL_FORMS`), and its stage timer
    (None for the traced model)."""
    inputs = model_inputs(image)
    if form == "torchscript":
        traced = traced_model(model, image)
        return (lambda: traced(image)), None
    model = copy.deepcopy(model).eval()
    if form != "eager":
        runtime = load_runtime(onnx_path, form.split()[2], threads)
        model.backbone = RuntimeBackbone(model.backbone, runtime)
    timer = StageTimer(model)
    return (lambda: timer(inputs)), timer


def traced_model(model: nn.Module, image: torch.Tensor) -> torch.jit.ScriptModule:
    """The whole model traced by ``torch.jit.trace`` through Detectron2's ``TracingAdapter``
    (image in, flattened instances out: tensors only, so the output size is the image's),
    frozen."""
    from detectron2.export import TracingAdapter

    adapter = TracingAdapter(copy.deepcopy(model).eval(), [{"image": image}])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(adapter.eval(), adapter.flattened_inputs, check_trace=False)
        return torch.jit.freeze(traced.eval())
