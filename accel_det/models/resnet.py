"""torchvision's ResNet-18/34/50/101: the builder (plain, or accelerated from a plan: batch norms
folded, conv layers factorized by qualified name), the architecture read off a state dict, and
torchvision's weights."""

from __future__ import annotations

import re
from typing import Dict, Mapping, Optional

import torch
from torch import nn
from torchvision import models

from ..errors import AccelDetError
from ..nn.network import apply_plan

# arch -> (torchvision builder, blocks per stage, bottleneck blocks)
RESNETS = {
    "resnet18": ("resnet18", (2, 2, 2, 2), False),
    "resnet34": ("resnet34", (3, 4, 6, 3), False),
    "resnet50": ("resnet50", (3, 4, 6, 3), True),
    "resnet101": ("resnet101", (3, 4, 23, 3), True),
}
WEIGHTS = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
    "resnet101": "ResNet101_Weights",
}
BLOCK_KEY = re.compile(r"^layer([1-4])\.(\d+)\.")


def resnet(arch: str, num_classes: int = 1000, plan: Optional[Mapping] = None) -> nn.Module:
    """torchvision's ``arch`` (randomly initialised, eval mode); with ``plan`` (the solver's) its
    batch norms folded and its conv layers in the plan's structures. Load weights next."""
    if arch not in RESNETS:
        raise AccelDetError(f"unknown ResNet {arch!r}; expected one of {', '.join(RESNETS)}")
    model = getattr(models, RESNETS[arch][0])(weights=None, num_classes=num_classes).eval()
    return apply_plan(model, plan) if plan is not None else model


def infer_resnet_config(state_dict: Mapping[str, torch.Tensor]) -> Optional[Dict[str, object]]:
    """``arch`` and ``num_classes`` of the (plain or accelerated) torchvision ResNet whose state
    dict this is, from its blocks per stage and whether they are bottlenecks; None for a state
    dict of another network."""
    blocks = [0, 0, 0, 0]
    bottleneck = False
    for key in state_dict:
        match = BLOCK_KEY.match(key)
        if match:
            stage, index = int(match.group(1)) - 1, int(match.group(2))
            blocks[stage] = max(blocks[stage], index + 1)
            bottleneck = bottleneck or key.startswith(f"{match.group(0)}conv3.")
    for arch, (_, layout, is_bottleneck) in RESNETS.items():
        if tuple(blocks) == layout and bottleneck == is_bottleneck:
            fc = state_dict.get("fc.weight")
            classes = int(fc.shape[0]) if isinstance(fc, torch.Tensor) and fc.dim() == 2 else 1000
            return {"arch": arch, "num_classes": classes}
    return None


def is_accelerated(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether a ResNet state dict is the solver's (batch norms folded away), which needs its
    plan to build."""
    return "bn1.running_mean" not in state_dict


def torchvision_weights_url(arch: str) -> str:
    """The URL of torchvision's ImageNet weights (``IMAGENET1K_V1``) of ``arch``."""
    return getattr(models, WEIGHTS[arch]).IMAGENET1K_V1.url
