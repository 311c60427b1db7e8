"""A Detectron2 Fast R-CNN detector (precomputed proposals) as one exportable graph.

``DetectorGraph``: ``image`` (3×H×W float32, raw 0-255 pixels in ``INPUT.FORMAT`` order, already
resized as Detectron2's test-time ``ResizeShortestEdge`` does) and ``proposals`` (N×4 float32,
XYXY in that image's pixels) → ``scores`` (N×(K+1) class probabilities, background last) and
``boxes`` (N×4K, the per-class regressed boxes, not clipped). Normalization, the backbone, RoI
pooling, the box head and the box predictor are in the graph; score threshold, per-class NMS and
the rescale to the original image stay in Python (:mod:`accel_det.deploy.evaluate`), with
Detectron2's own functions.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Optional, Tuple

import torch
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from torch import nn
from torch.nn import functional as F

from ..detection.backbone import load_plan
from ..detection.checkpoint import (
    REMOTE_PREFIXES,
    load_detector_weights,
    weights_file,
    weights_not_found,
)
from ..errors import AccelDetError
from ..utils.io import json_safe
from .export import Graph, dynamic_dim
from .record import plan_summary, weights_summary

# the config keys an exported detector's record keeps
RECORDED_KEYS = (
    "INPUT.FORMAT",
    "INPUT.MIN_SIZE_TEST",
    "INPUT.MAX_SIZE_TEST",
    "MODEL.ROI_HEADS.NUM_CLASSES",
    "MODEL.PIXEL_MEAN",
    "MODEL.PIXEL_STD",
    "MODEL.BACKBONE.NAME",
    "MODEL.VGG.WIDTH",
    "MODEL.ACCEL.PLAN",
    "MODEL.WEIGHTS",
    "MODEL.ROI_BOX_HEAD.NAME",
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE",
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION",
    "DATASETS.TEST",
    "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    "MODEL.ROI_HEADS.NMS_THRESH_TEST",
    "TEST.DETECTIONS_PER_IMAGE",
)
# the keys an evaluation must share with the export: the images the graph is given and its
# classes (thresholds, NMS and top-k run in Python, after the graph: they may differ)
EVALUATED_KEYS = (
    "INPUT.FORMAT",
    "INPUT.MIN_SIZE_TEST",
    "INPUT.MAX_SIZE_TEST",
    "MODEL.ROI_HEADS.NUM_CLASSES",
)
INPUTS = ("image", "proposals")
OUTPUTS = ("scores", "boxes")
MIN_SIZE = 32
logger = logging.getLogger(__name__)


class DetectorGraph(nn.Module):
    """The inference path of a ``GeneralizedRCNN`` with precomputed proposals, for one image,
    made of the model's own modules (any box head of standard layers exports)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        check_exportable(model)
        heads = model.roi_heads
        self.backbone = model.backbone
        self.in_feature = heads.box_in_features[0]
        self.pooler = heads.box_pooler.level_poolers[0]
        self.box_head = heads.box_head
        self.box_predictor = heads.box_predictor
        self.register_buffer("pixel_mean", model.pixel_mean.detach().clone(), False)
        self.register_buffer("pixel_std", model.pixel_std.detach().clone(), False)

    def forward(self, image: torch.Tensor, proposals: torch.Tensor):
        x = ((image - self.pixel_mean) / self.pixel_std).unsqueeze(0)
        feature = self.backbone(x)[self.in_feature]
        rois = torch.cat([torch.zeros_like(proposals[:, :1]), proposals], dim=1)
        logits, deltas = self.box_predictor(self.box_head(self.pooler(feature, rois)))
        if getattr(self.box_predictor, "use_sigmoid_ce", False):
            scores = logits.sigmoid()
        else:
            scores = F.softmax(logits, dim=-1)
        boxes = self.box_predictor.box2box_transform.apply_deltas(deltas, proposals)
        return scores, boxes


def check_exportable(model: nn.Module) -> None:
    """Raise :class:`AccelDetError` unless ``model`` is a Fast R-CNN that
    :class:`DetectorGraph` covers."""
    heads = getattr(model, "roi_heads", None)
    if getattr(model, "proposal_generator", None) is not None:
        raise AccelDetError(
            "only detectors with precomputed proposals export (MODEL.LOAD_PROPOSALS True, "
            "MODEL.PROPOSAL_GENERATOR.NAME PrecomputedProposals), not an RPN"
        )
    if heads is None or not hasattr(heads, "box_pooler") or not hasattr(heads, "box_predictor"):
        raise AccelDetError("the model has no StandardROIHeads-style box head to export")
    if len(heads.box_in_features) != 1 or len(heads.box_pooler.level_poolers) != 1:
        raise AccelDetError(
            f"only single-level RoI pooling exports (ROI_HEADS.IN_FEATURES "
            f"{list(heads.box_in_features)})"
        )
    if model.backbone.size_divisibility > 1 or model.backbone.padding_constraints:
        raise AccelDetError("backbones that pad their input (size_divisibility) do not export")
    if getattr(heads, "mask_on", False) or getattr(heads, "keypoint_on", False):
        raise AccelDetError("only boxes export: turn MODEL.MASK_ON and MODEL.KEYPOINT_ON off")


