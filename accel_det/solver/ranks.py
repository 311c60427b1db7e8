"""Ranks for a whole-model speedup: the greedy rank selection of eqs. (13)–(14) and uniform ranks
(the spatial ranks d'' of the 3d combination and of the Jaderberg baseline: :mod:`.splits`).

Budgets are in multiply-adds: the approximated layers may cost ``Σ C_l / r − Σ (skipped C_l)``,
so that the whole model, untouched layers included, is r times cheaper.
"""

from __future__ import annotations

import heapq
import math
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from ..errors import AccelDetError
from .complexity import ConvSpec, channel_macs, conv_macs, uniform_rank

RANK_COSTS = ("with_1x1", "paper", "latency")


def budget_macs(specs: Sequence[ConvSpec], speedup: float, skip: Iterable[str]) -> float:
    """Multiply-adds the approximated layers may spend so that all conv layers run ``speedup``×
    faster."""
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
    if rank_cost == "latency":
        raise AccelDetError(
            "rank_cost='latency' takes its costs from a latency "
            "table (accel_det.solver.latency), not from multiply-adds"
        )
    raise AccelDetError(f"unknown rank cost {rank_cost!r}; expected one of {RANK_COSTS}")


def channel_cost_table(spec: ConvSpec) -> List[float]:
    """Multiply-adds of a layer at ranks 1 … d: d'(k²c + d)·H'W' below full rank, and at full rank
    d·k²c·H'W', since a full-rank M is folded into the layer (no 1×1 layer). Above the break-even
    rank d·k²c / (k²c + d) a factorized layer costs more than full rank, so rank selection goes
    from d straight below it."""
    table = [float(channel_macs(spec, rank)) for rank in range(1, spec.out_channels)]
    return table + [float(conv_macs(spec))]


def select_ranks(
    eigenvalues: Mapping[str, torch.Tensor],
    costs: Mapping[str, Union[float, Sequence[float], torch.Tensor]],
    budget: float,
    min_rank: int = 1,
    *,
    round_to: Multiple = 1,
) -> Dict[str, int]:
    """Eqs. (13)–(14), greedy: starting from full ranks, drop the eigenvalue σ_{l,d'_l} with the
    smallest (ΔE/E)/ΔC, ΔE/E = σ_{l,d'_l} / Σ_{a≤d'_l} σ_{l,a}, until Σ_l d'_l·ΔC_l ≤ ``budget``.

    ``eigenvalues`` are sorted, largest first, per layer; ``costs`` the ΔC of one rank per layer
    (a number), or, per layer, a cost table: the cost of the layer at ranks 1 … d (e.g. measured
    latencies, see :mod:`.latency`), then the greedy of :func:`select_ranks_by_table` is used.
    ``round_to`` > 1 keeps every rank a multiple of it (or the full rank d), also by that greedy;
    a mapping gives each layer its own multiple (:func:`layer_multiples`).
    """
    if multiple_of(round_to, None) > 1 or any(not _is_number(c) for c in costs.values()):
        return select_ranks_by_table(eigenvalues, costs, budget, min_rank, round_to=round_to)
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
            raise AccelDetError(
                "the speedup is impossible: every layer is already at its minimum rank"
            )
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
            return exchange_fill(eigenvalues, costs, ranks, budget, min_rank=min_rank)
        _, _, name = max(fitting)
        ranks[name] += 1
        spent += costs[name]


