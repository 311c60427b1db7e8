"""Plans never pay error for nothing: over random conv + fc networks every factorized layer costs
strictly fewer multiply-adds than the layer it replaces, no d'' passes its break-even rank, and
every plan lands within 2 % under its budget; layers the budget does not need stay original."""

import numpy as np
import pytest
import torch

from accel_det.errors import AccelDetError
from accel_det.models.vgg import vgg16_features
from accel_det.solver import SolverOptions, conv_specs
from accel_det.solver.complexity import ConvSpec, LinearSpec, conv_macs, spatial_macs
from accel_det.solver.joint import make_network_plan
from accel_det.solver.mixed import make_layer_plan
from accel_det.solver.planning import check_plan_pays, spatial_layers
from accel_det.solver.ranks import layer_multiples
from accel_det.solver.splits import spatial_ranks
from tests.helpers import hand_macs

CASES = 260


def decaying(rng, length):
    """A synthetic eigenvalue spectrum, largest first: a power law of random steepness."""
    values = np.arange(1, length + 1, dtype=np.float64) ** -rng.uniform(0.3, 3.0)
    return torch.from_numpy(values * rng.uniform(0.5, 2.0, length)).sort(descending=True).values


def random_case(seed):
    """A chain of 3-10 convs (odd seeds) or 10-16 (even seeds; widths 4-512, mostly 3×3) and 0-2
    fc layers, with spectra."""
    rng = np.random.default_rng(seed)
    convs, c, hw = [], 3, int(rng.integers(8, 57))
    for i in range(int(rng.integers(3, 11) if seed % 2 else rng.integers(10, 17))):
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