def build_detector(cfg) -> nn.Module:
    """The eval-mode Detectron2 model of ``cfg`` with ``MODEL.WEIGHTS`` loaded (checked as
    tools/train_net.py checks them); randomly initialised, with a warning, when it is empty."""
    if cfg.MODEL.BACKBONE.NAME == "build_accel_vgg16_backbone":
        load_plan(cfg.MODEL.ACCEL.PLAN)
    weights = cfg.MODEL.WEIGHTS
    remote = weights.startswith(REMOTE_PREFIXES)
    if weights and not remote and not os.path.isfile(weights_file(weights)):
        raise weights_not_found(weights)
    model = build_model(cfg)
    if weights:
        load_detector_weights(model, weights, complete=True)
    else:
        logger.warning("MODEL.WEIGHTS is empty: the detector has random weights")
    return model.eval()


def resized_size(cfg, portrait: bool = False) -> Tuple[int, int]:
    """A 4:3 image's size after the test-time resize of ``cfg`` (shorter side
    ``INPUT.MIN_SIZE_TEST``, longer side at most ``INPUT.MAX_SIZE_TEST``)."""
    short = int(cfg.INPUT.MIN_SIZE_TEST)
    long = min(round(short * 4 / 3), int(cfg.INPUT.MAX_SIZE_TEST) or 1 << 30)
    size = (max(short, MIN_SIZE), max(long, MIN_SIZE))
    return size[::-1] if portrait else size


def sample_inputs(
    height: int, width: int, count: int, generator: torch.Generator
) -> Tuple[torch.Tensor, torch.Tensor]:
    """A random 0-255 image and ``count`` random boxes in it, at least 4 pixels wide and high, some
    reaching past its border (as proposals may after rounding)."""
    image = torch.rand(3, height, width, generator=generator) * 255
    scale = torch.tensor([width, height], dtype=torch.float32)
    corner = torch.rand(count, 2, generator=generator) * scale * 0.9
    size = torch.rand(count, 2, generator=generator) * scale * 0.5 + 4
    return image, torch.cat([corner, corner + size], dim=1)


def detector_graph(cfg, model: nn.Module = None, proposals: int = 300, seed: int = 0) -> Graph:
    """``cfg``'s detector (built by :func:`build_detector` unless ``model`` is given) as a
    :class:`Graph` with dynamic image size and number of proposals, checked on a landscape
    image with ``proposals`` boxes and on a portrait image with one box."""
    model = build_detector(cfg) if model is None else model.eval()
    generator = torch.Generator().manual_seed(seed)
    samples = [
        sample_inputs(*resized_size(cfg), proposals, generator),
        sample_inputs(*resized_size(cfg, portrait=True), 1, generator),
    ]
    dims = (
        {1: dynamic_dim("height", MIN_SIZE), 2: dynamic_dim("width", MIN_SIZE)},
        {0: dynamic_dim("proposals", 1, 1 << 20)},
    )
    return Graph(
        module=DetectorGraph(model).eval(),
        samples=samples,
        input_names=list(INPUTS),
        output_names=list(OUTPUTS),
        dynamic_shapes=dims,
        description=f"Fast R-CNN ({cfg.MODEL.BACKBONE.NAME}, {cfg.MODEL.ROI_BOX_HEAD.NAME})",
        provenance=detector_provenance(cfg),
    )


def config_value(cfg, key: str):
    """The value of a dotted config key, as JSON has it (tuples as lists)."""
    return json_safe(functools.reduce(getattr, key.split("."), cfg))


def test_classes(cfg) -> Optional[list]:
    """The class names of the config's first test set (its metadata), when it has them."""
    if not cfg.DATASETS.TEST:
        return None
    names = MetadataCatalog.get(cfg.DATASETS.TEST[0]).get("thing_classes")
    return list(names) if names else None


def detector_provenance(cfg) -> dict:
    """What an exported detector expects and was made from (:mod:`.record`): the image input
    (pixel format, test-time resize), the normalization in the graph, the classes, the plan, the
    weights and the config keys of :data:`RECORDED_KEYS`."""
    plan_path = cfg.MODEL.ACCEL.PLAN
    plan = load_plan(plan_path) if plan_path else None
    weights = cfg.MODEL.WEIGHTS
    local = weights_file(weights) if weights and not weights.startswith(REMOTE_PREFIXES) else None
    return {
        "model": "detector",
        "image": {
            "format": cfg.INPUT.FORMAT,
            "pixels": "raw 0-255, float32, 3xHxW",
            "resize": "ResizeShortestEdge(INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST)",
            "min_size_test": cfg.INPUT.MIN_SIZE_TEST,
            "max_size_test": cfg.INPUT.MAX_SIZE_TEST,
        },
        "normalization": {
            "pixel_mean": list(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": list(cfg.MODEL.PIXEL_STD),
            "where": "in the graph",
        },
        "classes": {
            "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "names": test_classes(cfg),
            "dataset": cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None,
        },
        "plan": plan_summary(plan, plan_path),
        "weights": weights_summary(weights, local),  # the file Detectron2 loaded
        "config": {key: config_value(cfg, key) for key in RECORDED_KEYS},
    }