def select_ranks_by_table(
    eigenvalues: Mapping[str, torch.Tensor],
    tables: Mapping[str, Sequence[float]],
    budget: float,
    min_rank: int = 1,
    *,
    round_to: int = 1,
) -> Dict[str, int]:
    """The greedy of eqs. (13)–(14) with a cost per rank instead of a constant ΔC (beyond the
    paper).

    ``tables[l][i]`` is the cost of layer l at rank i + 1 (made non-decreasing here by taking, at
    each rank, the smallest cost of any rank at or above it). A layer may stop only at *allowed*
    ranks: multiples of ``round_to`` (and at least ``min_rank``) or its full rank d.

    Each step moves one layer from its rank d' down to an allowed, strictly cheaper rank d'',
    choosing over all layers and all such d'' the smallest (ΔE/E)/ΔC with
    ΔE/E = Σ_{d''<a≤d'} σ_{l,a} / Σ_{a≤d'} σ_{l,a} and ΔC = cost(d') − cost(d''), until
    Σ_l cost_l(d'_l) ≤ ``budget``. Looking past the next rank matters for measured costs: a
    latency often barely moves over some ranks and then drops (kernel tiles, cache sizes), and a
    one-eigenvalue-at-a-time greedy would never cross such a flat stretch. Then, as
    :func:`select_ranks` does, the most valuable steps up that still fit are given back. With a
    linear table (cost(d') = d'·ΔC) the best step is always one eigenvalue (the σ are sorted), so
    with ``round_to=1`` this is :func:`select_ranks` exactly.
    """
    check_multiple(round_to)
    order = list(eigenvalues)
    values = {name: eigenvalues[name].double().clamp_min(0).tolist() for name in order}
    energy = {name: np.concatenate([[0.0], np.cumsum(values[name])]) for name in order}
    cost = {}
    allowed = {}
    for name in order:
        d = len(values[name])
        cost[name] = np.array(
            [0.0] + monotone_costs(_as_table(tables[name], d, name))
        )  # cost[name][r]: at rank r
        step = multiple_of(round_to, name)
        allowed[name] = np.array(
            sorted({r for r in range(1, d + 1) if r % step == 0 and r >= min_rank} | {d})
        )
    ranks = {name: len(values[name]) for name in order}
    spent = sum(float(cost[name][ranks[name]]) for name in order)

    def exact_loss(name: str, high: int, low: int) -> float:
        kept = energy[name][high]
        return sum(values[name][low:high]) / kept if kept > 0 else 0.0

    def best_step_down(name: str):
        """(ratio, rank) of the best move down for layer ``name``, or None."""
        high = ranks[name]
        lows = allowed[name][allowed[name] < high]
        lows = lows[cost[name][lows] < cost[name][high]]
        if not len(lows):
            return None
        kept = energy[name][high]
        losses = (kept - energy[name][lows]) / kept if kept > 0 else np.zeros(len(lows))
        ratios = losses / (cost[name][high] - cost[name][lows])
        nearest = int(lows[-1])
        near = exact_loss(name, high, nearest) / (cost[name][high] - cost[name][nearest])
        best = int(np.argmin(ratios))
        if near <= ratios[best] * (1 + 1e-9):  # ties (and rounding) go to the smallest step
            return near, nearest
        return float(ratios[best]), int(lows[best])

    def candidate(name: str):
        step = best_step_down(name)
        return None if step is None else (step[0], order.index(name), name, step[1])

    heap = [c for c in (candidate(name) for name in order) if c is not None]
    heapq.heapify(heap)
    while spent > budget:
        if not heap:
            raise AccelDetError(
                "the speedup is impossible: every layer is already at its minimum rank"
                + (
                    " (ranks rounded to multiples: try a smaller multiple, --round-ranks 1)"
                    if multiple_of(round_to, None) > 1
                    else ""
                )
            )
        _, _, name, low = heapq.heappop(heap)
        spent -= float(cost[name][ranks[name]] - cost[name][low])
        ranks[name] = low
        following = candidate(name)
        if following is not None:
            heapq.heappush(heap, following)
    # Give back the most valuable steps up that still fit (as in select_ranks).
    while True:
        fitting = []
        for name in order:
            low = ranks[name]
            ups = allowed[name][allowed[name] > low]
            extras = cost[name][ups] - cost[name][low]
            ups, extras = ups[spent + extras <= budget], extras[spent + extras <= budget]
            if not len(ups):
                continue
            gains = (energy[name][ups] - energy[name][low]) / np.where(
                energy[name][ups] > 0, energy[name][ups], 1.0
            )
            with np.errstate(divide="ignore"):
                ratios = np.where(extras > 0, gains / np.where(extras > 0, extras, 1.0), np.inf)
            nearest, extra = int(ups[0]), float(extras[0])
            near = exact_loss(name, nearest, low) / extra if extra > 0 else math.inf
            best = int(np.argmax(ratios))
            if near >= ratios[best] * (1 - 1e-9):
                fitting.append((near, -order.index(name), name, nearest, extra))
            else:
                fitting.append(
                    (
                        float(ratios[best]),
                        -order.index(name),
                        name,
                        int(ups[best]),
                        float(extras[best]),
                    )
                )
        if not fitting:
            return exchange_fill(
                eigenvalues, tables, ranks, budget, min_rank=min_rank, round_to=round_to
            )
        _, _, name, up, extra = max(fitting)
        ranks[name] = up
        spent += extra


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and value.dim() == 0)


def _as_table(costs, d: int, name: str) -> List[float]:
    """A cost table of length d: a number ΔC becomes the linear table [ΔC, 2ΔC, …, dΔC]."""
    if _is_number(costs):
        step = float(costs)
        return [step * r for r in range(1, d + 1)]
    table = [float(c) for c in (costs.tolist() if isinstance(costs, torch.Tensor) else costs)]
    if len(table) != d:
        raise AccelDetError(
            f"the cost table of {name} has {len(table)} entries, expected one per rank 1..{d}"
        )
    if not all(math.isfinite(c) for c in table):
        raise AccelDetError(f"the cost table of {name} has non-finite entries")
    return table


def monotone_costs(table: Sequence[float]) -> List[float]:
    """Non-decreasing in the rank: cost(r) = min over r' ≥ r of the given cost(r')."""
    result = list(table)
    for i in range(len(result) - 2, -1, -1):
        result[i] = min(result[i], result[i + 1])
    return result


