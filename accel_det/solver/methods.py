"""The table of solver methods: one entry per method, everything the pipeline needs to know of it.

To add a method, add an entry here: whether it splits the original k×k layer spatially first
(Jaderberg et al., §3.5), how it solves the channel decomposition from the sampled responses
(or not at all), and whether its regressor is the response to the approximated input (eq. 12)
or to the original one (eq. 5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

from ..errors import AccelDetError
from ..nn.factorized import CHANNEL, ORIGINAL, SPATIAL, SPATIAL_CHANNEL
from .channel import (
    LowRankResponse,
    nonlinear_reconstruction,
    pca_reconstruction,
    truncated_svd_solution,
)


@dataclass
class ChannelProblem:
    """What a channel step solves for one layer: the original responses y (``target``, n × d)
    and the regressor ŷ (n × d: the responses to the approximated input for an asymmetric
    method, y itself for a symmetric one), the rank d', whether a ReLU follows, the λ schedule,
    and the weights of the layer that produces ŷ (for weight-based solutions)."""

    target: torch.Tensor
    regressor: torch.Tensor
    rank: int
    relu: bool
    schedule: Sequence[Tuple[float, int]]
    weight: torch.Tensor
    bias: Optional[torch.Tensor]


ChannelSolver = Callable[[ChannelProblem], LowRankResponse]


def linear_solution(problem: ChannelProblem) -> LowRankResponse:
    """Eq. (4): PCA of the original responses (the regressor is not used)."""
    return pca_reconstruction(problem.target, problem.rank)


def nonlinear_solution(problem: ChannelProblem) -> LowRankResponse:
    """Eqs. (5)–(11), with eq. (12)'s approximated regressor for an asymmetric method."""
    return nonlinear_reconstruction(
        problem.target,
        problem.regressor,
        problem.rank,
        relu=problem.relu,
        schedule=problem.schedule,
    )


def svd_solution(problem: ChannelProblem) -> LowRankResponse:
    """Girshick's truncated SVD of the layer's weights (Fast R-CNN): no data."""
    return truncated_svd_solution(problem.weight, problem.bias, problem.rank)


@dataclass(frozen=True)
class Method:
    """One solver method.

    ``spatial``: the k×k layer is first split into k×1 (d'') and 1×k filters by filter
    reconstruction; ``solve``: the channel step (None: the spatial split alone);
    ``asymmetric``: the channel step regresses the original responses on the responses to the
    approximated input, eq. (12) (else on the original ones, eq. 5)."""

    name: str
    spatial: bool
    solve: Optional[ChannelSolver]
    asymmetric: bool
    summary: str

    @property
    def channel(self) -> bool:
        """Whether the method has a channel decomposition (and so ranks d' to select)."""
        return self.solve is not None

    def channel_speedup(self, speedup: float) -> float:
        """The whole-model speedup the channel step is planned for: √r when a spatial step
        shares the work (§3.5), else r."""
        return math.sqrt(speedup) if self.spatial and self.channel else speedup

    def structure(self, spatial_ok: bool) -> str:
        """The structure a layer takes under this method (``spatial_ok``: k×k with k > 1)."""
        if self.spatial and spatial_ok:
            return SPATIAL_CHANNEL if self.channel else SPATIAL
        return CHANNEL if self.channel else ORIGINAL


METHODS: Dict[str, Method] = {
    m.name: m
    for m in (
        Method("linear", False, linear_solution, False, "PCA of the responses, eq. (4), symmetric"),
        Method(
            "nonlinear",
            False,
            nonlinear_solution,
            False,
            "ReLU-aware, eqs. (5)-(11): GSVD step and z-step, symmetric",
        ),
        Method(
            "asym",
            False,
            nonlinear_solution,
            True,
            "nonlinear with approximated inputs and original targets, eq. (12)",
        ),
        Method(
            "asym3d",
            True,
            nonlinear_solution,
            True,
            "k x 1 + 1 x k spatial split, then asym on the 1 x k layer (section 3.5)",
        ),
        Method("jaderberg", True, None, False, "the spatial split alone (filter reconstruction)"),
        Method(
            "svd",
            False,
            svd_solution,
            False,
            "truncated SVD of the weights (Girshick's Fast R-CNN fc6/fc7 baseline), no data",
        ),
    )
}


def get_method(name: str) -> Method:
    """The :class:`Method` called ``name``, or a clear error listing the methods."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise AccelDetError(
            f"unknown method {name!r}; expected one of {', '.join(METHODS)}"
        ) from None
