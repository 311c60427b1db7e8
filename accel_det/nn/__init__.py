"""Factorized layers (plain ``nn.Conv2d`` / ``nn.Linear`` chains), applying a plan to a network,
batch-norm folding. Pure PyTorch."""

from .chain import apply_plan, apply_plan_to_linear, check_features, conv_names
from .factorized import (
    CHANNEL,
    ORIGINAL,
    SPATIAL,
    SPATIAL_CHANNEL,
    STRUCTURES,
    FactorizedConv2d,
    build_layer,
)
from .fold import fold_batch_norm, fold_batch_norms
from .linear import LINEAR_STRUCTURES, FactorizedLinear, build_linear, is_linear_entry

__all__ = [
    "CHANNEL",
    "ORIGINAL",
    "SPATIAL",
    "SPATIAL_CHANNEL",
    "STRUCTURES",
    "FactorizedConv2d",
    "FactorizedLinear",
    "LINEAR_STRUCTURES",
    "apply_plan",
    "apply_plan_to_linear",
    "build_layer",
    "build_linear",
    "check_features",
    "conv_names",
    "fold_batch_norm",
    "fold_batch_norms",
    "is_linear_entry",
]
