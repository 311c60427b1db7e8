"""VGG-16 backbones for Detectron2: plain, and accelerated from a solver plan.

Both output the ReLU of conv5_3 at stride 16 (pool5 dropped, as in Fast R-CNN, whose RoI pooling
replaces it). The conv layers sit in ``self.features``, an ``nn.Sequential`` in torchvision's
``features`` layout (indices 0-29), so Detectron2 checkpoint keys read
``backbone.features.<index>.weight`` and ``tools/convert_vgg16.py`` only adds the prefix.

``MODEL.VGG.NORM: "BN"`` adds a batch norm after each conv (torchvision's ``vgg16_bn`` idea), for
training from scratch; the norms sit in ``self.norms`` (keys ``backbone.norms.conv1_1.*``) and
:meth:`VGG16Backbone.fold_norms` folds them into the convs, which gives back a plain VGG-16
(the network the solver and the accelerated backbone work on).
"""

from __future__ import annotations

import os
from typing import Mapping, Optional

import torch
from detectron2.layers import ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn

from ..errors import AccelDetError
from ..models.vgg import init_vgg_weights, layer_of_key, vgg16_features
from ..nn.chain import conv_names
from ..nn.fold import fold_batch_norm
from ..nn.network import apply_plan
from ..plan import Plan
from .registry import register_once


class VGG16Backbone(Backbone):
    """VGG-16 conv1_1 … conv5_3 (plain or factorized layers) as a Detectron2 backbone."""

    def __init__(
        self,
        features: nn.Sequential,
        *,
        freeze_at: int = 0,
        out_feature: str = "conv5_3",
        plan: Optional[Mapping] = None,
        norm: str = "",
    ):
        """``features``: torchvision-layout VGG conv layers; a trailing max-pool (pool5) is dropped.
        ``freeze_at``: number of conv blocks whose parameters are frozen (2: conv1_x, conv2_x).
        ``plan``: the solver plan the features were built from, kept for reference.
        ``norm``: "" or a Detectron2 norm name ("BN", "SyncBN", "FrozenBN") after each conv."""
        super().__init__()
        if len(features) and isinstance(features[-1], nn.MaxPool2d):
            features = features[:-1]
        self.features = features
        self.plan = dict(plan) if plan is not None else None
        self.conv_index = conv_names(features)  # conv1_1 -> index in features
        self.norm = norm or ""
        if self.norm:
            self.norms = nn.ModuleDict(
                {
                    name: get_norm(self.norm, features[i].out_channels)
                    for name, i in self.conv_index.items()
                }
            )
            self._norm_at = {i: name for name, i in self.conv_index.items()}
        pools = sum(isinstance(m, nn.MaxPool2d) for m in features)
        last = self.features[self.conv_index[next(reversed(self.conv_index))]]
        self._out_features = [out_feature]
        self._out_feature_channels = {out_feature: int(last.out_channels)}
        self._out_feature_strides = {out_feature: 2**pools}
        self.freeze(freeze_at)

    def forward(self, x):
        if not self.norm:
            return {self._out_features[0]: self.features(x)}
        for index, module in enumerate(self.features):
            x = module(x)
            if index in self._norm_at:
                x = self.norms[self._norm_at[index]](x)
        return {self._out_features[0]: x}

    @torch.no_grad()
    def fold_norms(self) -> "VGG16Backbone":
        """Fold each norm (in eval mode: ``γ (x − μ) / √(σ² + ε) + β``) into the conv before it,
        in place, and drop the norms: the output is unchanged in eval mode, and the backbone is a
        plain VGG-16 again (state-dict keys ``backbone.features.*`` only)."""
        if not self.norm:
            return self
        for name, index in self.conv_index.items():
            norm = self.norms[name]
            if not hasattr(norm, "running_var"):
                raise AccelDetError(
                    f"MODEL.VGG.NORM {self.norm!r} cannot be "
                    f"folded into the convs (only batch norms can)"
                )
            fold_batch_norm(self.features[index], norm)
        del self.norms
        self.norm = ""
        self._norm_at = {}
        return self

    def freeze(self, freeze_at: int = 0) -> "VGG16Backbone":
        """Freeze the parameters of conv blocks 1 … ``freeze_at`` (conv{b}_*, b ≤ freeze_at)."""
        blocks = {int(name[4:].split("_")[0]) for name in self.conv_index}
        if not 0 <= freeze_at <= max(blocks):
            raise AccelDetError(
                f"MODEL.BACKBONE.FREEZE_AT must be between 0 "
                f"and {max(blocks)} for VGG-16, got {freeze_at}"
            )
        self.freeze_at = freeze_at
        for name, index in self.conv_index.items():
            frozen = int(name[4:].split("_")[0]) <= freeze_at
            modules = [self.features[index]] + ([self.norms[name]] if self.norm else [])
            for module in modules:
                for parameter in module.parameters():
                    parameter.requires_grad = not frozen
        return self

    def layer_of_key(self, key: str) -> Optional[str]:
        """The conv name (``conv3_1``) a state-dict key ``features.<index>.…`` belongs to."""
        if not key.startswith("features."):
            return None
        return layer_of_key(self.features, key[len("features.") :])

    def output_shape(self):
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }


def load_plan(path: str, builder: str = "build_accel_vgg16_backbone") -> Plan:
    """A solver plan JSON (``MODEL.ACCEL.PLAN``), checked for its format and layer entries;
    ``builder`` names what needs it when ``path`` is empty."""
    if not path:
        raise AccelDetError(f"MODEL.ACCEL.PLAN is empty: {builder} needs the solver's plan JSON")
    return Plan.read(os.path.expanduser(path), "plan (MODEL.ACCEL.PLAN)")


def _check_input(cfg, input_shape: ShapeSpec) -> None:
    if input_shape.channels != 3:
        raise AccelDetError(
            f"VGG-16 takes 3-channel images, the config "
            f"gives {input_shape.channels} (MODEL.PIXEL_MEAN)"
        )
    if cfg.MODEL.VGG.WIDTH <= 0:
        raise AccelDetError(f"MODEL.VGG.WIDTH must be positive, got {cfg.MODEL.VGG.WIDTH}")


def init_convs(features: nn.Module) -> nn.Module:
    """torchvision's VGG init (He et al., fan_out; zero bias) for every conv. PyTorch's default
    Conv2d init shrinks the signal layer after layer: a VGG-16 trained from scratch with it does
    not learn. Pretrained weights (MODEL.WEIGHTS) replace these."""
    init_vgg_weights(features)
    return features


def build_vgg16_backbone(cfg, input_shape: ShapeSpec) -> VGG16Backbone:
    """VGG-16 conv layers at ``MODEL.VGG.WIDTH``, frozen up to ``MODEL.BACKBONE.FREEZE_AT``
    blocks."""
    _check_input(cfg, input_shape)
    features = init_convs(vgg16_features(cfg.MODEL.VGG.WIDTH))
    return VGG16Backbone(
        features,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
        out_feature=cfg.MODEL.VGG.OUT_FEATURE,
        norm=cfg.MODEL.VGG.NORM,
    )


def build_accel_vgg16_backbone(cfg, input_shape: ShapeSpec) -> VGG16Backbone:
    """VGG-16 whose conv layers take the structures of the plan ``MODEL.ACCEL.PLAN``.

    Only the architecture comes from the plan; the weights come from ``MODEL.WEIGHTS``. A plan
    whose every layer is ``original`` gives exactly :func:`build_vgg16_backbone`'s network.
    """
    _check_input(cfg, input_shape)
    path = cfg.MODEL.ACCEL.PLAN
    plan = load_plan(path)
    try:
        features = apply_plan(vgg16_features(cfg.MODEL.VGG.WIDTH), plan)
    except AccelDetError as error:
        raise AccelDetError(
            f"plan {path} does not fit VGG-16 at MODEL.VGG.WIDTH={cfg.MODEL.VGG.WIDTH}: {error}"
        ) from None
    return VGG16Backbone(
        init_convs(features),
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
        out_feature=cfg.MODEL.VGG.OUT_FEATURE,
        plan=plan,
        norm=cfg.MODEL.VGG.NORM,
    )


def register() -> None:
    """Add both builders to ``BACKBONE_REGISTRY`` (idempotent)."""
    for function in (build_vgg16_backbone, build_accel_vgg16_backbone):
        register_once(BACKBONE_REGISTRY, function)
