"""The paper's solver, pure PyTorch: sampled responses → low-rank factorized conv layers.

Nothing here imports detectron2. It serves any CNN whose conv layers :func:`find_targets` can
follow: VGG-style Conv2d / ReLU / MaxPool2d chains, torchvision ResNets, module graphs with batch
norms and residual adds.
"""

from ..nn.chain import conv_names
from ..nn.network import apply_plan
from .channel import (
    DEFAULT_SCHEDULE,
    LowRankResponse,
    nonlinear_reconstruction,
    pca_reconstruction,
    reduced_rank_regression,
    relu_z_step,
)
from .complexity import ConvSpec, conv_macs, structure_macs, uniform_rank, whole_model_speedup
from .methods import METHODS, Method, get_method
from .network import conv_specs
from .options import SolverOptions, paper_schedule
from .pipeline import CompressionResult, compress
from .planning import make_plan, plan_from_structures
from .ranks import select_ranks, uniform_ranks
from .spatial import filter_reconstruction
from .splits import spatial_ranks
from .targets import Targets, find_targets

__all__ = [
    "DEFAULT_SCHEDULE",
    "METHODS",
    "CompressionResult",
    "ConvSpec",
    "LowRankResponse",
    "Method",
    "SolverOptions",
    "Targets",
    "apply_plan",
    "compress",
    "conv_macs",
    "conv_names",
    "conv_specs",
    "filter_reconstruction",
    "find_targets",
    "get_method",
    "make_plan",
    "nonlinear_reconstruction",
    "paper_schedule",
    "pca_reconstruction",
    "plan_from_structures",
    "reduced_rank_regression",
    "relu_z_step",
    "select_ranks",
    "spatial_ranks",
    "structure_macs",
    "uniform_rank",
    "uniform_ranks",
    "whole_model_speedup",
]
