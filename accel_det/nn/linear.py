"""Factorized fully connected layers: an fc layer is a channel decomposition with k = 1 (the
"channel" structure of a conv, over RoIs or images instead of positions).

``FactorizedLinear`` is ``reduce`` (c → d', no bias) then ``expand`` (d' → d, with bias): the
d × c weight W becomes P Qᵀ W, at d'(c + d) multiply-adds per input instead of d·c. The bias of
the ``reduce`` step would only be added to ``expand``'s, so it is folded there.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

from torch import nn

from .factorized import CHANNEL, ORIGINAL

LINEAR_STRUCTURES = (ORIGINAL, CHANNEL)


class FactorizedLinear(nn.Sequential):
    """An ``nn.Linear`` replaced by two thinner ones; behaves like the layer it replaces."""

    def __init__(self, in_features: int, out_features: int, rank: int):
        super().__init__(
            OrderedDict(
                reduce=nn.Linear(in_features, rank, bias=False),
                expand=nn.Linear(rank, out_features),
            )
        )
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.structure = CHANNEL

    def extra_repr(self) -> str:
        return f"structure={self.structure}, rank={self.rank}"


def is_linear_entry(entry: Mapping) -> bool:
    """Whether a plan entry describes an fc layer (it has ``in_features``)."""
    return "in_features" in entry


def build_linear(linear: nn.Linear, entry: Mapping) -> nn.Module:
    """The module a plan entry asks for, shaped like ``linear``; an ``original`` entry returns
    ``linear`` itself. New factorized weights are freshly initialised: load them."""
    structure = entry.get("structure", ORIGINAL)
    if structure == ORIGINAL:
        return linear
    if structure != CHANNEL:
        raise ValueError(
            f"an fc layer's structure must be one of {LINEAR_STRUCTURES}, got {structure!r}"
        )
    return FactorizedLinear(linear.in_features, linear.out_features, entry["rank"])
