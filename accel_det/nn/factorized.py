"""Factorized conv layers: plain ``nn.Conv2d`` chains, so any runtime (eager, TorchScript, ONNX)
runs them.

Children are named after their role, which makes state-dict keys readable:

* ``channel``          ``reduce`` (k×k, c→d') → ``expand`` (1×1, d'→d)            (paper Fig. 1)
* ``spatial``          ``vertical`` (k×1, c→d'') → ``horizontal`` (1×k, d''→d)    (Jaderberg et al.)
* ``spatial_channel``  ``vertical`` → ``horizontal`` (1×k, d''→d') → ``expand``   ("3d", §3.5)

The ``vertical`` layer has no bias: the ``horizontal`` layer zero-pads its input, and a bias in
``vertical`` would make border columns differ from the k×k layer it replaces.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Mapping, Optional, Tuple

from torch import nn

# Structures a conv layer can take in a plan.
ORIGINAL = "original"  # k×k, c→d
CHANNEL = "channel"  # k×k, c→d' then 1×1, d'→d
SPATIAL = "spatial"  # k×1, c→d'' then 1×k, d''→d  (Jaderberg et al., scheme 2)
SPATIAL_CHANNEL = "spatial_channel"  # k×1, c→d'' then 1×k, d''→d' then 1×1, d'→d  ("3d")
STRUCTURES = (ORIGINAL, CHANNEL, SPATIAL, SPATIAL_CHANNEL)


class FactorizedConv2d(nn.Sequential):
    """A k×k conv replaced by a chain of thinner convs; behaves like the ``nn.Conv2d`` it
    replaces."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        *,
        structure: str,
        rank: Optional[int] = None,
        spatial_rank: Optional[int] = None,
    ):
        kh, kw = _pair(kernel_size)
        sh, sw = _pair(stride)
        ph, pw = _pair(padding)
        convs = OrderedDict()
        if structure == CHANNEL:
            convs["reduce"] = nn.Conv2d(in_channels, rank, (kh, kw), (sh, sw), (ph, pw))
            convs["expand"] = nn.Conv2d(rank, out_channels, 1)
        elif structure in (SPATIAL, SPATIAL_CHANNEL):
            horizontal_out = out_channels if structure == SPATIAL else rank
            convs["vertical"] = nn.Conv2d(
                in_channels, spatial_rank, (kh, 1), (sh, 1), (ph, 0), bias=False
            )
            convs["horizontal"] = nn.Conv2d(spatial_rank, horizontal_out, (1, kw), (1, sw), (0, pw))
            if structure == SPATIAL_CHANNEL:
                convs["expand"] = nn.Conv2d(rank, out_channels, 1)
        else:
            raise ValueError(
                f"FactorizedConv2d structure must be one of {STRUCTURES[1:]}, got {structure!r}"
            )
        super().__init__(convs)
        self.structure = structure
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = (kh, kw)
        self.stride = (sh, sw)
        self.padding = (ph, pw)
        self.rank = rank
        self.spatial_rank = spatial_rank

    def extra_repr(self) -> str:
        return f"structure={self.structure}, rank={self.rank}, spatial_rank={self.spatial_rank}"


def rank_limits(in_channels: int, out_channels: int, kernel_size=1) -> Tuple[int, int]:
    """The largest d' and d'' a plan may give a layer (conv or fc) of this shape: d' ≤ d (at
    d' = d the 1×1 layer is the layer itself), d'' ≤ min(kh·c, kw·d) (the rank of the
    (kh·c)×(kw·d) kernel matrix the spatial decomposition factors, §3.5)."""
    kh, kw = _pair(kernel_size)
    return out_channels, min(kh * in_channels, kw * out_channels)


def is_rank(value) -> bool:
    """A rank as plans write it: a positive integer (``true`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def build_layer(conv: nn.Conv2d, entry: Mapping) -> nn.Module:
    """The module a plan entry asks for, shaped like ``conv``; an ``original`` entry returns
    ``conv`` itself.

    Weights of a new factorized module are freshly initialised: load them from a state dict.
    """
    structure = entry.get("structure", ORIGINAL)
    if structure == ORIGINAL:
        return conv
    return FactorizedConv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        structure=structure,
        rank=entry.get("rank"),
        spatial_rank=entry.get("spatial_rank"),
    )
