"""Greedy rank selection (eqs. 13–14) against exhaustive search, and the spatial decomposition."""

import itertools
import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from accel_det.errors import AccelDetError
from accel_det.models.vgg import vgg16_features
from accel_det.nn import FactorizedConv2d
from accel_det.solver import (
    conv_specs,
    filter_reconstruction,
    select_ranks,
    structure_macs,
)
from accel_det.solver.factorize import set_weights
from accel_det.solver.ranks import (
    budget_macs,
    cost_per_rank,
    product_energy,
    select_ranks_by_table,
)
from accel_det.solver.splits import spatial_ranks


def _spectrum(generator, size):
    return (
        torch.rand(size, generator=generator, dtype=torch.float64)
        .pow(3)
        .sort(descending=True)
        .values
    )


def _exhaustive(eigenvalues, costs, budget):
    names = list(eigenvalues)
    best, best_ranks = -1.0, None
    for combo in itertools.product(*[range(1, len(eigenvalues[n]) + 1) for n in names]):
        if sum(r * costs[n] for r, n in zip(combo, names)) <= budget + 1e-9:
            ranks = dict(zip(names, combo))
            energy = product_energy(eigenvalues, ranks)
            if energy > best:
                best, best_ranks = energy, ranks
    return best, best_ranks


@pytest.mark.parametrize("seed", range(6))
def test_greedy_matches_exhaustive_search_with_equal_costs(seed):
    # With equal ΔC the greedy order is that of -log(1 - ΔE/E), convex per layer: greedy is optimal.
    g = torch.Generator().manual_seed(seed)
    eigenvalues = {f"l{i}": _spectrum(g, size) for i, size in enumerate((5, 6, 4))}
    costs = {name: 1.0 for name in eigenvalues}
    budget = 7
    ranks = select_ranks(eigenvalues, costs, budget)
    best, _ = _exhaustive(eigenvalues, costs, budget)
    assert product_energy(eigenvalues, ranks) == pytest.approx(best, rel=1e-12)