def check_splits_needed(plan, convs, budget, where):
    """Every split is needed: leaving any one split layer whole would exceed the budget."""
    spent = sum(entry["macs"] for entry in plan["layers"].values())
    for spec in convs:
        entry = plan["layers"][spec.name]
        if entry["spatial_rank"] is None:
            continue
        rank = entry["rank"] if entry["rank"] != spec.out_channels else None
        shape = {
            k: getattr(spec, k) for k in ("in_channels", "out_channels", "kernel_size", "out_hw")
        }
        assert spent - entry["macs"] + hand_macs(shape, rank) > budget, (where, spec.name)


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
    are fine enough for the 2 % band (which is then checked) and whether it is in the band."""
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
    check_splits_needed(plan, convs, budget, seed)
    in_band = achieved <= 1.02 * options.speedup
    fine = step <= 0.02 * budget
    assert in_band or not fine, (seed, achieved, options.speedup)
    check_plan_pays(plan)
    return fine, in_band


def test_every_factorized_layer_pays_and_plans_land_within_two_percent():
    """Every layer pays in all cases, and less than one rank step of the budget is left unspent;
    the 2 % band where every rank step is at most 2 % of the budget (where one layer is most of
    the work and one of its steps is more, e.g. 18 filters rounded to 4, the plan closest under
    the budget may cost more error than one a few steps cheaper: the greedy of eqs. (13)-(14)
    takes the better one)."""
    planned = [r for r in (check_case(seed) for seed in range(CASES)) if r is not None]
    fine, in_band = (sum(flags) for flags in zip(*planned))
    # measured: 240 planned, 64 with fine steps, 211 in the band (145 of the 147 unrounded)
    assert len(planned) >= 200 and fine >= 50 and in_band >= 0.85 * len(planned)


def power_law(length, exponent):
    return torch.arange(1, length + 1, dtype=torch.float64) ** -exponent


def demo_detector(rois):
    """The demo detector's layers (configs/demo/vgg16_synthetic.yaml: VGG-16 of width 0.125 at
    160×214, fc6/fc7 of 256, 5 classes) at ``rois`` RoIs, the box predictor fixed."""
    convs = conv_specs(vgg16_features(0.125)[:-1], (160, 214))
    linears = [LinearSpec("fc6", 64 * 7 * 7, 256, rois), LinearSpec("fc7", 256, 256, rois)]
    return convs, linears, rois * 256 * (6 + 4 * 5)


@pytest.mark.parametrize("rois", [300, 2000])
@pytest.mark.parametrize("kernel_spectra", [True, False])
def test_demo_detector_plans_keep_every_conv_whose_split_would_not_pay(rois, kernel_spectra):
    """detector_2x / detector_3x of the demo (asym3d, ranks rounded to 16, the whole detector's
    budget): every split pays, and at 2000 RoIs, where fc6 is most of the work, the convs that
    the budget does not need stay original (before, every conv was split at 1.00× or worse, e.g.
    conv5_3 at d'' = 112, 1.17 times the multiply-adds of the original)."""
    convs, linears, fixed = demo_detector(rois)
    g = torch.Generator().manual_seed(0)  # the spectra of tests/solver/test_joint.py
    eigenvalues = {
        s.name: torch.sort(torch.rand(s.out_channels, generator=g) ** 4, descending=True).values
        for s in convs + linears
    }
    spectra = {s.name: power_law(3 * min(s.in_channels, s.out_channels), 1.0) for s in convs}
    for speedup in (2.0, 3.0):
        options = SolverOptions(speedup=speedup, method="asym3d", round_ranks_to=16)
        plan = make_network_plan(
            convs, linears, eigenvalues, options, fixed_macs=fixed,
            spatial_spectra=spectra if kernel_spectra else None,
        )  # fmt: skip
        assert speedup <= plan["theoretical_speedup_network"] <= 1.02 * speedup
        network = plan["original_macs_network"]
        check_splits_needed(plan, convs, network / speedup - fixed, (speedup, kernel_spectra))
        for spec in convs:
            entry = plan["layers"][spec.name]
            if entry["structure"] == "original":
                assert entry["macs"] == entry["original_macs"] and entry["spatial_rank"] is None
                continue
            assert entry["macs"] < entry["original_macs"], (speedup, spec.name)
            if entry["spatial_rank"] is not None:
                width = entry["rank"] or spec.out_channels
                assert split_pays(spec, width, entry["spatial_rank"]), (speedup, spec.name)


@pytest.mark.parametrize("kernel_spectra", [True, False])
def test_a_budget_met_without_splits_splits_nothing(kernel_spectra):
    """The spatial step spends only what the budget needs: with room for every layer whole, none
    is split (before, d'' was raised past the break-even rank to use the room up: conv5_3 of the
    demo at d'' = 112, 1.17 times its multiply-adds); with a little less, each split layer is
    needed, and by filter energy only a few are split (one common ratio splits nearly all)."""
    convs = spatial_layers(demo_detector(2000)[0])[1:]
    dense = sum(conv_macs(s) for s in convs)
    spectra = {s.name: power_law(3 * min(s.in_channels, s.out_channels), 1.0) for s in convs}
    spectra = spectra if kernel_spectra else None
    for round_to in (1, 16):
        assert spatial_ranks(convs, dense * 1.3, round_to=round_to, spectra=spectra) == {}
        assert spatial_ranks(convs, dense, round_to=round_to, spectra=spectra) == {}
        chosen = spatial_ranks(convs, dense * 0.97, round_to=round_to, spectra=spectra)
        costs = {
            s.name: spatial_macs(s, chosen[s.name]) if s.name in chosen else conv_macs(s)
            for s in convs
        }
        assert 0.97 * dense / 1.02 <= sum(costs.values()) <= 0.97 * dense
        assert 0 < len(chosen) < (len(convs) / 2 if kernel_spectra else len(convs) + 1)
        for name, spatial_rank in chosen.items():
            spec = next(s for s in convs if s.name == name)
            assert split_pays(spec, spec.out_channels, spatial_rank)
            assert sum(costs.values()) - costs[name] + conv_macs(spec) > 0.97 * dense
