"""Measured latency of each layer's factorized structure over a grid of ranks, cached per device,
for rank selection under a latency budget instead of a multiply-add budget (beyond the paper).

The paper selects ranks by multiply-adds (eq. 14) and reports the "actual speedup" separately
(Table 8, Fig. 7): on real hardware a k×k conv with d' filters followed by a 1×1 conv does not cost
d'(k²c + d)H'W' in time, and the shortfall differs per layer (map size, channel counts, kernel
efficiency). Here each layer's original conv and its ``channel`` structure (k×k, c→d' then 1×1,
d'→d) are timed on the target device at a grid of ranks d' (warm-up, then the median of repeats,
all structures of a layer interleaved so that a noisy spell hits them alike). The costs between
grid points are interpolated linearly and made non-decreasing in the rank; the greedy of
:func:`accel_det.solver.ranks.select_ranks_by_table` then spends a latency budget,
``Σ original latency / r − Σ latency of the layers that stay original``.

Tables are cached as JSON, keyed by device name, torch version, thread count, batch size and input
size; inside a key, layers are keyed by their shape, so identical layers (conv4_2/conv4_3, conv5_x
of VGG-16) are measured once and a later run on the same machine measures nothing.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import AccelDetError
from ..nn.factorized import CHANNEL, FactorizedConv2d
from ..utils.io import atomic_write_json, load_json
from ..utils.timing import device_name, num_threads, time_modules
from .complexity import ConvSpec
from .network import conv_specs
from .ranks import monotone_costs

logger = logging.getLogger(__name__)

LATENCY_FORMAT = "accel-det-latency/1"


def cache_key(device, threads: int, batch: int, input_hw: Tuple[int, int]) -> str:
    """What a latency depends on besides the layer: device, torch version, threads, batch, input."""
    return (
        f"{device_name(device)} | torch {torch.__version__} | threads {threads} | batch {batch} | "
        f"input {input_hw[0]}x{input_hw[1]} | float32"
    )


def layer_signature(spec: ConvSpec) -> str:
    """The shape that decides a layer's latency (not its name: equal layers share a measurement)."""
    h, w = spec.in_hw or spec.out_hw
    return (
        f"c{spec.in_channels}-d{spec.out_channels}-k{spec.kernel_size[0]}x{spec.kernel_size[1]}"
        f"-s{spec.stride[0]}x{spec.stride[1]}-p{spec.padding[0]}x{spec.padding[1]}-in{h}x{w}"
    )


def rank_grid(out_channels: int, points: int = 12, multiple: int = 8) -> List[int]:
    """Ranks to time for a layer with d = ``out_channels`` filters: about ``points`` values from
    d/16 to d, rounded to multiples of ``multiple`` (so the GPU-friendly ranks are measured), with
    d."""
    d = int(out_channels)
    if d <= multiple:
        return (
            list(range(1, d + 1))
            if d <= points
            else sorted({max(1, round(d * i / points)) for i in range(1, points + 1)})
        )
    low = max(1.0, d / 16)
    ranks = {d}
    for i in range(points):
        value = low + (d - low) * i / max(1, points - 1)
        ranks.add(min(d, max(multiple, multiple * round(value / multiple))))
    return sorted(ranks)


