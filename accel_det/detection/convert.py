"""torchvision-layout VGG-16 state dicts (plain, or accelerated by the solver) → Detectron2
checkpoints.

Key mapping: ``features.*`` → ``backbone.features.*`` (same indices; pool5 has no weights),
``classifier.0`` → ``roi_heads.box_head.fc6``, ``classifier.3`` → ``roi_heads.box_head.fc7``;
``classifier.6`` (the 1000-way ImageNet layer) is dropped.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import torch

from ..errors import AccelDetError
from ..models.fit import first_mismatch, keys_under, shapes_of, unexpected_key
from ..models.vgg import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    first_conv_filters,
    layer_of_key,
    vgg16_features,
)
from ..nn.network import apply_plan

HEAD_KEYS = {"classifier.0": "roi_heads.box_head.fc6", "classifier.3": "roi_heads.box_head.fc7"}
# Detectron2 feeds 0-255 pixels; torchvision's VGG-16 expects RGB in [0, 1] normalised by ImageNet
# mean/std.
PIXEL_MEAN = [round(255.0 * m, 3) for m in IMAGENET_MEAN]  # [123.675, 116.28, 103.53]
PIXEL_STD = [round(255.0 * s, 3) for s in IMAGENET_STD]  # [58.395, 57.12, 57.375]
INPUT_FORMAT = "RGB"


def infer_width(state: Mapping[str, torch.Tensor]) -> float:
    """VGG width multiplier from conv1_1's filter count (64 at width 1)."""
    filters = first_conv_filters(state)
    if filters is None:
        raise AccelDetError(
            "the state dict has no features.0.weight: not a torchvision-layout VGG-16"
        )
    return filters / 64.0


def check_features_fit(
    state: Mapping[str, torch.Tensor], plan: Optional[Mapping], width: float
) -> None:
    """Raise :class:`AccelDetError`, naming the layer and shapes, unless the ``features.*`` tensors
    of ``state`` are those of VGG-16 at ``width`` with the structures of ``plan``."""
    features = vgg16_features(width)
    if plan is not None:
        try:
            features = apply_plan(features, plan)
        except AccelDetError as error:
            raise AccelDetError(
                f"the plan does not fit VGG-16 at width {width:g}: {error}"
            ) from None
    expected = {f"features.{k}": v for k, v in shapes_of(features.state_dict()).items()}
    given = {k: v for k, v in shapes_of(state).items() if k.startswith("features.")}
    mismatch = first_mismatch(expected, given)
    if mismatch is not None:
        index = mismatch.key.split(".")[1]
        layer = layer_of_key(features, mismatch.key[len("features.") :]) or mismatch.key
        found = (
            ", ".join(f"{k} {list(v)}" for k, v in keys_under(given, f"features.{index}.").items())
            or "nothing"
        )
        structure = (plan or {}).get("layers", {}).get(layer, {}).get("structure", "original")
        raise AccelDetError(
            f"{layer}: the {'plan' if plan is not None else 'plain VGG-16'} ({structure}) expects "
            f"{mismatch.key} {list(mismatch.expected)}, the weights have {found}"
        )
    extra = unexpected_key(expected, given)
    if extra is not None:
        raise AccelDetError(
            f"the weights have {extra}, which VGG-16{' with this plan' if plan else ''} does not"
        )


def vgg16_to_detectron2(
    state: Mapping[str, torch.Tensor], plan: Optional[Mapping] = None
) -> Tuple[Dict[str, torch.Tensor], dict]:
    """The Detectron2 state dict (backbone + fc6/fc7) of a torchvision-layout VGG-16 state dict,
    checked against ``plan`` when given; and facts about it (width, fc_dim, head)."""
    width = infer_width(state)
    check_features_fit(state, plan, width)
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("features."):
            out["backbone." + key] = value.detach().clone()
    head = all(any(k.startswith(f"{old}.") for k in state) for old in HEAD_KEYS)
    fc_dim = None
    if head:
        for key, value in state.items():
            for old, new in HEAD_KEYS.items():
                if key.startswith(f"{old}."):  # classifier.0.weight, or classifier.0.reduce.weight
                    out[new + key[len(old) :]] = value.detach().clone()
        fc_dim, fc6_in = linear_shape(state, "classifier.0")
        conv5_channels = max(
            v.shape[0] for k, v in state.items() if k.startswith("features.") and v.dim() == 4
        )
        if fc6_in != conv5_channels * 7 * 7:
            raise AccelDetError(
                f"classifier.0 takes {fc6_in} inputs, not conv5_3's "
                f"{conv5_channels}×7×7: cannot become fc6 after 7×7 RoI pooling"
            )
    info = {"width": width, "fc_dim": fc_dim, "box_head": head, "accelerated": plan is not None}
    return out, info


def linear_shape(state: Mapping[str, torch.Tensor], prefix: str) -> Tuple[int, int]:
    """(outputs, inputs) of the fc layer ``prefix`` of a state dict, plain or factorized."""
    if f"{prefix}.weight" in state:
        return tuple(state[f"{prefix}.weight"].shape)
    return int(state[f"{prefix}.expand.weight"].shape[0]), int(
        state[f"{prefix}.reduce.weight"].shape[1]
    )


def config_lines(info: Mapping, plan_path: Optional[str] = None) -> str:
    """The Detectron2 config overrides that go with a converted checkpoint."""
    opts = [
        f"INPUT.FORMAT {INPUT_FORMAT}",
        f'MODEL.PIXEL_MEAN "{PIXEL_MEAN}"',
        f'MODEL.PIXEL_STD "{PIXEL_STD}"',
        f"MODEL.VGG.WIDTH {info['width']:g}",
    ]
    if info.get("fc_dim"):
        opts.append(f"MODEL.ROI_BOX_HEAD.FC_DIM {info['fc_dim']}")
    if plan_path:
        opts += ["MODEL.BACKBONE.NAME build_accel_vgg16_backbone", f"MODEL.ACCEL.PLAN {plan_path}"]
    return " ".join(opts)
