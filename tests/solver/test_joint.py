"""One budget over conv and fc layers: the whole-network speedup is met, the greedy against an
exhaustive search, impossible targets refused."""

import itertools

import pytest
import torch

from accel_det.errors import AccelDetError
from accel_det.models.vgg import vgg16_features
from accel_det.solver import SolverOptions, conv_specs
from accel_det.solver.complexity import ConvSpec, LinearSpec, conv_macs
from accel_det.solver.joint import make_network_plan
from accel_det.solver.ranks import channel_cost_table, product_energy


def spectra(specs, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        s.name: torch.sort(torch.rand(s.out_channels, generator=g) ** 4, descending=True).values
        for s in specs
    }


def detector_layers(rois=2000, hw=(600, 1000)):
    convs = conv_specs(vgg16_features(1.0)[:-1], hw)
    linears = [LinearSpec("fc6", 25088, 4096, rois), LinearSpec("fc7", 4096, 4096, rois)]
    return convs, linears, rois * 4096 * (21 + 80)


@pytest.mark.parametrize("method", ["asym", "asym3d"])
@pytest.mark.parametrize("speedup", [2.0, 3.0, 4.0])
def test_whole_detector_speedup_is_met_within_two_percent(method, speedup):
    convs, linears, fixed = detector_layers()
    options = SolverOptions(speedup=speedup, method=method)
    plan = make_network_plan(convs, linears, spectra(convs + linears), options, fixed_macs=fixed)
    achieved = plan["theoretical_speedup_network"]
    assert speedup <= achieved <= 1.02 * speedup
    total = sum(conv_macs(s) for s in convs + linears) + fixed
    assert plan["original_macs_network"] == total
    assert plan["layers"]["fc6"]["structure"] == "channel"  # fc6 is most of the work at 2000 RoIs
    assert plan["theoretical_speedup"] < achieved  # the conv layers alone need less


def test_rounded_ranks_keep_the_budget_and_the_multiple():
    convs, linears, fixed = detector_layers()
    options = SolverOptions(speedup=4.0, method="asym3d", round_ranks_to=16)
    plan = make_network_plan(convs, linears, spectra(convs + linears), options, fixed_macs=fixed)
    assert 4.0 <= plan["theoretical_speedup_network"] <= 4.08
    for name, entry in plan["layers"].items():
        for key in ("rank", "spatial_rank"):
            value, full = entry.get(key), entry.get("out_channels", entry.get("out_features"))
            assert value is None or value % 16 == 0 or value == full or key == "spatial_rank", name


def test_the_greedy_matches_exhaustive_search_on_a_tiny_mixed_instance():
    convs = [
        ConvSpec("conv1_1", 3, 6, (3, 3), (1, 1), (1, 1), (8, 8)),
        ConvSpec("conv1_2", 6, 6, (3, 3), (1, 1), (1, 1), (8, 8)),
    ]
    linears = [LinearSpec("fc6", 24, 8, rois=20)]
    layers = convs[1:] + linears  # conv1_1 skipped
    tables = {s.name: channel_cost_table(s) for s in layers}
    total = sum(conv_macs(s) for s in convs + linears)
    for seed in range(5):
        eigenvalues = spectra(convs + linears, seed)
        for speedup in (1.3, 1.6, 2.0):
            plan = make_network_plan(
                convs,
                linears,
                eigenvalues,
                SolverOptions(speedup=speedup, method="asym", round_ranks_to=1),
            )
            chosen = {n: plan["layers"][n]["rank"] for n in tables}
            budget = total / speedup - conv_macs(convs[0])
            best = max(
                product_energy(eigenvalues, dict(zip(tables, ranks)))
                for ranks in itertools.product(*[range(1, len(t) + 1) for t in tables.values()])
                if sum(tables[n][r - 1] for n, r in zip(tables, ranks)) <= budget
            )
            assert sum(tables[n][r - 1] for n, r in chosen.items()) <= budget
            assert product_energy(eigenvalues, chosen) == pytest.approx(best, rel=1e-9), (
                seed,
                speedup,
            )


def test_conv_target_and_fixed_fc_ranks():
    convs, linears, fixed = detector_layers(rois=300)
    options = SolverOptions(speedup=4.0, method="asym3d")
    plan = make_network_plan(
        convs, linears, spectra(convs + linears), options, fixed_macs=fixed, target="conv",
        fc_ranks={"fc6": 1024, "fc7": 256},
    )  # fmt: skip
    assert 4.0 <= plan["theoretical_speedup"] <= 4.08
    assert (plan["layers"]["fc6"]["rank"], plan["layers"]["fc7"]["rank"]) == (1024, 256)
    assert plan["layers"]["fc6"]["macs"] == 1024 * (25088 + 4096) * 300


def test_an_impossible_whole_network_speedup_is_refused():
    convs, linears, fixed = detector_layers()
    with pytest.raises(AccelDetError, match="impossible .* at most"):
        make_network_plan(
            convs, linears, spectra(convs + linears), SolverOptions(speedup=500, method="asym"),
            fixed_macs=fixed,
        )  # fmt: skip
