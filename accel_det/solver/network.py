"""The conv / ReLU / max-pool chains the solver works on, in torchvision's VGG ``features`` layout."""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Dict, List, Mapping, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import AccelDetError
from ..layers import ORIGINAL, FactorizedConv2d, build_layer
from .complexity import ConvSpec

_ALLOWED = (nn.Conv2d, nn.ReLU, nn.MaxPool2d, FactorizedConv2d)


def conv_names(features: nn.Sequential) -> "OrderedDict[str, int]":
    """Map VGG-style names (conv1_1 … conv5_3) to indices in ``features``; a max-pool starts a new block."""
    check_features(features)
    names: "OrderedDict[str, int]" = OrderedDict()
    block, within = 1, 0
    for index, module in enumerate(features):
        if isinstance(module, (nn.Conv2d, FactorizedConv2d)):
            within += 1
            names[f"conv{block}_{within}"] = index
        elif isinstance(module, nn.MaxPool2d) and within:
            block, within = block + 1, 0
    return names


def check_features(features: nn.Module) -> None:
    """Raise :class:`AccelDetError` unless ``features`` is a Conv2d / ReLU / MaxPool2d ``nn.Sequential``."""
    if not isinstance(features, nn.Sequential):
        raise AccelDetError(f"features must be an nn.Sequential of Conv2d/ReLU/MaxPool2d, got {type(features).__name__}")
    for index, module in enumerate(features):
        if not isinstance(module, _ALLOWED):
            raise AccelDetError(
                f"features[{index}] is {type(module).__name__}; only Conv2d, ReLU and MaxPool2d chains are supported"
            )
        if isinstance(module, nn.Conv2d) and (module.groups != 1 or module.dilation != (1, 1)):
            raise AccelDetError(f"features[{index}]: grouped or dilated convolutions are not supported")
        if isinstance(module, nn.Conv2d) and isinstance(module.padding, str):
            raise AccelDetError(f"features[{index}]: padding={module.padding!r} is not supported; use integers")
    if not any(isinstance(m, (nn.Conv2d, FactorizedConv2d)) for m in features):
        raise AccelDetError("features contains no Conv2d layer")


def conv_specs(features: nn.Sequential, input_hw: Tuple[int, int]) -> List[ConvSpec]:
    """Shapes of every conv in ``features`` for an input of ``input_hw``, found by tracing on the meta device."""
    names = conv_names(features)
    index_to_name = {index: name for name, index in names.items()}
    specs = []
    x = torch.empty(1, _first_conv(features).in_channels, *input_hw, device="meta")
    for index, module in enumerate(features):
        in_hw = (int(x.shape[2]), int(x.shape[3]))
        x = _meta_forward(module, x)
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


def _first_conv(features: nn.Sequential) -> nn.Module:
    return next(m for m in features if isinstance(m, (nn.Conv2d, FactorizedConv2d)))


def _meta_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Output shape of ``module`` without touching its weights."""
    if isinstance(module, nn.MaxPool2d):
        return module(x)  # no parameters: runs on the meta device as it is
    if isinstance(module, (nn.Conv2d, FactorizedConv2d)):
        weight = torch.empty(module.out_channels, module.in_channels, *module.kernel_size, device="meta")
        return F.conv2d(x, weight, stride=module.stride, padding=module.padding)
    return x


def apply_plan(features: nn.Sequential, plan: Mapping) -> nn.Sequential:
    """A copy of ``features`` with each conv replaced by the structure its plan entry names.

    Only the architecture comes from the plan; new factorized layers are freshly initialised, so
    load their weights from a state dict. Raises :class:`AccelDetError` when the plan does not fit.
    """
    names = conv_names(features)
    layers: Mapping[str, Mapping] = plan.get("layers", {})
    unknown = sorted(set(layers) - set(names))
    if unknown:
        raise AccelDetError(f"plan names layers the network does not have: {', '.join(unknown)}")
    new = copy.deepcopy(features)
    for name, index in names.items():
        entry = layers.get(name, {"structure": ORIGINAL})
        conv = new[index]
        _check_entry_fits(name, conv, entry)
        new[index] = build_layer(conv, entry)
    return new


def _check_entry_fits(name: str, conv: nn.Module, entry: Mapping) -> None:
    for key in ("in_channels", "out_channels"):
        if key in entry and entry[key] != getattr(conv, key):
            raise AccelDetError(f"plan layer {name}: {key}={entry[key]} but the network has {getattr(conv, key)}")
    for key in ("rank", "spatial_rank"):
        value = entry.get(key)
        if value is not None and not (isinstance(value, int) and value >= 1):
            raise AccelDetError(f"plan layer {name}: {key} must be a positive integer, got {value!r}")


def named_convs(features: nn.Sequential) -> Dict[str, nn.Module]:
    """Conv modules of ``features`` by VGG-style name."""
    return {name: features[index] for name, index in conv_names(features).items()}