def round_down_ranks(
    ranks: Mapping[str, int], multiple: Multiple, full: Mapping[str, int]
) -> Dict[str, int]:
    """Ranks rounded down to a multiple of ``multiple`` (at least it, at most the full rank; a
    mapping: per layer), for uniform ranks with ``round_ranks_to``; rounding down never exceeds a
    budget."""
    result = {}
    for name, rank in ranks.items():
        step = multiple_of(multiple, name)
        if step <= 1 or rank == full[name]:
            result[name] = rank
        else:
            result[name] = min(full[name], max(step, rank - rank % step))
    return result


Multiple = Union[int, Mapping[str, int]]  # one multiple for every layer, or one per layer


def multiple_of(multiple: Multiple, name: Optional[str]) -> int:
    """The multiple of layer ``name`` (``None``: the largest of any layer)."""
    if isinstance(multiple, Mapping):
        return int(multiple[name]) if name is not None else max(multiple.values(), default=1)
    return int(multiple)


def check_multiple(multiple: Multiple) -> None:
    values = multiple.values() if isinstance(multiple, Mapping) else [multiple]
    for value in values:
        if not (isinstance(value, int) and value >= 1):
            raise AccelDetError(f"round_to must be a positive integer, got {value!r}")


def layer_multiples(specs: Sequence, round_to: int) -> Dict[str, int]:
    """The multiple each layer's ranks are rounded to: ``round_to``, or for a thin layer (fewer
    than 4·``round_to`` filters) the largest power of two at most a quarter of its filters, so
    that a layer of 8 or 16 filters is not left only its full rank. Thin layers are bound by
    memory traffic and per-layer overhead more than by their channel tiles."""
    result = {}
    for spec in specs:
        step = round_to
        if spec.out_channels < 4 * round_to:
            step = 1
            while step * 2 <= min(round_to, spec.out_channels // 4):
                step *= 2
        result[spec.name] = step
    return result


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


def exchange_fill(
    eigenvalues: Mapping[str, torch.Tensor],
    tables: Mapping[str, Sequence[float]],
    ranks: Mapping[str, int],
    budget: float,
    min_rank: int = 1,
    *,
    round_to: Multiple = 1,
) -> Dict[str, int]:
    """Exchanges after the greedy of :func:`select_ranks_by_table` (beyond the paper), whose last
    steps up move one layer at a time and so may leave up to one (rounded) step of the budget
    unspent: one layer one allowed rank up and another down to the highest allowed rank that
    makes the pair fit the budget, when the pair spends more of the budget and keeps more energy
    (eq. 13's product E grows), the exchange that keeps the most first. An exchange that spent
    more for less energy would only be slower and worse, so a plan of coarse ranks may stay up to
    a step's worth under its budget. Same arguments as :func:`select_ranks_by_table`, and
    ``ranks`` to start from (within the budget)."""
    check_multiple(round_to)
    order = list(eigenvalues)
    ranks = dict(ranks)
    kept, cost, allowed = {}, {}, {}
    for name in order:
        values = eigenvalues[name].double().clamp_min(0).numpy()
        energy = np.concatenate([[0.0], np.cumsum(values)])
        with np.errstate(divide="ignore"):
            kept[name] = np.log(np.maximum(energy / max(energy[-1], 1e-300), 1e-300))
        cost[name] = np.array([0.0] + monotone_costs(_as_table(tables[name], len(values), name)))
        step = multiple_of(round_to, name)
        allowed[name] = np.array(
            sorted({r for r in range(step, len(values) + 1, step) if r >= min_rank} | {len(values)})
        )
    spent = sum(float(cost[name][ranks[name]]) for name in order)

    def step_up(name: str):
        """(rank, Δcost, Δlog-energy) of the next allowed rank up, or None."""
        here = ranks[name]
        prices = cost[name][allowed[name]]
        higher = prices[prices > cost[name][here]]
        if not len(higher):
            return None
        up = int(allowed[name][prices == higher[0]][-1])  # the most energy at that cost
        return up, cost[name][up] - cost[name][here], kept[name][up] - kept[name][here]

    def step_down(name: str, room: float):
        """(rank, Δcost, Δlog-energy) of the highest allowed rank down that frees at least
        ``room``, or None."""
        here = ranks[name]
        lower = allowed[name][cost[name][allowed[name]] <= cost[name][here] - room]
        lower = lower[cost[name][lower] < cost[name][here]]
        if not len(lower):
            return None
        down = int(lower[-1])
        return down, cost[name][down] - cost[name][here], kept[name][down] - kept[name][here]

    for _ in range(100 * len(order)):
        moves = []
        for a in order:
            up = step_up(a)
            if up is None:
                continue
            for b in order:
                down = None if b == a else step_down(b, spent + up[1] - budget)
                if down is None:
                    continue
                after = spent + up[1] + down[1]
                if spent < after <= budget:
                    moves.append((up[2] + down[2], after, a, up[0], b, down[0]))
        if not moves:
            break
        gain, after, a, up, b, down = max(moves)
        if gain <= 1e-12:
            break
        ranks[a], ranks[b], spent = up, down, float(after)
    return ranks
