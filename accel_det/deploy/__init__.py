"""Deployment: export to ONNX or OpenVINO IR, checked against PyTorch, and exported models run in
ONNX Runtime or OpenVINO.

* :mod:`.runtime`: ``load_runtime(path, runtime="onnxruntime"|"openvino", threads=1)``
* :mod:`.export`: ``export_graph(graph, path, "onnx"|"openvino", tolerance=...)``
* :mod:`.classifier`: ``classifier_graph(weights, plan, backbone=...)``, a VGG-16 or ResNet
  classifier or its convs (:mod:`.vgg`: ``vgg16_graph``, the VGG-16 case)
* :mod:`.backbone`: ``export_backbone(model.backbone, path, fmt, input_hw=...)``, a Detectron2
  backbone (ResNet-FPN, plain or accelerated) as image → feature maps
* :mod:`.detector` (Detectron2): ``detector_graph(cfg)``, Fast R-CNN as image + proposals →
  scores + boxes
* :mod:`.evaluate` (Detectron2): ``ExportedDetector``, ``evaluate_exported(cfg, path)``

This package imports no detectron2; its ``detector`` and ``evaluate`` modules do.
"""

from .backbone import backbone_graph, export_backbone
from .classifier import classifier_graph
from .export import (
    DEFAULT_TOLERANCE,
    FORMATS,
    ExportResult,
    Graph,
    dynamic_dim,
    export_graph,
    relative_difference,
)
from .runtime import RUNTIMES, Runtime, load_runtime
from .vgg import vgg16_graph

__all__ = [
    "DEFAULT_TOLERANCE",
    "FORMATS",
    "RUNTIMES",
    "ExportResult",
    "Graph",
    "Runtime",
    "backbone_graph",
    "classifier_graph",
    "dynamic_dim",
    "export_backbone",
    "export_graph",
    "load_runtime",
    "relative_difference",
    "vgg16_graph",
]
