"""Plans for a whole-model speedup: the structure and ranks of every layer (§3.4, §3.5), before
any weight is solved; and plans made from given structures (benchmarks, the paper's tables)."""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import torch

from ..errors import AccelDetError
from ..nn.factorized import CHANNEL, ORIGINAL, SPATIAL, SPATIAL_CHANNEL
from ..plan import PLAN_FORMAT, Plan
from .channel import pca_energy
from .complexity import ConvSpec, LinearSpec, conv_macs, speedup_ratio, structure_macs
from .options import SolverOptions, skipped_layers
from .ranks import (
    budget_macs,
    channel_cost_table,
    cost_per_rank,
    layer_multiples,
    round_down_ranks,
    select_ranks,
    uniform_ranks,
)
from .splits import spatial_break_even, spatial_ranks


def structure_of(rank: Optional[int], spatial_rank: Optional[int], out_channels: int) -> str:
    """The layers a plan entry becomes. At full rank d' = d the 1×1 layer would only add cost: M
    is folded into the layer before it (the entry keeps ``rank`` = d to say it is solved)."""
    if rank == out_channels:
        rank = None
    if rank and spatial_rank:
        return SPATIAL_CHANNEL
    if rank:
        return CHANNEL
    if spatial_rank:
        return SPATIAL
    return ORIGINAL


def layer_structures(
    specs: Sequence[ConvSpec], ranks: Mapping[str, int], spatial: Mapping[str, int]
) -> Dict[str, dict]:
    """The plan entries (``structure``, ``rank``, ``spatial_rank``) of layers with d' (``ranks``)
    and d'' (``spatial``). A layer at full rank d' = d that is not split stays as it is (no rank,
    its own weights) until a layer before it is factorized: only then does solving it at full
    rank (eq. 12, M folded into it) have an approximated input to make up for."""
    structures, changed = {}, False
    for spec in specs:
        rank, spatial_rank = ranks.get(spec.name), spatial.get(spec.name)
        structure = structure_of(rank, spatial_rank, spec.out_channels)
        if structure == ORIGINAL and not changed:
            rank = None
        changed = changed or structure != ORIGINAL
        structures[spec.name] = {"structure": structure, "rank": rank, "spatial_rank": spatial_rank}
    return structures


def spatial_layers(specs: Sequence[ConvSpec]) -> list:
    """The layers a spatial step can split: k×k with k > 1 in both directions."""
    return [s for s in specs if s.kernel_size[0] > 1 and s.kernel_size[1] > 1]


def check_reachable(specs: Sequence[ConvSpec], options: SolverOptions) -> None:
    """Refuse a speedup that even rank 1 everywhere cannot reach, naming the largest possible
    one."""
    method = options.solver
    skip = set(skipped_layers(options, [s.name for s in specs]))
    splittable = spatial_layers(specs)
    total = sum(conv_macs(s) for s in specs)
    cheapest = 0
    for s in specs:
        structure = ORIGINAL if s.name in skip else method.structure(s in splittable)
        cheapest += structure_macs(s, structure, 1, 1)
    best = total / cheapest
    if options.speedup > best:
        raise AccelDetError(
            f"speedup {options.speedup:g} is impossible for method {options.method}: at most "
            f"{best:.1f}x with these layers"
        )


