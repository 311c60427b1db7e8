"""d'' of the spatial step (§3.5): which k×k layers are split into k×1 + 1×k and at which
spatial rank, for the 3d combination and the Jaderberg baseline. A split is made only where it
costs fewer multiply-adds than the layer it replaces, and only as far as the budget needs."""

from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence

import torch

from ..errors import AccelDetError
from .complexity import ConvSpec, spatial_macs
from .ranks import Multiple, check_multiple, multiple_of, select_ranks_by_table


def spatial_break_even(spec: ConvSpec, width: Optional[int] = None) -> int:
    """The largest d'' at which the k×1 + 1×k split of the k×k part of a layer (``width``
    filters, d by default) costs strictly less than that k×k layer:
    d''·(kh·c + kw·d̃)·H'W' < d̃·k²c·H'W' (0 when no split pays). Above it a split only adds error
    and multiply-adds."""
    width = spec.out_channels if width is None else width
    return (width * spec.fan_in * spec.positions - 1) // spatial_macs(spec, 1, width)


def spatial_ranks(
    specs: Sequence[ConvSpec],
    budget: float,
    ranks: Optional[Mapping[str, int]] = None,
    *,
    round_to: Multiple = 1,
    spectra: Optional[Mapping[str, torch.Tensor]] = None,
) -> Dict[str, int]:
    """d'' of the layers that are split so that the layers fit ``budget`` multiply-adds; a layer
    missing from the result keeps its k×k part whole.

    The k×k part of every layer has d' filters when ``ranks`` are given (its 1×1 layer costs
    d·d'·H'W' as it is), else d. A layer is split only below its break-even rank
    (:func:`spatial_break_even`), so a split always saves multiply-adds, and only as far as the
    budget needs: the budget is a ceiling, and layers that it does not need stay whole.

    With ``spectra`` (per layer, the squared singular values of the (kh·c)×(kw·d) kernel matrix,
    largest first: the energy filter reconstruction keeps, §5.3) d'' is chosen per layer by the
    greedy of eqs. (13)–(14) with these energies in place of the eigenvalues: the filter energy
    lost per multiply-add saved is smallest (:func:`select_ranks_by_table`, where a layer's full
    rank stands for the whole k×k layer). Without them, as the paper's "√r each", the k×k part of
    every split layer is made s times cheaper, d'' = floor(d̃·k²c / (s·(kh·c + kw·d̃))), with the
    smallest s that meets the budget (bisection); a layer whose d'' would not pay stays whole.

    ``round_to`` > 1 (beyond the paper) keeps every d'' a multiple of it (a layer whose
    break-even rank is below its multiple is not split). Thin convs run in steps of channel tiles
    (oneDNN on CPU: 16 fp32 channels per AVX-512 vector; tensor cores: 8 fp16), so rounded ranks
    waste less.
    """
    check_multiple(round_to)
    ranks = dict(ranks or {})
    width = {s.name: ranks.get(s.name, s.out_channels) for s in specs}
    dense = {s.name: width[s.name] * s.fan_in * s.positions for s in specs}
    limit = {s.name: spatial_break_even(s, width[s.name]) for s in specs}
    fixed = sum(width[s.name] * s.out_channels * s.positions for s in specs if s.name in ranks)
    cheapest = fixed + sum(
        spatial_macs(s, multiple_of(round_to, s.name), width[s.name])
        if multiple_of(round_to, s.name) <= limit[s.name]
        else dense[s.name]
        for s in specs
    )
    if cheapest > budget:
        raise AccelDetError("the speedup is impossible even with spatial rank 1 in every layer")
    if spectra is not None:
        return _spatial_ranks_by_energy(
            specs, budget - fixed, width, dense, limit, round_to, spectra
        )
    return _spatial_ranks_by_ratio(specs, budget - fixed, width, dense, limit, round_to)


def _spatial_ranks_by_energy(specs, budget, width, dense, limit, round_to, spectra):
    """Per-layer d'' by the greedy of eqs. (13)–(14) over filter energies (see
    :func:`spatial_ranks`): rank limit + 1 stands for the whole layer, holding all the energy."""
    values, tables, multiples = {}, {}, {}
    for s in specs:
        top = limit[s.name]
        energy = torch.as_tensor(spectra[s.name]).double().clamp_min(0).flatten()
        energy = torch.cat([energy, energy.new_zeros(max(0, top + 1 - len(energy)))])
        values[s.name] = torch.cat([energy[:top], energy[top:].sum().reshape(1)])
        tables[s.name] = [float(spatial_macs(s, r, width[s.name])) for r in range(1, top + 1)]
        tables[s.name].append(float(dense[s.name]))
        multiples[s.name] = multiple_of(round_to, s.name)
    chosen = select_ranks_by_table(values, tables, budget, round_to=multiples)
    return {s.name: chosen[s.name] for s in specs if chosen[s.name] <= limit[s.name]}


def _spatial_ranks_by_ratio(specs, budget, width, dense, limit, round_to):
    """One spatial ratio s for every split layer, the smallest that meets the budget (see
    :func:`spatial_ranks`); since all layers step at once, single layers are then stepped back up
    by their multiple (1 unrounded; past the break-even rank: left whole) while the budget
    allows, the most-cut layer (largest k×k / (k×1 + 1×k) ratio) first."""

    def rounded(spec: ConvSpec, value: int) -> Optional[int]:
        step = multiple_of(round_to, spec.name)
        value = max(1, value) if step == 1 else max(step, value - value % step)
        return value if value <= limit[spec.name] else None  # None: not split, kept whole

    def layer_ranks(ratio: float) -> Dict[str, int]:
        result = {}
        for spec in specs:
            unit = spatial_macs(spec, 1, width[spec.name])
            value = rounded(spec, math.floor(dense[spec.name] / (ratio * unit) + 1e-9))
            if value is not None:
                result[spec.name] = value
        return result

    def cost_of(chosen: Mapping[str, int]) -> float:
        return sum(
            spatial_macs(s, chosen[s.name], width[s.name]) if s.name in chosen else dense[s.name]
            for s in specs
        )

    def cost(ratio: float) -> float:
        return cost_of(layer_ranks(ratio))

    low, high = 1e-3, 1e9
    for _ in range(200):
        middle = math.sqrt(low * high)
        if cost(middle) <= budget:
            high = middle
        else:
            low = middle
        if high / low < 1 + 1e-12:
            break
    result = layer_ranks(high)
    by_name = {spec.name: spec for spec in specs}

    def ratio_of(name: str) -> float:  # how many times cheaper the k×k part of the layer is
        return dense[name] / spatial_macs(by_name[name], result[name], width[name])

    spent = cost_of(result)
    while True:
        steps = []
        for name, value in result.items():
            step = multiple_of(round_to, name)
            up = value + step - value % step
            changed = {**result, name: up} if up <= limit[name] else without(result, name)
            extra = cost_of(changed) - spent
            if spent + extra <= budget:
                steps.append((ratio_of(name), name, changed, extra))
        if not steps:
            break
        _, _, result, extra = max(steps, key=lambda step: step[:2])
        spent += extra
    return result


def without(ranks: Mapping[str, int], name: str) -> Dict[str, int]:
    return {key: value for key, value in ranks.items() if key != name}
