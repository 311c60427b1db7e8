"""Plans never pay error for nothing: over random conv + fc networks every factorized layer costs
strictly fewer multiply-adds than the layer it replaces, no d'' passes its break-even rank, and
every plan lands within 2 % under its budget; layers the budget does not need stay original."""

import numpy as np
import pytest
import torch

from accel_det.errors import AccelDetError
from accel_det.models.vgg import vgg16_features
from accel_det.solver import SolverOptions, conv_specs
from accel_det.solver.complexity import ConvSpec, LinearSpec, conv_macs
from accel_det.solver.joint import make_network_plan
from accel_det.solver.mixed import make_layer_plan
from accel_det.solver.planning import check_plan_pays, spatial_layers
from accel_det.solver.ranks import layer_multiples
from tests.helpers import hand_macs

CASES = 260


def decaying(rng, length):
    """A synthetic eigenvalue spectrum, largest first: a power law of random steepness."""
    values = np.arange(1, length + 1, dtype=np.float64) ** -rng.uniform(0.3, 3.0)
    return torch.from_numpy(values * rng.uniform(0.5, 2.0, length)).sort(descending=True).values


def random_case(seed):
    """A chain of 3-10 convs (widths 4-512, mostly 3×3) and 0-2 fc layers, with spectra."""
    rng = np.random.default_rng(seed)
    convs, c, hw = [], 3, int(rng.integers(8, 57))
    for i in range(int(rng.integers(3, 11))):
        d = int(np.exp(rng.uniform(np.log(4), np.log(512))))
        k = 1 if rng.random() < 0.15 else 3
        convs.append(ConvSpec(f"conv{i}", c, d, (k, k), (1, 1), (k // 2, k // 2), (hw, hw)))
        c, hw = d, max(2, hw // int(rng.integers(1, 3)))
    linears, rois = [], int(rng.integers(1, 300))
    width = c * hw * hw
    for j in range(int(rng.integers(0, 3))):
        out = int(np.exp(rng.uniform(np.log(4), np.log(512))))
        linears.append(LinearSpec(f"fc{j + 6}", width, out, rois))
        width = out
    eigenvalues = {s.name: decaying(rng, s.out_channels) for s in convs + linears}
    spectra = {
        s.name: decaying(
            rng, min(s.kernel_size[0] * s.in_channels, s.kernel_size[1] * s.out_channels)
        )
        for s in spatial_layers(convs)
    }
    options = SolverOptions(
        speedup=float(rng.uniform(1.2, 6.0)),
        method=str(rng.choice(["asym", "asym3d"])),
        round_ranks_to=int(rng.choice([1, 16])),
        skip=(),
    )
    return convs, linears, eigenvalues, spectra if rng.random() < 0.75 else None, options


def split_pays(spec, width, spatial_rank):
    """Whether a k×1 + 1×k split at d'' is cheaper than the k×k layer of ``width`` filters
    (counted per position from the formulas of the paper's §5.2)."""
    kh, kw = spec.kernel_size
    c = spec.in_channels
    return spatial_rank * (kh * c + kw * width) < width * kh * kw * c


def step_costs(convs, linears, options):
    """Multiply-adds of one rounded rank step of every layer, d' and (3d) d'' (at most): with all
    of them at most 2 % of the budget, a plan can land within 2 % under it."""
    multiples = layer_multiples(convs + linears, options.round_ranks_to)
    steps = []
    for spec in convs + linears:
        step = multiples[spec.name]
        steps.append(step * (spec.fan_in + spec.out_channels) * spec.positions)
        if options.method == "asym3d" and spec in spatial_layers(convs):
            kh, kw = spec.kernel_size
            steps.append(step * (kh * spec.in_channels + kw * spec.out_channels) * spec.positions)
    return steps


def check_case(seed):
    """Plan one random case; returns None if its speedup is impossible, else whether its steps
    are fine enough for the 2 % band (which is then checked)."""
    convs, linears, eigenvalues, spectra, options = random_case(seed)
    try:
        if linears:
            plan = make_network_plan(convs, linears, eigenvalues, options, spatial_spectra=spectra)
        else:
            plan = make_layer_plan(convs, eigenvalues, options, spatial_spectra=spectra)
    except AccelDetError as error:
        assert "impossible" in str(error), (seed, str(error))
        return None
    for spec in convs:
        entry = plan["layers"][spec.name]
        shape = {
            "in_channels": spec.in_channels,
            "out_channels": spec.out_channels,
            "kernel_size": spec.kernel_size,
            "out_hw": spec.out_hw,
        }
        rank, spatial_rank = entry["rank"], entry["spatial_rank"]
        cost = hand_macs(shape, None if rank == spec.out_channels else rank, spatial_rank)
        assert entry["macs"] == cost, (seed, spec.name)
        if entry["structure"] == "original":
            assert cost == hand_macs(shape) and spatial_rank is None, (seed, spec.name)
        else:
            assert cost < hand_macs(shape), (seed, spec.name, entry["structure"], rank)
        if spatial_rank is not None:
            assert split_pays(spec, rank or spec.out_channels, spatial_rank), (seed, spec.name)
    for spec in linears:
        entry = plan["layers"][spec.name]
        if entry["structure"] == "channel":
            assert entry["rank"] * (spec.in_features + spec.out_features) < (
                spec.in_features * spec.out_features
            ), (seed, spec.name)
    achieved = plan["theoretical_speedup_network"] if linears else plan["theoretical_speedup"]
    assert achieved >= options.speedup, (seed, achieved, options.speedup)
    total = sum(conv_macs(s) for s in convs + linears)
    budget, step = total / options.speedup, max(step_costs(convs, linears, options))
    assert total / achieved >= budget - step, (seed, achieved, options.speedup)  # < 1 step unspent
    fine = options.round_ranks_to == 1 or step <= 0.02 * budget
    if fine:
        assert achieved <= 1.02 * options.speedup, (seed, achieved, options.speedup)
    check_plan_pays(plan)
    return fine


def test_every_factorized_layer_pays_and_plans_land_within_two_percent():
    """Every layer pays in all cases, and less than one rank step of the budget is left unspent;
    the 2 % band unrounded, and rounded where every rank step is at most 2 % of the budget (a
    network of a few thin layers rounded to 16 channels may have no plan that close)."""
    results = [check_case(seed) for seed in range(CASES)]
    planned = [r for r in results if r is not None]
    assert len(planned) >= 200 and sum(planned) >= 120, (len(planned), sum(planned))
