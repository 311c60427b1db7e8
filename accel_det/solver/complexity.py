"""Multiply-add counts of a conv layer and of its factorized structures (§3.1, §3.4,
§3.5).

Every count is per image: multiply-adds per output position times the output map size H'W'.
The 1×1 layer of a channel decomposition is always counted, which is what reproduces the
whole-model speedups of the paper's Tables 2 and 6.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping, Optional, Tuple

from ..nn.factorized import CHANNEL, ORIGINAL, SPATIAL, SPATIAL_CHANNEL, STRUCTURES


@dataclass(frozen=True)
class ConvSpec:
    """Shape of one conv layer as the solver sees it; ``out_hw`` is the output map size; ``relu``:
    a ReLU follows it (eq. 5), else it is solved without r (a residual add, the output)."""

    name: str
    in_channels: int
    out_channels: int
    kernel_size: Tuple[int, int]
    stride: Tuple[int, int]
    padding: Tuple[int, int]
    out_hw: Tuple[int, int]
    relu: bool = True
    in_hw: Optional[Tuple[int, int]] = None  # needed only for the k×1 layer of a strided conv
    module: Optional[str] = None  # qualified module name (``name`` is a VGG alias of a chain)
    after: Optional[str] = None  # what its output feeds: relu, add, output or linear

    @property
    def positions(self) -> int:
        return self.out_hw[0] * self.out_hw[1]

    @property
    def fan_in(self) -> int:
        """k²c, the length of one filter."""
        return self.kernel_size[0] * self.kernel_size[1] * self.in_channels

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping) -> "ConvSpec":
        fields = ("kernel_size", "stride", "padding", "out_hw", "in_hw")
        return cls(
            **{
                k: tuple(v) if k in fields and v is not None else v
                for k, v in data.items()
                if k in cls.__annotations__
            }
        )


@dataclass(frozen=True)
class LinearSpec:
    """Shape of one fc layer as the solver sees it: d = ``out_features`` outputs of
    c = ``in_features`` inputs, applied to ``rois`` inputs per image (the RoIs of a detector, 1
    for a classifier). To the cost model it is a 1×1 conv over ``rois`` positions, so the
    functions below count it as they count a conv."""

    name: str
    in_features: int
    out_features: int
    rois: int = 1
    relu: bool = True

    @property
    def in_channels(self) -> int:
        return self.in_features

    @property
    def out_channels(self) -> int:
        return self.out_features

    @property
    def fan_in(self) -> int:
        return self.in_features

    @property
    def positions(self) -> int:
        return self.rois

    def to_dict(self) -> dict:
        return asdict(self)


def conv_macs(spec: ConvSpec) -> int:
    """Multiply-adds of the original layer: d·k²c·H'W' (§3.1)."""
    return spec.out_channels * spec.fan_in * spec.positions


def channel_macs(spec: ConvSpec, rank: int) -> int:
    """k×k (d' filters) then 1×1 (d filters): d'·(k²c + d)·H'W' (§3.1, counted as in the tables)."""
    return rank * (spec.fan_in + spec.out_channels) * spec.positions


def spatial_macs(spec: ConvSpec, spatial_rank: int, out_channels: Optional[int] = None) -> int:
    """k×1 (d'' filters) then 1×k (``out_channels`` filters, d by default): d''·(kh·c + kw·d)·H'W'.

    The k×1 layer takes the vertical stride only, so with a horizontal stride it runs on every
    input column, H'·W_in positions (W_in = W' in VGG, where all strides are 1).
    """
    kh, kw = spec.kernel_size
    d = spec.out_channels if out_channels is None else out_channels
    columns = spec.out_hw[1] if spec.stride[1] == 1 or spec.in_hw is None else spec.in_hw[1]
    vertical = spatial_rank * kh * spec.in_channels * spec.out_hw[0] * columns
    return vertical + spatial_rank * kw * d * spec.positions


def spatial_channel_macs(spec: ConvSpec, rank: int, spatial_rank: int) -> int:
    """k×1 (d'') → 1×k (d') → 1×1 (d): [d''·k·c + d'·k·d'' + d·d']·H'W' (§3.5)."""
    return (
        spatial_macs(spec, spatial_rank, out_channels=rank)
        + rank * spec.out_channels * spec.positions
    )


def structure_macs(
    spec: ConvSpec, structure: str, rank: Optional[int] = None, spatial_rank: Optional[int] = None
) -> int:
    """Multiply-adds of ``spec`` in the given structure (one of :data:`STRUCTURES`)."""
    if structure == ORIGINAL:
        return conv_macs(spec)
    if structure == CHANNEL:
        return channel_macs(spec, rank)
    if structure == SPATIAL:
        return spatial_macs(spec, spatial_rank)
    if structure == SPATIAL_CHANNEL:
        return spatial_channel_macs(spec, rank, spatial_rank)
    raise ValueError(f"unknown layer structure {structure!r}; expected one of {STRUCTURES}")


def uniform_rank(spec: ConvSpec, speedup: float) -> int:
    """Per-layer rank without rank selection: floor(d·k²c / (r·(k²c + d))) (Table 6 "no" rows)."""
    rank = math.floor(
        conv_macs(spec) / (speedup * (spec.fan_in + spec.out_channels) * spec.positions) + 1e-9
    )
    return max(1, min(spec.out_channels, rank))


def speedup_ratio(original_macs: float, approximated_macs: float) -> float:
    """Theoretical speedup: original over approximated multiply-adds."""
    return float(original_macs) / float(approximated_macs)


def whole_model_speedup(specs: Iterable[ConvSpec], layers: Mapping[str, Mapping]) -> float:
    """Theoretical speedup over all conv layers; ``layers`` maps a name to its plan entry.

    A layer missing from ``layers`` counts as original.
    """
    original = approximated = 0
    for spec in specs:
        entry = layers.get(spec.name, {"structure": ORIGINAL})
        original += conv_macs(spec)
        approximated += structure_macs(
            spec, entry["structure"], entry.get("rank"), entry.get("spatial_rank")
        )
    return speedup_ratio(original, approximated)
