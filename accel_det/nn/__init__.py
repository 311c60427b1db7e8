"""Factorized layers (plain ``nn.Conv2d`` chains), applying a plan to a conv chain, batch-norm
folding. Pure PyTorch."""

from .chain import apply_plan, check_features, conv_names
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

__all__ = [
    "CHANNEL",
    "ORIGINAL",
    "SPATIAL",
    "SPATIAL_CHANNEL",
    "STRUCTURES",
    "FactorizedConv2d",
    "apply_plan",
    "build_layer",
    "check_features",
    "conv_names",
    "fold_batch_norm",
    "fold_batch_norms",
]
