"""Ranks for a whole-model speedup: the greedy rank selection of eqs. (13)–(14), uniform ranks, and
the spatial ranks d'' of the 3d combination and of the Jaderberg baseline.

Budgets are in multiply-adds: the approximated layers may cost ``Σ C_l / r − Σ (skipped C_l)``,
so that the whole model, untouched layers included, is r times cheaper.
"""

from __future__ import annotations

import heapq
import math
from typing import Dict, Iterable, Mapping, Optional, Sequence

import torch

from ..errors import AccelDetError
from .complexity import ConvSpec, channel_macs, conv_macs, spatial_macs, uniform_rank

RANK_COSTS = ("with_1x1", "paper")


def budget_macs(specs: Sequence[ConvSpec], speedup: float, skip: Iterable[str]) -> float:
    """Multiply-adds the approximated layers may spend so that all conv layers run ``speedup``× faster."""
    skip = set(skip)
    total = sum(conv_macs(s) for s in specs)
    fixed = sum(conv_macs(s) for s in specs if s.name in skip)
    return total / speedup - fixed


def cost_per_rank(spec: ConvSpec, rank_cost: str = "with_1x1") -> float:
    """ΔC of one eigenvalue: (k²c + d)·H'W' counting the 1×1 layer, or the paper-literal C_l/d_l."""
    if rank_cost == "with_1x1":
        return float(channel_macs(spec, 1))
    if rank_cost == "paper":
        return float(conv_macs(spec)) / spec.out_channels
    raise AccelDetError(f"unknown rank cost {rank_cost!r}; expected one of {RANK_COSTS}")


def select_ranks(
    eigenvalues: Mapping[str, torch.Tensor],
    costs: Mapping[str, float],
    budget: float,
    min_rank: int = 1,
) -> Dict[str, int]:
    """Eqs. (13)–(14), greedy: starting from full ranks, drop the eigenvalue σ_{l,d'_l} with the
    smallest (ΔE/E)/ΔC, ΔE/E = σ_{l,d'_l} / Σ_{a≤d'_l} σ_{l,a}, until Σ_l d'_l·ΔC_l ≤ ``budget``.

    ``eigenvalues`` are sorted, largest first, per layer; ``costs`` the ΔC of one rank per layer.
    """
    order = list(eigenvalues)
    values = {name: eigenvalues[name].double().clamp_min(0).tolist() for name in order}
    energy = {name: [0.0] + list(_cumsum(values[name])) for name in order}
    ranks = {name: len(values[name]) for name in order}
    spent = sum(ranks[name] * costs[name] for name in order)

    def candidate(name: str):
        rank = ranks[name]
        kept = energy[name][rank]
        loss = values[name][rank - 1] / kept if kept > 0 else 0.0
        return (loss / costs[name], order.index(name), name)

    heap = [candidate(name) for name in order if ranks[name] > min_rank]
    heapq.heapify(heap)
    while spent > budget:
        if not heap:
            raise AccelDetError("the speedup is impossible: every layer is already at its minimum rank")
        _, _, name = heapq.heappop(heap)
        ranks[name] -= 1
        spent -= costs[name]
        if ranks[name] > min_rank:
            heapq.heappush(heap, candidate(name))
    # The last step may overshoot by one layer's ΔC: give back the most valuable removed
    # eigenvalues that still fit, which matters in small networks where one rank is a large step.
    while True:
        fitting = [
            (_gain(values[name], energy[name], ranks[name]) / costs[name], -order.index(name), name)
            for name in order
            if ranks[name] < len(values[name]) and spent + costs[name] <= budget
        ]
        if not fitting:
            return ranks
        _, _, name = max(fitting)
        ranks[name] += 1
        spent += costs[name]


def _gain(values, energy, rank) -> float:
    """ΔE/E of putting eigenvalue ``rank + 1`` back."""
    kept = energy[rank + 1]
    return values[rank] / kept if kept > 0 else 0.0


def _cumsum(values):
    total = 0.0
    for v in values:
        total += v
        yield total


def product_energy(eigenvalues: Mapping[str, torch.Tensor], ranks: Mapping[str, int]) -> float:
    """Eq. (13): E = Π_l Σ_{a≤d'_l} σ_{l,a} (as a fraction of each layer's total energy)."""
    result = 1.0
    for name, rank in ranks.items():
        values = eigenvalues[name].double().clamp_min(0)
        total = float(values.sum())
        result *= float(values[:rank].sum()) / total if total > 0 else 1.0
    return result


def uniform_ranks(specs: Sequence[ConvSpec], speedup: float) -> Dict[str, int]:
    """The same per-layer speedup everywhere: d' = floor(d·k²c / (r·(k²c + d)))."""
    return {s.name: uniform_rank(s, speedup) for s in specs}


def spatial_ranks(
    specs: Sequence[ConvSpec],
    budget: float,
    ranks: Optional[Mapping[str, int]] = None,
) -> Dict[str, int]:
    """d'' per layer so that the layers fit ``budget`` multiply-adds, each with the same spatial ratio.

    The k×k part of every layer (d' filters when ``ranks`` are given, else d) is made s times
    cheaper, d'' = floor(d̃·k²c / (s·(kh·c + kw·d̃))); the 1×1 layers of ``ranks`` cost
    d·d'·H'W' as they are. The smallest s that meets the budget is found by bisection, which is how
    the paper's "√r each" becomes an exact whole-model r once the 1×1 cost is counted.
    """
    ranks = dict(ranks or {})

    def layer_ranks(ratio: float) -> Dict[str, int]:
        result = {}
        for spec in specs:
            width = ranks.get(spec.name, spec.out_channels)
            kh, kw = spec.kernel_size
            full = min(spec.in_channels * kh, width * kw)
            dense = width * spec.fan_in * spec.positions
            result[spec.name] = max(1, min(full, math.floor(dense / (ratio * spatial_macs(spec, 1, width)) + 1e-9)))
        return result

    def cost(ratio: float) -> float:
        total = 0.0
        for spec, (name, d2) in zip(specs, layer_ranks(ratio).items()):
            width = ranks.get(name, spec.out_channels)
            total += spatial_macs(spec, d2, width)
            if name in ranks:
                total += width * spec.out_channels * spec.positions
        return total

    low, high = 1e-3, 1e9
    if cost(high) > budget:
        raise AccelDetError("the speedup is impossible even with spatial rank 1 in every layer")
    for _ in range(200):
        middle = math.sqrt(low * high)
        if cost(middle) <= budget:
            high = middle
        else:
            low = middle
        if high / low < 1 + 1e-12:
            break
    return layer_ranks(high)
