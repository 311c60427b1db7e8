"""Weights of the factorized layers from a solution (eq. 3, Fig. 1; §3.5 for the spatial part)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .channel import LowRankResponse


def set_low_rank_weights(
    reduce: nn.Conv2d, expand: nn.Conv2d, source: nn.Conv2d, solution: LowRankResponse
) -> None:
    """W' = Qᵀ W with bias Qᵀ b₀ into ``reduce``, and the 1×1 layer P with bias b into ``expand``,
    so that expand(reduce(x)) = M (W x + b₀) + b (eq. 3)."""
    q = solution.Q.double()
    weight = torch.einsum("dr,dchw->rchw", q, source.weight.double())
    bias = q.T @ source.bias.double() if source.bias is not None else None
    set_weights(reduce, weight, bias)
    set_weights(expand, solution.P.double()[:, :, None, None], solution.b.double())


def set_folded_weights(target: nn.Conv2d, source: nn.Conv2d, solution: LowRankResponse) -> None:
    """A full-rank M folded into ``source``: weights M W and bias M b₀ + b into ``target``, so one
    conv computes M (W x + b₀) + b at the cost of the layer itself (a d × d 1×1 layer would only
    add cost)."""
    m = solution.matrix().double()
    weight = torch.einsum("od,dchw->ochw", m, source.weight.double())
    bias = solution.b.double()
    if source.bias is not None:
        bias = m @ source.bias.double() + bias
    set_weights(target, weight, bias)


def set_weights(conv: nn.Conv2d, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> None:
    """Copy ``weight`` and ``bias`` (zeros when None) into ``conv``."""
    with torch.no_grad():
        conv.weight.copy_(weight.to(conv.weight))
        if conv.bias is not None:
            conv.bias.copy_(bias.to(conv.bias) if bias is not None else torch.zeros_like(conv.bias))


def unpadded_conv(weight: torch.Tensor, bias: Optional[torch.Tensor]) -> nn.Conv2d:
    """A stride-1, unpadded conv holding ``weight`` and ``bias``, to evaluate responses on
    patches."""
    conv = nn.Conv2d(
        weight.shape[1], weight.shape[0], tuple(weight.shape[2:]), bias=bias is not None
    )
    set_weights(conv.to(weight.device), weight, bias)
    return conv