def make_plan(
    specs: Sequence[ConvSpec],
    eigenvalues: Mapping[str, torch.Tensor],
    options: SolverOptions,
    *,
    spatial_spectra: Optional[Mapping[str, torch.Tensor]] = None,
) -> Plan:
    """Structure and ranks of every layer for the whole-model theoretical ``options.speedup``:
    d' by rank selection (eqs. 13-14) or uniform ratios, then d'' of the spatial step so that the
    whole model, 1×1 layers and skipped layers included, meets the speedup
    (:func:`~.ranks.spatial_ranks`, per layer by its ``spatial_spectra`` where given). Every
    factorized layer costs less than the layer it replaces (:func:`check_plan_pays`)."""
    method = options.solver
    skip = set(skipped_layers(options, [s.name for s in specs]))
    solved = [s for s in specs if s.name not in skip]
    if not solved:
        raise AccelDetError("every conv layer is skipped: nothing to compress")
    splittable = [s for s in spatial_layers(specs) if s.name not in skip]
    check_reachable(specs, options)
    round_to = layer_multiples(specs, options.round_ranks_to)
    ranks: Dict[str, int] = {}
    spatial: Dict[str, int] = {}
    if not method.channel:
        fixed = skip | {s.name for s in solved if s not in splittable}
        spatial = spatial_ranks(
            splittable,
            budget_macs(specs, options.speedup, fixed),
            round_to=round_to,
            spectra=spatial_spectra,
        )
    else:
        ranks = channel_ranks(specs, solved, eigenvalues, options)
        if method.spatial:
            fixed_macs = sum(
                structure_macs(s, structure_of(ranks[s.name], None, s.out_channels), ranks[s.name])
                for s in solved
                if s not in splittable
            )
            budget = budget_macs(specs, options.speedup, skip) - fixed_macs
            # Full-rank layers lose their 1×1 layer (folded), so the spatial step sees them as d
            # wide.
            low_rank = {s.name: ranks[s.name] for s in splittable if ranks[s.name] < s.out_channels}
            spatial = spatial_ranks(
                splittable, budget, low_rank, round_to=round_to, spectra=spatial_spectra
            )

    structures = layer_structures(specs, ranks, spatial)
    plan = plan_from_structures(
        specs,
        structures,
        method=options.method,
        speedup=float(options.speedup),
        rank_selection=bool(options.rank_selection) and method.channel,
        rank_cost=options.rank_cost,
        skip=sorted(skip, key=[s.name for s in specs].index),
    )
    record_selection(plan, specs, ranks, eigenvalues, options)
    if options.rank_selection and options.rank_cost == "latency":
        plan["latency"] = latency_record(specs, ranks, options)
    check_plan_pays(plan)
    return plan


def check_plan_pays(plan: Mapping, source: str = "the plan") -> None:
    """Refuse a plan with a factorized layer that does not cost strictly fewer multiply-adds than
    the original layer (counted from the shape its entry records), or a 3d layer whose spatial
    split does not cost fewer than its k×k layer of d' filters would: such a layer only adds
    error. Plans are checked with it before they are written. (With ``rank_cost="latency"`` d' is
    priced by measured latency, where rank selection only takes ranks faster than the layer.)"""
    latency = plan.get("rank_cost") == "latency"  # d' priced by measured latency: pays there
    for name, entry in plan["layers"].items():
        structure = entry.get("structure", ORIGINAL)
        if structure == ORIGINAL or (latency and structure == CHANNEL):
            continue
        if "in_features" in entry:
            spec = LinearSpec(name, entry["in_features"], entry["out_features"], entry["rois"])
        else:
            spec = ConvSpec.from_dict({**entry, "name": name})
        rank, spatial_rank = entry.get("rank"), entry.get("spatial_rank")
        cost, original = structure_macs(spec, structure, rank, spatial_rank), conv_macs(spec)
        if cost >= original:
            raise AccelDetError(
                f"{source}: {name} is {structure} (d'={rank}, d''={spatial_rank}) at {cost} "
                f"multiply-adds, not fewer than the {original} of the original layer: a factorized "
                "layer that does not pay only adds error"
            )
        if structure == SPATIAL_CHANNEL and spatial_rank > spatial_break_even(spec, rank):
            raise AccelDetError(
                f"{source}: {name} has d''={spatial_rank}, above {spatial_break_even(spec, rank)}, "
                f"where its k×1 + 1×k split stops costing less than its k×k layer of {rank} filters"
            )


