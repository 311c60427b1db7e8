"""The conv / ReLU / max-pool chains of torchvision's VGG ``features`` layout: VGG layer names
(``conv1_1`` …), the check that a module is such a chain, and the checks of a plan entry against
the layer it replaces (:func:`accel_det.nn.network.apply_plan` applies plans to any network)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

from torch import nn

from ..errors import AccelDetError
from .factorized import FactorizedConv2d, is_rank, rank_limits
from .linear import build_linear

CHAIN_MODULES = (nn.Conv2d, nn.ReLU, nn.MaxPool2d, FactorizedConv2d)


def conv_names(features: nn.Sequential) -> "OrderedDict[str, int]":
    """Map VGG-style names (conv1_1 … conv5_3) to indices in ``features``; a max-pool starts a
    new block."""
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
    """Raise :class:`AccelDetError` unless ``features`` is a Conv2d / ReLU / MaxPool2d
    ``nn.Sequential``."""
    if not isinstance(features, nn.Sequential):
        raise AccelDetError(
            "features must be an nn.Sequential of Conv2d/ReLU/MaxPool2d, "
            f"got {type(features).__name__}"
        )
    for index, module in enumerate(features):
        if not isinstance(module, CHAIN_MODULES):
            raise AccelDetError(
                f"features[{index}] is {type(module).__name__}; only Conv2d, ReLU and MaxPool2d "
                "chains are supported"
            )
        if isinstance(module, nn.Conv2d) and (module.groups != 1 or module.dilation != (1, 1)):
            raise AccelDetError(
                f"features[{index}]: grouped or dilated convolutions are not supported"
            )
        if isinstance(module, nn.Conv2d) and isinstance(module.padding, str):
            raise AccelDetError(
                f"features[{index}]: padding={module.padding!r} is not supported; use integers"
            )
    if not any(isinstance(m, (nn.Conv2d, FactorizedConv2d)) for m in features):
        raise AccelDetError("features contains no Conv2d layer")


def check_entry_fits(name: str, module: nn.Module, entry: Mapping) -> None:
    """Raise unless the plan entry's channel counts are ``module``'s and its ranks are positive
    integers no larger than the layer's full ranks (:func:`rank_limits`): checked before anything
    is built, so a hostile rank allocates nothing."""
    for key in ("in_channels", "out_channels"):
        if key in entry and entry[key] != getattr(module, key):
            raise AccelDetError(
                f"plan layer {name}: {key}={entry[key]} but the network has {getattr(module, key)}"
            )
    if isinstance(module, nn.Linear):
        limits = rank_limits(module.in_features, module.out_features)
    else:
        limits = rank_limits(module.in_channels, module.out_channels, module.kernel_size)
    for key, limit in zip(("rank", "spatial_rank"), limits):
        value = entry.get(key)
        if value is not None and not is_rank(value):
            raise AccelDetError(
                f"plan layer {name}: {key} must be a positive integer, got {value!r}"
            )
        if value is not None and value > limit:
            raise AccelDetError(
                f"plan layer {name}: {key}={value} is larger than the layer's full rank {limit}"
            )


def apply_plan_to_linear(linear: nn.Linear, name: str, plan: Mapping) -> nn.Module:
    """``linear`` (or its factorized replacement) as the plan entry ``name`` asks; unchanged when
    the plan has no such entry. Raises :class:`AccelDetError` when the entry does not fit."""
    entry = plan.get("layers", {}).get(name)
    if entry is None:
        return linear
    for key in ("in_features", "out_features"):
        if key in entry and entry[key] != getattr(linear, key):
            raise AccelDetError(
                f"plan layer {name}: {key}={entry[key]} but the network has {getattr(linear, key)}"
            )
    check_entry_fits(name, linear, {k: v for k, v in entry.items() if k == "rank"})
    return build_linear(linear, entry)
