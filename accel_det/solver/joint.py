"""One budget for a whole network with fc layers (beyond the paper): rank selection (eqs. 13-14)
over conv and fc layers together, priced by their multiply-adds per image.

A conv layer's eigenvalue costs (k²c + d)·H'W' at the network's input size, an fc layer's
(c + d)·R at R inputs per image (the RoIs of a detector, 1 for a classifier); layers that are not
accelerated (the box predictor, fc8, skipped convs) keep their full cost. The target is the
theoretical speedup of the whole network (``target="network"``) or, as in the paper, of the conv
layers alone (``target="conv"``), the fc layers then taking ``fc_ranks`` or staying as they are;
``target="fc"`` keeps the convs and gives the fc layers ``fc_ranks`` (Fast R-CNN's truncated SVD).

With a spatial step (asym3d) a conv layer's cost at rank d' is that of its 3d structure with the
spatial ratio √r the paper gives each step; once the ranks are chosen, d'' of every split layer
is found so that the whole network meets r exactly (as for the conv layers alone).
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence

import torch

from ..errors import AccelDetError
from ..nn.factorized import CHANNEL, ORIGINAL
from ..plan import Plan
from .channel import pca_energy
from .complexity import (
    ConvSpec,
    LinearSpec,
    conv_macs,
    spatial_channel_macs,
    spatial_macs,
    speedup_ratio,
    structure_macs,
)
from .options import SolverOptions, skipped_layers
from .planning import (
    check_plan_pays,
    check_reachable,
    layer_structures,
    make_plan,
    plan_from_structures,
    record_selection,
    spatial_layers,
    structure_of,
)
from .ranks import (
    channel_cost_table,
    layer_multiples,
    round_down_ranks,
    select_ranks,
)
from .splits import spatial_ranks

TARGETS = ("network", "conv", "fc")


def spatial_rank_at(spec: ConvSpec, rank: int, ratio: float) -> int:
    """d'' that makes the k×k part of a layer with d' = ``rank`` filters ``ratio`` times cheaper
    (the formula :func:`.ranks.spatial_ranks` bisects over), clipped to the exact range."""
    dense = rank * spec.fan_in * spec.positions
    value = math.floor(dense / (ratio * spatial_macs(spec, 1, rank)) + 1e-9)
    full = min(spec.in_channels * spec.kernel_size[0], rank * spec.kernel_size[1])
    return max(1, min(full, value))


def spatial_cost_table(spec: ConvSpec, ratio: float) -> List[float]:
    """Multiply-adds of a layer in the 3d structure at ranks d' = 1 … d, d'' at spatial ratio
    ``ratio``; at full rank the 1×1 layer is folded away (the spatial structure)."""
    d = spec.out_channels
    table = [
        float(spatial_channel_macs(spec, r, spatial_rank_at(spec, r, ratio))) for r in range(1, d)
    ]
    return table + [float(spatial_macs(spec, spatial_rank_at(spec, d, ratio)))]


def linear_entry(
    spec: LinearSpec, rank: Optional[int], eigenvalues: Optional[torch.Tensor]
) -> dict:
    """The plan entry of an fc layer at ``rank`` (None: left as it is)."""
    structure = CHANNEL if rank is not None and rank < spec.out_features else ORIGINAL
    return {
        **spec.to_dict(),
        "structure": structure,
        "rank": rank,
        "macs": structure_macs(spec, structure, rank),
        "original_macs": conv_macs(spec),
        "pca_energy": pca_energy(eigenvalues, rank) if rank and eigenvalues is not None else 1.0,
        "error": None,
        "seconds": None,
    }


def make_network_plan(
    convs: Sequence[ConvSpec],
    linears: Sequence[LinearSpec],
    eigenvalues: Mapping[str, torch.Tensor],
    options: SolverOptions,
    *,
    fixed_macs: int = 0,
    target: str = "network",
    fc_ranks: Optional[Mapping[str, int]] = None,
    spatial_spectra: Optional[Mapping[str, torch.Tensor]] = None,
) -> Plan:
    """The plan of a network of conv layers then fc layers for ``options.speedup`` (see the
    module's docstring). ``fixed_macs``: multiply-adds per image of the layers that stay as they
    are besides these (a detector's box predictor); ``fc_ranks``: fixed ranks of fc layers (e.g.
    Girshick's) instead of selecting them; fc layers named in neither ``fc_ranks`` nor
    ``eigenvalues`` are left as they are; ``spatial_spectra``: the kernel energies that choose
    d'' per layer (:func:`~.ranks.spatial_ranks`). Every factorized layer costs less than the
    layer it replaces (:func:`~.planning.check_plan_pays`)."""
    if target not in TARGETS:
        raise AccelDetError(
            f"unknown speedup target {target!r}; expected one of {', '.join(TARGETS)}"
        )
    fc_ranks = dict(fc_ranks or {})
    selected = [s for s in linears if s.name not in fc_ranks and s.name in eigenvalues]
    if target == "fc":  # fc layers alone, at fc_ranks; the convs kept (the speedup is not used)
        plan = plan_from_structures(
            convs, {}, method=options.method, speedup=None, skip=[s.name for s in convs]
        )
        for entry in plan["layers"].values():
            entry.update(pca_energy=1.0, error=None, seconds=None)
        ranks = {s.name: fc_ranks.get(s.name) for s in linears}
    elif target == "conv" or not selected:
        plan = make_plan(convs, eigenvalues, options, spatial_spectra=spatial_spectra)
        ranks = {s.name: fc_ranks.get(s.name) for s in linears}
    else:
        plan, ranks = joint_plan(
            convs, linears, selected, eigenvalues, options, fixed_macs, fc_ranks, spatial_spectra
        )
    for spec in linears:
        plan["layers"][spec.name] = linear_entry(
            spec, ranks.get(spec.name), eigenvalues.get(spec.name)
        )
    original = sum(e["original_macs"] for e in plan["layers"].values()) + fixed_macs
    approximated = sum(e["macs"] for e in plan["layers"].values()) + fixed_macs
    plan.update(
        speedup_target=target,
        fixed_macs=int(fixed_macs),
        original_macs_network=int(original),
        approximated_macs_network=int(approximated),
        theoretical_speedup_network=speedup_ratio(original, approximated),
    )
    check_plan_pays(plan)
    return plan


def check_network_reachable(
    convs: Sequence[ConvSpec],
    linears: Sequence[LinearSpec],
    options: SolverOptions,
    *,
    fixed_macs: int = 0,
    target: str = "network",
    fc_ranks: Optional[Mapping[str, int]] = None,
    select_fc: bool = True,
) -> None:
    """Refuse, from the layers' shapes alone (before any response is sampled), a speedup that
    :func:`make_network_plan` would find impossible: rank 1 everywhere cannot reach it.
    ``select_fc``: the fc layers not in ``fc_ranks`` take part in the selection (they have
    eigenvalues); otherwise they stay as they are."""
    fc_ranks = dict(fc_ranks or {})
    selected = [s for s in linears if select_fc and s.name not in fc_ranks]
    if target == "fc":
        return
    if target == "conv" or not selected:
        check_reachable(convs, options)
        return
    _budget_tables(convs, linears, selected, options, fixed_macs, fc_ranks)


def _budget_tables(convs, linears, selected, options, fixed_macs, fc_ranks):
    """The multiply-add budget of the layers that are solved, their cost tables (per rank) and the
    splittable convs; raises when even the cheapest ranks exceed the budget."""
    method = options.solver
    if not method.channel:
        raise AccelDetError(
            f"method {options.method} has no channel step to select fc ranks with: use another "
            "method, fixed fc ranks, or the conv layers' speedup alone"
        )
    skip = set(skipped_layers(options, [s.name for s in convs]))
    solved = [s for s in convs if s.name not in skip]
    splittable = [s for s in spatial_layers(convs) if s.name not in skip] if method.spatial else []
    ratio = math.sqrt(options.speedup)
    fixed_fc = sum(
        structure_macs(
            s, CHANNEL if fc_ranks[s.name] < s.out_features else ORIGINAL, fc_ranks[s.name]
        )
        if s.name in fc_ranks
        else conv_macs(s)
        for s in linears
        if s not in selected
    )
    total = sum(conv_macs(s) for s in convs) + sum(conv_macs(s) for s in linears) + fixed_macs
    fixed = sum(conv_macs(s) for s in convs if s.name in skip) + fixed_fc + fixed_macs
    budget = total / options.speedup - fixed
    tables = {
        s.name: spatial_cost_table(s, ratio) if s in splittable else channel_cost_table(s)
        for s in solved + selected
    }
    cheapest = sum(t[0] for t in tables.values())
    if cheapest > budget:
        best = total / (cheapest + fixed)
        raise AccelDetError(
            f"speedup {options.speedup:g} is impossible for method {options.method} with these "
            f"conv and fc layers: at most {best:.1f}x"
        )
    return budget, tables, solved, splittable


def joint_plan(
    convs, linears, selected, eigenvalues, options, fixed_macs, fc_ranks, spatial_spectra=None
):
    """Conv and fc ranks from one greedy over both, then d'' (with a spatial step): layers whose
    split the budget does not need stay whole."""
    budget, tables, solved, splittable = _budget_tables(
        convs, linears, selected, options, fixed_macs, fc_ranks
    )
    skip = set(skipped_layers(options, [s.name for s in convs]))
    values = {name: eigenvalues[name] for name in tables}
    multiples = layer_multiples(solved + selected, options.round_ranks_to)
    if options.rank_selection:
        ranks = select_ranks(values, tables, budget, round_to=multiples)
    else:
        ranks = uniform_network_ranks(solved + selected, tables, budget, multiples)
    spatial: Dict[str, int] = {}
    if splittable:
        low_rank = {s.name: ranks[s.name] for s in splittable if ranks[s.name] < s.out_channels}
        rest = sum(
            structure_macs(s, structure_of(ranks[s.name], None, s.out_channels), ranks[s.name])
            for s in solved + selected
            if s not in splittable
        )
        spatial = spatial_ranks(
            splittable, budget - rest, low_rank, round_to=multiples, spectra=spatial_spectra
        )
    structures = layer_structures(convs, ranks, spatial)
    plan = plan_from_structures(
        convs,
        structures,
        method=options.method,
        speedup=float(options.speedup),
        rank_selection=bool(options.rank_selection),
        rank_cost=options.rank_cost,
        skip=sorted(skip, key=[s.name for s in convs].index),
    )
    record_selection(plan, convs, ranks, eigenvalues, options)
    fc = {s.name: fc_ranks.get(s.name, ranks.get(s.name)) for s in linears}
    return plan, fc


def uniform_network_ranks(specs, tables, budget, round_to) -> Dict[str, int]:
    """Without rank selection: the same fraction of every layer's cost, the largest that fits."""
    low, high = 0.0, 1.0
    full = {s.name: s.out_channels for s in specs}

    def ranks_at(fraction: float) -> Dict[str, int]:
        chosen = {}
        for s in specs:
            table = tables[s.name]
            limit = fraction * table[-1]
            chosen[s.name] = max([1] + [r + 1 for r, cost in enumerate(table) if cost <= limit])
        return round_down_ranks(chosen, round_to, full)

    def cost(chosen) -> float:
        return sum(tables[name][rank - 1] for name, rank in chosen.items())

    for _ in range(60):
        middle = (low + high) / 2
        if cost(ranks_at(middle)) <= budget:
            low = middle
        else:
            high = middle
    return ranks_at(low)