def channel_ranks(
    specs: Sequence[ConvSpec],
    solved: Sequence[ConvSpec],
    eigenvalues: Mapping[str, torch.Tensor],
    options: SolverOptions,
) -> Dict[str, int]:
    """d' of every solved layer for the channel step's share of the speedup."""
    speedup = options.solver.channel_speedup(options.speedup)
    skip = skipped_layers(options, [s.name for s in specs])
    if not options.rank_selection:
        return round_down_ranks(
            uniform_ranks(solved, speedup),
            layer_multiples(solved, options.round_ranks_to),
            {s.name: s.out_channels for s in solved},
        )
    if options.rank_cost == "latency":
        table = options.latency_table
        table.check_fits(specs)
        costs = {s.name: table.cost_table(s.name) for s in solved}
        budget = table.budget(specs, speedup, skip)
    elif options.rank_cost == "paper":  # eq. (14) as printed, ΔC = C_l / d_l
        costs = {s.name: cost_per_rank(s, "paper") for s in solved}
        budget = budget_macs(specs, speedup, skip)
    else:  # "with_1x1": the cost of the layer at each rank, full rank folded
        costs = {s.name: channel_cost_table(s) for s in solved}
        budget = budget_macs(specs, speedup, skip)
    selected = {s.name: eigenvalues[s.name] for s in solved}
    round_to = layer_multiples(solved, options.round_ranks_to)
    return select_ranks(selected, costs, budget, round_to=round_to)


def latency_record(specs, ranks, options: SolverOptions) -> dict:
    """Sums of per-layer latencies of all conv layers, from the latency table."""
    table = options.latency_table
    original_ms = 1e3 * table.predicted(specs, {})
    predicted_ms = 1e3 * table.predicted(specs, ranks)
    return {
        "key": table.key,
        "original_ms": original_ms,
        "target_ms": original_ms / options.speedup,
        "predicted_ms": predicted_ms,
        "predicted_speedup": original_ms / predicted_ms,
    }


def record_selection(plan: dict, specs, ranks, eigenvalues, options) -> None:
    """Each selected layer's PCA energy at its rank (eq. 14's factor), errors still unsolved, and
    the rank multiple of the plan."""
    for spec in specs:
        rank = ranks.get(spec.name)
        plan["layers"][spec.name].update(
            pca_energy=pca_energy(eigenvalues[spec.name], rank) if rank else 1.0,
            error=None,
            seconds=None,
        )
    if options.round_ranks_to > 1:
        plan["round_ranks_to"] = int(options.round_ranks_to)


def plan_from_structures(
    specs: Sequence[ConvSpec], layers: Mapping[str, Mapping], **fields
) -> Plan:
    """A plan (without solver results) for the structures in ``layers`` (name → ``structure``,
    ``rank``, ``spatial_rank``; missing: original), with the multiply-adds of
    :mod:`.complexity`; ``fields`` go to the top level."""
    entries = {}
    for spec in specs:
        given = layers.get(spec.name, {})
        structure = given.get("structure", ORIGINAL)
        rank, spatial_rank = given.get("rank"), given.get("spatial_rank")
        entries[spec.name] = {
            **spec.to_dict(),
            "structure": structure,
            "rank": rank,
            "spatial_rank": spatial_rank,
            "macs": structure_macs(spec, structure, rank, spatial_rank),
            "original_macs": conv_macs(spec),
        }
    original = sum(e["original_macs"] for e in entries.values())
    approximated = sum(e["macs"] for e in entries.values())
    return Plan(
        {
            "format": PLAN_FORMAT,
            **fields,
            "theoretical_speedup": speedup_ratio(original, approximated),
            "original_macs": original,
            "approximated_macs": approximated,
            "layers": entries,
        }
    )


def plan_energy(plan: Mapping) -> float:
    """Eq. (13) of a plan: the product over its channel-decomposed layers of the PCA energy kept."""
    product = 1.0
    for entry in plan["layers"].values():
        if entry.get("rank") is not None:
            product *= entry["pca_energy"]
    return product