@dataclass
class LatencyTable:
    """Per layer name: the original conv's latency and the ``channel`` structure's latency at a grid
    of ranks (seconds per batch). ``meta`` says where and how it was measured."""

    key: str
    layers: Dict[str, dict]
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"format": LATENCY_FORMAT, "key": self.key, "meta": self.meta, "layers": self.layers}

    @classmethod
    def from_dict(cls, data: Mapping) -> "LatencyTable":
        if data.get("format") != LATENCY_FORMAT:
            raise AccelDetError(
                f"not a latency table (format {data.get('format')!r}, expected {LATENCY_FORMAT})"
            )
        return cls(
            key=data["key"],
            layers={k: dict(v) for k, v in data["layers"].items()},
            meta=dict(data.get("meta", {})),
        )

    def original(self, name: str) -> float:
        return float(self._entry(name)["original"])

    def cost_table(self, name: str) -> List[float]:
        """Latency of layer ``name`` at ranks 1 … d: linear between measured ranks, flat below the
        smallest one, and non-decreasing (each rank costs at most what any larger rank costs)."""
        entry = self._entry(name)
        d = int(entry["out_channels"])
        return monotone_costs(
            [_interpolate(entry["ranks"], entry["seconds"], r) for r in range(1, d + 1)]
        )

    def latency(self, name: str, rank: Optional[int]) -> float:
        """Latency of layer ``name`` at ``rank`` (None: the original conv)."""
        return self.original(name) if rank is None else self.cost_table(name)[rank - 1]

    def budget(self, specs: Sequence[ConvSpec], speedup: float, skip) -> float:
        """Seconds the approximated layers may take so that all conv layers run ``speedup``×
        faster."""
        skip = set(skip)
        total = sum(self.original(s.name) for s in specs)
        fixed = sum(self.original(s.name) for s in specs if s.name in skip)
        return total / speedup - fixed

    def predicted(self, specs: Sequence[ConvSpec], ranks: Mapping[str, int]) -> float:
        """Sum of the per-layer latencies of a plan's ranks (layers missing from ``ranks``:
        original)."""
        return sum(self.latency(s.name, ranks.get(s.name)) for s in specs)

    def check_fits(self, specs: Sequence[ConvSpec]) -> None:
        """Raise unless every layer of ``specs`` is in the table with the same number of filters."""
        for spec in specs:
            entry = self.layers.get(spec.name)
            if entry is None:
                raise AccelDetError(
                    f"the latency table has no layer {spec.name}: measure it for this network"
                )
            if int(entry["out_channels"]) != spec.out_channels:
                raise AccelDetError(
                    f"the latency table's {spec.name} has {entry['out_channels']} filters, the "
                    f"network {spec.out_channels}: measure it for this network, or use "
                    f"LatencyTable.rescaled() for a narrower copy"
                )

    def rescaled(self, specs: Sequence[ConvSpec]) -> "LatencyTable":
        """The table for a network with the same layer names but other filter counts (e.g. a
        ``width``-scaled VGG-16): a rank d' of a layer with d filters is priced as the rank
        d'·D/d of the measured layer with D filters. A proxy, recorded in ``meta``."""
        layers = {}
        for spec in specs:
            entry = self._entry(spec.name)
            scale = spec.out_channels / float(entry["out_channels"])
            ranks = [r * scale for r in entry["ranks"]]
            layers[spec.name] = {**entry, "out_channels": spec.out_channels, "ranks": ranks}
        meta = {**self.meta, "rescaled_from": self.key}
        return LatencyTable(key=f"{self.key} | rescaled", layers=layers, meta=meta)

    def _entry(self, name: str) -> dict:
        try:
            return self.layers[name]
        except KeyError:
            raise AccelDetError(f"the latency table has no layer {name}") from None


def _interpolate(xs: Sequence[float], ys: Sequence[float], x: float) -> float:
    if x <= xs[0]:
        return float(ys[0])
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x <= x1:
            return float(y0 + (y1 - y0) * (x - x0) / (x1 - x0))
    # Beyond the last measured rank (only for rescaled tables): extend the last segment's slope.
    x0, x1, y0, y1 = xs[-2], xs[-1], ys[-2], ys[-1]
    return float(y1 + (y1 - y0) * (x - x1) / (x1 - x0)) if len(xs) > 1 else float(ys[-1])


def _layer_modules(spec: ConvSpec, grid: Sequence[int], device) -> Dict[str, nn.Module]:
    """The original conv and its ``channel`` structure at each grid rank, randomly initialised."""
    conv = nn.Conv2d(
        spec.in_channels, spec.out_channels, spec.kernel_size, spec.stride, spec.padding
    )
    modules = {"original": conv}
    for rank in grid:
        modules[str(rank)] = FactorizedConv2d(
            spec.in_channels,
            spec.out_channels,
            spec.kernel_size,
            spec.stride,
            spec.padding,
            structure=CHANNEL,
            rank=rank,
        )
    return {name: module.to(device).eval() for name, module in modules.items()}


