"""Shapes of the conv layers of a chain for a given input size, as the solver sees them."""

from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..nn.chain import conv_names, first_conv
from ..nn.factorized import FactorizedConv2d
from .complexity import ConvSpec


def conv_specs(features: nn.Sequential, input_hw: Tuple[int, int]) -> List[ConvSpec]:
    """Shapes of every conv in ``features`` for an input of ``input_hw``, found by tracing on the
    meta device."""
    names = conv_names(features)
    index_to_name = {index: name for name, index in names.items()}
    specs = []
    x = torch.empty(1, first_conv(features).in_channels, *input_hw, device="meta")
    for index, module in enumerate(features):
        in_hw = (int(x.shape[2]), int(x.shape[3]))
        x = meta_forward(module, x)
        if index in index_to_name:
            relu = index + 1 < len(features) and isinstance(features[index + 1], nn.ReLU)
            specs.append(
                ConvSpec(
                    name=index_to_name[index],
                    in_channels=module.in_channels,
                    out_channels=module.out_channels,
                    kernel_size=tuple(module.kernel_size),
                    stride=tuple(module.stride),
                    padding=tuple(module.padding),
                    out_hw=(int(x.shape[2]), int(x.shape[3])),
                    relu=relu,
                    in_hw=in_hw,
                )
            )
    return specs


def meta_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Output shape of ``module`` without touching its weights."""
    if isinstance(module, nn.MaxPool2d):
        return module(x)  # no parameters: runs on the meta device as it is
    if isinstance(module, (nn.Conv2d, FactorizedConv2d)):
        weight = torch.empty(
            module.out_channels, module.in_channels, *module.kernel_size, device="meta"
        )
        return F.conv2d(x, weight, stride=module.stride, padding=module.padding)
    return x
