"""Multiply-add counts against the paper's Table 6 and against fvcore's counter."""

import pytest
import torch
from fvcore.nn import FlopCountAnalysis
from torch import nn

from accel_det.models.vgg import vgg16_features
from accel_det.nn import FactorizedConv2d
from accel_det.solver import conv_specs, structure_macs, uniform_ranks, whole_model_speedup
from accel_det.solver.complexity import ConvSpec

# Table 6 (VGG-16, conv1_2 … conv5_3; conv1_1 stays at 64).
TABLE6_NO = {
    2: [28, 52, 57, 104, 115, 115, 209, 230, 230, 230, 230, 230],
    3: [19, 34, 38, 69, 76, 76, 139, 153, 153, 153, 153, 153],
    4: [14, 26, 28, 52, 57, 57, 104, 115, 115, 115, 115, 115],
}
TABLE6_YES = {
    2: [18, 41, 50, 94, 96, 116, 207, 213, 260, 467, 455, 442],
    3: [15, 31, 34, 68, 64, 75, 134, 126, 146, 312, 307, 294],
    4: [11, 25, 28, 52, 46, 56, 104, 92, 100, 232, 224, 214],
}


@pytest.fixture(scope="module")
def vgg_specs():
    return conv_specs(vgg16_features(), (224, 224))


def test_vgg16_total_and_shares_match_table5(vgg_specs):
    total = sum(structure_macs(s, "original") for s in vgg_specs)
    assert total == pytest.approx(15.35e9, rel=1e-3)
    shares = {s.name: 100 * structure_macs(s, "original") / total for s in vgg_specs}
    assert shares["conv1_1"] == pytest.approx(0.6, abs=0.05)
    assert shares["conv1_2"] == pytest.approx(12.0, abs=0.1)
    assert shares["conv5_3"] == pytest.approx(3.0, abs=0.05)


@pytest.mark.parametrize("speedup", [2, 3, 4])
def test_uniform_ranks_are_table6_rows_without_rank_selection(vgg_specs, speedup):
    assert list(uniform_ranks(vgg_specs[1:], speedup).values()) == TABLE6_NO[speedup]


@pytest.mark.parametrize("table", ["no", "yes"])
@pytest.mark.parametrize("speedup", [2, 3, 4])
def test_table6_ranks_give_whole_model_speedup(vgg_specs, speedup, table):
    ranks = (TABLE6_NO if table == "no" else TABLE6_YES)[speedup]
    layers = {s.name: {"structure": "channel", "rank": r} for s, r in zip(vgg_specs[1:], ranks)}
    # conv1_1 is absent from ``layers``, so it counts at full cost; Table 6's figures.
    expected = {
        ("no", 2): 2.002,
        ("no", 3): 2.993,
        ("no", 4): 3.976,
        ("yes", 2): 2.001,
        ("yes", 3): 3.004,
        ("yes", 4): 4.005,
    }
    assert whole_model_speedup(vgg_specs, layers) == pytest.approx(
        expected[table, speedup], abs=6e-4
    )


def _fvcore_macs(module, shape):
    counter = FlopCountAnalysis(module, torch.zeros(shape))
    counter.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return counter.total()


@pytest.mark.parametrize(
    "structure, rank, spatial_rank, stride",
    [
        ("original", None, None, 1),
        ("channel", 5, None, 1),
        ("spatial", None, 4, 1),
        ("spatial_channel", 5, 4, 1),
        ("channel", 5, None, 2),
        ("spatial_channel", 3, 2, 2),
    ],
)
def test_structure_macs_agree_with_fvcore(structure, rank, spatial_rank, stride):
    c, d, size = 6, 10, 13
    if structure == "original":
        module = nn.Conv2d(c, d, 3, stride, 1)
    else:
        module = FactorizedConv2d(
            c, d, 3, stride, 1, structure=structure, rank=rank, spatial_rank=spatial_rank
        )
    out = module(torch.zeros(1, c, size, size)).shape[2:]
    spec = ConvSpec("conv", c, d, (3, 3), (stride, stride), (1, 1), tuple(out), in_hw=(size, size))
    assert structure_macs(spec, structure, rank, spatial_rank) == _fvcore_macs(
        module, (1, c, size, size)
    )


def test_vgg16_counts_agree_with_fvcore():
    features = vgg16_features(width=0.25)
    specs = conv_specs(features, (64, 48))
    assert sum(structure_macs(s, "original") for s in specs) == _fvcore_macs(
        features, (1, 3, 64, 48)
    )