def measure_latency_table(
    features: nn.Sequential,
    input_hw: Tuple[int, int],
    *,
    device="cpu",
    batch: int = 1,
    threads: Optional[int] = None,
    points: int = 12,
    multiple: int = 8,
    warmup: int = 2,
    repeats: int = 7,
    cache: Optional[str] = None,
    skip: Sequence[str] = (),
    progress: bool = False,
) -> LatencyTable:
    """Time every conv of ``features`` (original, and ``channel`` at :func:`rank_grid` ranks) for a
    ``batch`` of ``input_hw`` images on ``device`` with ``threads`` CPU threads (None: as set).

    Layers in ``skip`` are timed in their original form only (they count in the budget). With
    ``cache`` (a JSON file), layers already measured under the same key and grid are reused and
    only the missing ones are timed; the file is then rewritten atomically.
    """
    device = torch.device(device)
    specs = conv_specs(features, tuple(input_hw))
    with num_threads(threads) as used:
        key = cache_key(device, used, batch, input_hw)
        stored = _read_cache(cache) if cache else {}
        shapes: Dict[str, dict] = stored.setdefault(key, {})
        measured = 0
        layers = {}
        for spec in specs:
            signature = layer_signature(spec)
            grid = [] if spec.name in skip else rank_grid(spec.out_channels, points, multiple)
            previous = entry = shapes.get(signature)
            if entry is None or any(r not in entry["ranks"] for r in grid):
                entry = _measure_layer(spec, grid, device, batch, warmup, repeats)
                if (
                    previous is not None and previous["ranks"]
                ):  # keep earlier points, add the new ones
                    merged = dict(zip(previous["ranks"], previous["seconds"]))
                    merged.update(zip(entry["ranks"], entry["seconds"]))
                    entry["ranks"], entry["seconds"] = (
                        sorted(merged),
                        [merged[r] for r in sorted(merged)],
                    )
                shapes[signature] = entry
                measured += 1
                if progress:
                    logger.info(
                        "latency %s (%s): original %.2f ms, %d ranks",
                        spec.name,
                        signature,
                        entry["original"] * 1e3,
                        len(entry["ranks"]),
                    )
            layers[spec.name] = {"signature": signature, "out_channels": spec.out_channels, **entry}
    meta = {
        "device": device_name(device),
        "torch": torch.__version__,
        "threads": used,
        "batch": batch,
        "input_hw": list(input_hw),
        "warmup": warmup,
        "repeats": repeats,
        "measured_layers": measured,
    }
    if cache and measured:
        atomic_write_json({"format": LATENCY_FORMAT + "-cache", "entries": stored}, cache)
    return LatencyTable(key=key, layers=layers, meta=meta)


def _measure_layer(
    spec: ConvSpec, grid: Sequence[int], device, batch: int, warmup: int, repeats: int
) -> dict:
    in_hw = spec.in_hw or spec.out_hw
    x = torch.randn(batch, spec.in_channels, *in_hw, device=device)
    times = time_modules(_layer_modules(spec, grid, device), x, warmup, repeats)
    return {
        "original": times["original"],
        "ranks": list(grid),
        "seconds": [times[str(r)] for r in grid],
    }


def _read_cache(path: str) -> Dict[str, dict]:
    if not os.path.exists(path):
        return {}
    data = load_json(path, "latency cache")
    if data.get("format") != LATENCY_FORMAT + "-cache":
        raise AccelDetError(f"{path} is not a latency cache (format {data.get('format')!r})")
    return data.get("entries", {})


def load_latency_table(path: str) -> LatencyTable:
    """A :class:`LatencyTable` saved with ``atomic_write_json(table.to_dict(), path)``."""
    return LatencyTable.from_dict(load_json(path, "latency table"))
