"""VGG-16's fc6 / fc7 as a Detectron2 box head (Fast R-CNN's head on 7×7 RoI-pooled conv5_3),
plain or factorized as the plan ``MODEL.ACCEL.PLAN`` says."""

from __future__ import annotations

from typing import Mapping, Optional

import fvcore.nn.weight_init as weight_init
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import ROI_BOX_HEAD_REGISTRY
from torch import nn

from ..errors import AccelDetError
from ..nn.chain import apply_plan_to_linear
from ..plan import linear_entries
from .backbone import load_plan
from .registry import register_once

FC_LAYERS = ("fc6", "fc7")


class VGG16BoxHead(nn.Sequential):
    """flatten → fc6 → ReLU → dropout → fc7 → ReLU → dropout, as VGG-16's classifier without fc8.

    With ``MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION: 7`` and ``FC_DIM: 4096`` the weights of
    torchvision's ``classifier.0`` / ``classifier.3`` load into ``fc6`` / ``fc7``
    (``tools/convert_vgg16.py``). Without weights, fc6 and fc7 are Xavier-initialised like
    Detectron2's ``FastRCNNConvFCHead``. A ``plan`` with ``fc6`` / ``fc7`` entries of structure
    ``channel`` makes them :class:`~accel_det.nn.FactorizedLinear` (keys ``fc6.reduce.weight``,
    ``fc6.expand.weight``, ``fc6.expand.bias``); load their weights from the plan's checkpoint.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        fc_dim: int,
        dropout: float = 0.5,
        plan: Optional[Mapping] = None,
    ):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MODEL.ROI_BOX_HEAD.DROPOUT must be in [0, 1), got {dropout}")
        in_features = input_shape.channels * (input_shape.height or 1) * (input_shape.width or 1)
        self.add_module("flatten", nn.Flatten())
        self.add_module("fc6", nn.Linear(in_features, fc_dim))
        self.add_module("relu6", nn.ReLU(inplace=True))
        self.add_module("drop6", nn.Dropout(dropout))
        self.add_module("fc7", nn.Linear(fc_dim, fc_dim))
        self.add_module("relu7", nn.ReLU(inplace=True))
        self.add_module("drop7", nn.Dropout(dropout))
        for layer in (self.fc6, self.fc7):
            weight_init.c2_xavier_fill(layer)
        self.plan = dict(plan) if plan is not None else None
        if plan is not None:
            unknown = sorted(set(linear_entries(plan)) - set(FC_LAYERS))
            if unknown:
                raise AccelDetError(
                    f"the plan (MODEL.ACCEL.PLAN) has fc entries the box head does not have: "
                    f"{', '.join(unknown)} (VGG16BoxHead has {', '.join(FC_LAYERS)})"
                )
            for name in FC_LAYERS:
                try:
                    setattr(self, name, apply_plan_to_linear(getattr(self, name), name, plan))
                except AccelDetError as error:
                    raise AccelDetError(
                        "the plan (MODEL.ACCEL.PLAN) does not fit the box head "
                        f"(MODEL.ROI_BOX_HEAD.FC_DIM {fc_dim}): {error}"
                    ) from None
        self._output_size = fc_dim

    @classmethod
    def from_config(cls, cfg, input_shape):
        plan = load_plan(cfg.MODEL.ACCEL.PLAN) if cfg.MODEL.ACCEL.PLAN else None
        return {
            "input_shape": input_shape,
            "fc_dim": cfg.MODEL.ROI_BOX_HEAD.FC_DIM,
            "dropout": cfg.MODEL.ROI_BOX_HEAD.DROPOUT,
            "plan": plan,
        }

    @property
    def output_shape(self):
        return ShapeSpec(channels=self._output_size)


def register() -> None:
    """Add :class:`VGG16BoxHead` to ``ROI_BOX_HEAD_REGISTRY`` (idempotent)."""
    register_once(ROI_BOX_HEAD_REGISTRY, VGG16BoxHead)