def _random_cost_table(rng, d):
    """A random non-decreasing cost table for ranks 1 … d, of one of three kinds: multiply-adds as
    compress builds them (d'(k²c + d) below full rank, d·k²c at full rank, 1×1 folded), a measured
    latency (overhead, slope, a step every few ranks, noise), or plateaus and jumps; each capped
    by the ranks above it, as select_ranks_by_table does."""
    kind = rng.choice(["macs", "latency", "jumps"])
    if kind == "macs":
        k2c = 9 * rng.randint(1, 12)
        raw = [r * (k2c + d) for r in range(1, d)] + [d * k2c]
    elif kind == "latency":
        base, slope, step = rng.uniform(0, 1), rng.uniform(0.05, 1), rng.uniform(0, 1)
        every = rng.randint(2, 4)
        raw = [
            base + slope * r + step * (r // every) + rng.uniform(0, 0.3 * slope)
            for r in range(1, d + 1)
        ]
    else:
        steps = [rng.choice([0.0, rng.uniform(0, 0.3), rng.uniform(0.5, 3)]) for _ in range(d)]
        raw = list(rng.uniform(0, 2) + np.cumsum(steps))
    return np.minimum.accumulate(np.array(raw, dtype=float)[::-1])[::-1]


def test_the_table_greedy_against_exhaustive_search():
    """select_ranks_by_table (the default path: compress passes per-rank cost tables) against
    every combination of ranks, on 200 random 3-layer cases (3-10 filters per layer, decaying
    eigenvalues, random non-decreasing tables, budgets anywhere between the cheapest and the full
    cost). The bound tested: the budget is met in every case; the product energy (eq. 13) of the
    greedy's ranks is the optimum in at least 88 % of the cases, at least 0.98 of it on average,
    and at least 0.4 of it in every case.

    Measured on these 200 cases: optimal in 179 (89.5 %), mean 0.984, worst 0.42; on 5,000 such
    cases: optimal in 89.5 %, mean 0.991, below 0.95 in 5 %, worst 0.42 (seed 108: one step down
    of a layer is a large share of the budget and is not traded back). The 86-100 % seen before
    held for a few cases only; the greedy is a heuristic, and with 3-10 ranks per layer one step
    is a large part of a layer's cost. Without the give-back of steps that still fit it is
    optimal in 85 of the 200 cases; stepping one allowed rank at a time (no look-ahead), in 175
    with mean 0.979."""
    ratios = []
    for seed in range(200):
        rng = random.Random(seed)
        g = torch.Generator().manual_seed(seed)
        sizes = [rng.randint(3, 10) for _ in range(3)]
        eigenvalues = {f"l{i}": _spectrum(g, d) for i, d in enumerate(sizes)}
        tables = {name: _random_cost_table(rng, d) for name, d in zip(eigenvalues, sizes)}
        low = sum(t[0] for t in tables.values())
        full = sum(t[-1] for t in tables.values())
        budget = low + rng.uniform(0.05, 0.95) * (full - low)
        ranks = select_ranks_by_table(
            eigenvalues, {n: t.tolist() for n, t in tables.items()}, budget
        )
        assert sum(tables[n][r - 1] for n, r in ranks.items()) <= budget, seed
        # every combination at once: energy kept and cost as 3-d arrays over (d'_0, d'_1, d'_2)
        axes = [[-1 if i == j else 1 for j in range(3)] for i in range(3)]
        kept = [
            (eigenvalues[n].cumsum(0) / eigenvalues[n].sum()).numpy().reshape(axis)
            for n, axis in zip(tables, axes)
        ]
        cost = [tables[n].reshape(axis) for n, axis in zip(tables, axes)]
        energy, spent = kept[0] * kept[1] * kept[2], cost[0] + cost[1] + cost[2]
        best = float(energy[spent <= budget].max())
        ratios.append(product_energy(eigenvalues, ranks) / best)
    ratios = np.array(ratios)
    assert ratios.max() <= 1 + 1e-12  # nothing beats the exhaustive optimum
    assert ratios.min() >= 0.4, ratios.argmin()
    assert (ratios >= 1 - 1e-12).mean() >= 0.88 and ratios.mean() >= 0.98


@pytest.mark.parametrize("seed", range(6))
def test_greedy_meets_the_budget_tightly_with_unequal_costs(seed):
    g = torch.Generator().manual_seed(seed)
    eigenvalues = {f"l{i}": _spectrum(g, size) for i, size in enumerate((6, 5, 7))}
    costs = {"l0": 3.0, "l1": 5.0, "l2": 2.0}
    budget = 0.45 * sum(len(eigenvalues[n]) * costs[n] for n in costs)
    ranks = select_ranks(eigenvalues, costs, budget)
    spent = sum(ranks[n] * costs[n] for n in costs)
    assert spent <= budget
    assert spent > budget - max(costs.values())  # it stopped at the first step under the budget
    assert all(1 <= ranks[n] <= len(eigenvalues[n]) for n in costs)


def test_greedy_takes_cheap_energy_first():
    flat = torch.ones(4, dtype=torch.float64)
    steep = torch.tensor([10.0, 1e-3, 1e-3, 1e-3], dtype=torch.float64)
    ranks = select_ranks({"flat": flat, "steep": steep}, {"flat": 1.0, "steep": 1.0}, budget=5)
    assert ranks == {"flat": 4, "steep": 1}


def test_impossible_budget_is_refused():
    eigenvalues = {"a": torch.ones(3, dtype=torch.float64)}
    with pytest.raises(AccelDetError, match="impossible"):
        select_ranks(eigenvalues, {"a": 1.0}, budget=0.5)


def test_vgg16_rank_selection_reaches_the_target():
    specs = conv_specs(vgg16_features(), (224, 224))
    g = torch.Generator().manual_seed(0)
    eigenvalues = {s.name: _spectrum(g, s.out_channels) for s in specs[1:]}
    for speedup in (2, 3, 4, 5):
        costs = {s.name: cost_per_rank(s) for s in specs[1:]}
        ranks = select_ranks(eigenvalues, costs, budget_macs(specs, speedup, {"conv1_1"}))
        total = sum(structure_macs(s, "original") for s in specs)
        approximated = structure_macs(specs[0], "original") + sum(
            structure_macs(s, "channel", ranks[s.name]) for s in specs[1:]
        )
        assert total / approximated == pytest.approx(speedup, rel=0.01)  # one conv1_2 rank is 0.8 %
        assert total / approximated >= speedup


def test_spatial_ranks_meet_the_budget():
    specs = conv_specs(vgg16_features(), (224, 224))[1:]
    channel = {s.name: s.out_channels // 2 for s in specs}
    for ranks in (None, channel):

        def cost(d2):
            if ranks:
                return sum(
                    structure_macs(s, "spatial_channel", ranks[s.name], d2[s.name]) for s in specs
                )
            return sum(structure_macs(s, "spatial", None, d2[s.name]) for s in specs)

        low = cost({s.name: 1 for s in specs})
        high = cost(
            {
                s.name: min(s.in_channels, (ranks or {}).get(s.name, s.out_channels)) * 3
                for s in specs
            }
        )
        budget = low + 0.3 * (high - low)
        assert budget * 0.99 <= cost(spatial_ranks(specs, budget, ranks)) <= budget
    with pytest.raises(AccelDetError, match="impossible"):
        spatial_ranks(specs, 0.5 * sum(structure_macs(s, "spatial", None, 1) for s in specs))


def test_filter_reconstruction_full_rank_is_exact():
    torch.manual_seed(0)
    weight = torch.randn(7, 4, 3, 3, dtype=torch.float64)
    vertical, horizontal = filter_reconstruction(weight, 4 * 3)
    rebuilt = torch.einsum("otx,tiy->oiyx", horizontal[:, :, 0, :], vertical[:, :, :, 0])
    assert torch.allclose(rebuilt, weight, atol=1e-10)


def test_filter_reconstruction_is_the_best_low_rank_filter_fit():
    torch.manual_seed(0)
    weight = torch.randn(6, 5, 3, 3, dtype=torch.float64)
    rank = 4
    vertical, horizontal = filter_reconstruction(weight, rank)
    rebuilt = torch.einsum("otx,tiy->oiyx", horizontal[:, :, 0, :], vertical[:, :, :, 0])
    error = float((rebuilt - weight).norm())
    singular = torch.linalg.svdvals(weight.permute(1, 2, 0, 3).reshape(15, 18))
    assert error == pytest.approx(
        float(singular[rank:].square().sum().sqrt()), rel=1e-9
    )  # Eckart–Young

    # Brute force: gradient descent on the two filter banks from random starts does no better.
    v = torch.randn(rank, 5, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(6, rank, 3, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [v, h],
        max_iter=2000,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    def loss():
        optimizer.zero_grad()
        value = (torch.einsum("otx,tiy->oiyx", h, v) - weight).square().sum()
        value.backward()
        return value

    optimizer.step(loss)
    assert error <= math.sqrt(float(loss().detach())) + 1e-9


@pytest.mark.parametrize("stride", [1, 2])
def test_spatial_layers_compute_the_reconstructed_kernel_with_borders(stride):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride, 1)
    rank = 12  # full rank: min(c·k, d·k)
    vertical, horizontal = filter_reconstruction(conv.weight.detach(), rank)
    layer = FactorizedConv2d(4, 6, 3, stride, 1, structure="spatial", spatial_rank=rank)
    set_weights(layer.vertical, vertical, None)
    set_weights(layer.horizontal, horizontal, conv.bias.detach())
    x = torch.randn(2, 4, 11, 9)
    with torch.no_grad():
        assert torch.allclose(layer(x), conv(x), atol=1e-5)
