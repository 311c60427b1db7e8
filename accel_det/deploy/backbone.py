"""A Detectron2 backbone (ResNet-FPN, plain or accelerated) as one exportable graph.

    result = export_backbone(model.backbone, "r50_fpn_2x.onnx", input_hw=(800, 1344))
    result.max_difference               # checked against PyTorch in ONNX Runtime before writing

``BackboneGraph``: ``image`` (1×3×H×W float32, normalized and padded as Detectron2's
``GeneralizedRCNN.preprocess_image`` leaves it, H and W multiples of ``size_divisibility``) →
the backbone's feature maps, one output per name of ``output_shape()`` in its order (``p2`` …
``p6`` for an FPN). Factorized layers are plain conv chains (:mod:`accel_det.nn.factorized`), so
an accelerated backbone exports as the plain one does. The input size is static: a detector's
test size is fixed (the shorter side ``INPUT.MIN_SIZE_TEST``), and static shapes let the
runtimes plan every layer.
"""

from __future__ import annotations

import copy
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import AccelDetError
from .export import DEFAULT_TOLERANCE, ExportResult, Graph, export_graph

INPUT_NAME = "image"


class BackboneGraph(nn.Module):
    """A Detectron2 ``Backbone`` whose dict of features is returned as a tuple, in the order of
    :attr:`output_names`."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.output_names = list(backbone.output_shape())

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        features = self.backbone(image)
        return tuple(features[name] for name in self.output_names)


def check_input_hw(backbone: nn.Module, input_hw: Sequence[int]) -> Tuple[int, int]:
    """``input_hw`` checked: two positive sides, multiples of the backbone's
    ``size_divisibility`` (Detectron2 pads images to them; an FPN's top-down sums need it)."""
    multiple = max(1, int(getattr(backbone, "size_divisibility", 0) or 0))
    if len(input_hw) != 2 or any(int(s) < 1 or int(s) % multiple for s in input_hw):
        raise AccelDetError(
            f"the backbone's input size must be two positive multiples of {multiple} (its "
            f"size_divisibility), got {list(input_hw)}"
        )
    return int(input_hw[0]), int(input_hw[1])


def backbone_samples(
    input_hw: Tuple[int, int], count: int = 2, seed: int = 0
) -> List[Tuple[torch.Tensor]]:
    """``count`` random normalized images (standard normal pixels) of ``input_hw``."""
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(1, 3, *input_hw, generator=generator),) for _ in range(count)]


def backbone_graph(
    backbone: nn.Module,
    input_hw: Sequence[int],
    samples: Optional[List[Tuple[torch.Tensor]]] = None,
    description: str = "",
) -> Graph:
    """The :class:`~.export.Graph` of a Detectron2 backbone (a copy, in eval mode) at the static
    input size ``input_hw``, checked on ``samples`` (default: two random images)."""
    input_hw = check_input_hw(backbone, input_hw)
    module = BackboneGraph(copy.deepcopy(backbone).eval()).eval()
    plan = getattr(backbone, "plan", None)
    provenance = {"backbone": type(backbone).__name__, "input_hw": list(input_hw)}
    if isinstance(plan, dict):
        provenance["plan"] = {
            k: plan.get(k) for k in ("method", "speedup", "theoretical_speedup") if k in plan
        }
    return Graph(
        module,
        samples or backbone_samples(input_hw),
        [INPUT_NAME],
        module.output_names,
        description=description or f"{type(backbone).__name__} backbone",
        provenance=provenance,
    )


def export_backbone(
    backbone: nn.Module,
    path: str,
    fmt: str = "onnx",
    *,
    input_hw: Sequence[int] = (800, 1344),
    tolerance: float = DEFAULT_TOLERANCE,
    threads: int = 1,
    overwrite: bool = False,
) -> ExportResult:
    """Export a Detectron2 backbone (``model.backbone``: ResNet-FPN, plain or accelerated by
    ``build_accel_backbone``) to ``path`` as ONNX or OpenVINO IR (``fmt``), checked against
    PyTorch in ONNX Runtime / OpenVINO (:func:`~.export.export_graph`): written only when every
    feature map agrees within ``tolerance``."""
    return export_graph(
        backbone_graph(backbone, input_hw),
        path,
        fmt,
        tolerance=tolerance,
        threads=threads,
        overwrite=overwrite,
    )
