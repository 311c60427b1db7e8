"""A conv shared over several maps (an FPN's RPN head): its cost and its sampled responses."""

import numpy as np
import pytest
import torch
from torch import nn

from accel_det.errors import AccelDetError
from accel_det.solver.complexity import conv_macs, structure_macs
from accel_det.solver.shared import SharedConvSampler, map_positions, shared_conv_spec

SIZES = [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]


class Pyramid(nn.Module):
    """Maps of several sizes from one image, and a conv run on each (an FPN and its RPN conv)."""

    def __init__(self, channels=6, width=5):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.head = nn.Conv2d(channels, width, 3, padding=1)

    def maps(self, images):
        x = self.stem(images)
        return [nn.functional.adaptive_avg_pool2d(x, size) for size in SIZES]

    def forward(self, images):
        return [torch.relu(self.head(m)) for m in self.maps(images)]


def test_the_cost_is_the_sum_over_the_maps_as_the_layers_run():
    torch.manual_seed(0)
    net = Pyramid()
    spec = shared_conv_spec("head", net.head, SIZES)
    counted = []
    net.head.register_forward_hook(
        lambda m, a, out: counted.append(out.numel() * m.weight[0].numel())
    )
    net(torch.zeros(1, 3, 32, 48))
    assert conv_macs(spec) == sum(counted)
    # the 3d structure's k×1 layer runs at stride 1 on every output position too
    for d2 in (1, 3, 7):
        vertical = d2 * 3 * 6 * sum(h * w for h, w in SIZES)
        horizontal = d2 * 3 * 5 * sum(h * w for h, w in SIZES)
        assert structure_macs(spec, "spatial", spatial_rank=d2) == vertical + horizontal


def test_a_strided_shared_conv_is_refused():
    with pytest.raises(AccelDetError, match="stride 1 only"):
        shared_conv_spec("head", nn.Conv2d(4, 4, 3, stride=2, padding=1), SIZES)


@pytest.mark.parametrize("seed", range(20))
def test_positions_are_distinct_in_range_and_spread_by_area(seed):
    rng = np.random.default_rng(seed)
    sizes = [tuple(int(v) for v in rng.integers(1, 20, 2)) for _ in range(rng.integers(1, 6))]
    count = int(rng.integers(1, 400))
    positions = map_positions(seed, 3, sizes, count)
    assert len(positions) == len(sizes)
    total = sum(h * w for h, w in sizes)
    assert sum(len(p) for p in positions) == min(count, total)
    for p, (h, w) in zip(positions, sizes):
        assert len(set(p.tolist())) == len(p) and all(0 <= v < h * w for v in p.tolist())
    assert [p.tolist() for p in map_positions(seed, 3, sizes, count)] == [
        p.tolist() for p in positions
    ]


def test_positions_are_uniform_over_all_maps():
    drawn = np.zeros(len(SIZES))
    for image in range(400):
        drawn += [len(p) for p in map_positions(0, image, SIZES, 20)]
    areas = np.array([h * w for h, w in SIZES], dtype=float)
    expected = 400 * 20 * areas / areas.sum()
    assert np.all(np.abs(drawn - expected) < 4 * np.sqrt(expected) + 2)


def test_samples_are_the_conv_responses_at_their_positions():
    torch.manual_seed(0)
    net = Pyramid()
    batches = [torch.randn(2, 3, 32, 48), torch.randn(1, 3, 32, 48)]

    def maps(model, images):
        return model.maps(images)

    sampler = SharedConvSampler(net.head, maps, batches, 30, seed=1, progress=False)
    rows, owners = sampler.original(net)
    assert rows.shape == (90, 5) and owners.tolist() == [0] * 30 + [1] * 30 + [2] * 30
    # brute force: the pre-ReLU outputs of the head on every map, at the drawn positions
    images = torch.cat(batches)
    with torch.no_grad():
        outputs = [net.head(m) for m in net.maps(images)]
    expected = []
    for index in range(3):
        where = map_positions(1, index, SIZES, 30)
        for out, p in zip(outputs, where):
            expected.append(out[index].flatten(1)[:, p].T)
    assert torch.allclose(rows, torch.cat(expected), atol=1e-5)
    same, _ = sampler.regressed(net, "head", [net.head])
    assert torch.equal(same, rows)
    other = Pyramid()
    changed, _ = sampler.regressed(other, "head", [net.head])
    assert changed.shape == rows.shape and not torch.allclose(changed, rows)
