"""Factorized layers (plain ``nn.Conv2d`` / ``nn.Linear`` chains), the conv layers of any network
and what follows each, batch-norm folding, applying a plan by module name. Pure PyTorch."""

from .chain import apply_plan_to_linear, check_features, conv_names
from .factorized import (
    CHANNEL,
    ORIGINAL,
    SPATIAL,
    SPATIAL_CHANNEL,
    STRUCTURES,
    FactorizedConv2d,
    build_layer,
)
from .fold import fold_batch_norm, fold_batch_norms, fold_into_convs
from .graph import ConvNode, LayerGraph, analyse
from .linear import LINEAR_STRUCTURES, FactorizedLinear, build_linear, is_linear_entry
from .network import apply_plan, chain_aliases, layer_names, prepare

__all__ = [
    "CHANNEL",
    "ConvNode",
    "LayerGraph",
    "ORIGINAL",
    "SPATIAL",
    "SPATIAL_CHANNEL",
    "STRUCTURES",
    "FactorizedConv2d",
    "FactorizedLinear",
    "LINEAR_STRUCTURES",
    "analyse",
    "apply_plan",
    "apply_plan_to_linear",
    "build_layer",
    "build_linear",
    "chain_aliases",
    "check_features",
    "conv_names",
    "fold_batch_norm",
    "fold_batch_norms",
    "fold_into_convs",
    "is_linear_entry",
    "layer_names",
    "prepare",
]
