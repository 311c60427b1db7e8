"""The paper's solver, pure PyTorch: sampled responses → low-rank factorized conv layers.

Nothing here imports detectron2, so it serves any CNN written as a Conv2d / ReLU / MaxPool2d chain.
"""

from .channel import (
    DEFAULT_SCHEDULE,
    LowRankResponse,
    nonlinear_reconstruction,
    pca_reconstruction,
    reduced_rank_regression,
    relu_z_step,
)
from .complexity import ConvSpec, conv_macs, structure_macs, uniform_rank, whole_model_speedup
from .network import apply_plan, conv_names, conv_specs
from .pipeline import METHODS, CompressionResult, compress
from .ranks import select_ranks, spatial_ranks, uniform_ranks
from .spatial import filter_reconstruction

__all__ = [
    "DEFAULT_SCHEDULE",
    "METHODS",
    "CompressionResult",
    "ConvSpec",
    "LowRankResponse",
    "apply_plan",
    "compress",
    "conv_macs",
    "conv_names",
    "conv_specs",
    "filter_reconstruction",
    "nonlinear_reconstruction",
    "pca_reconstruction",
    "reduced_rank_regression",
    "relu_z_step",
    "select_ranks",
    "spatial_ranks",
    "structure_macs",
    "uniform_rank",
    "uniform_ranks",
    "whole_model_speedup",
]
