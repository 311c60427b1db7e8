"""Held-out images: exactly max(1, round(fraction·N)) of N ≥ 2, the same in every process, a
warning when none can be held out, and the overfit warning where samples per filter are few."""

import logging

import numpy as np
import pytest
import torch

from accel_det.solver import compress
from accel_det.solver.heldout import heldout_set, split_rows
from tests.helpers import SHORT, small_net


@pytest.mark.parametrize("count", [2, 3, 9, 16, 25, 100, 501])
@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.3, 0.5, 0.9])
def test_exactly_the_fraction_is_held_out(count, fraction):
    images = torch.arange(1000, 1000 + count)
    held = heldout_set(images, fraction, seed=3)
    assert len(held) == min(count - 1, max(1, round(fraction * count)))
    assert len(set(held.tolist())) == len(held) and set(held.tolist()) <= set(images.tolist())


def test_sixteen_images_at_a_tenth_hold_out_two_whatever_the_seed():
    images = torch.arange(16)
    for seed in range(50):
        assert len(heldout_set(images, 0.1, seed)) == 2
    # the former rule, one draw per image, held out none of them for 19 % of the seeds (seed 0)
    assert not any(np.random.default_rng([0, i, 7]).random() < 0.1 for i in range(16))


def test_the_choice_depends_on_the_images_and_seed_only():
    """Every process passes the pooled image indices of all processes, in any order and with a
    row per sample: the same images are held out; samples of one image stay together."""
    images = torch.arange(40) * 7
    held = heldout_set(images, 0.1, seed=5)
    shards = [images[rank::3] for rank in range(3)]
    pooled = torch.cat([shards[2], shards[0], shards[1]]).repeat_interleave(6)  # 6 rows an image
    assert torch.equal(heldout_set(pooled, 0.1, seed=5), held)
    rows = split_rows(pooled, 0.1, seed=5)
    assert int(rows.sum()) == 6 * len(held)
    assert set(pooled[rows].tolist()) == set(held.tolist())
    assert not torch.equal(heldout_set(images, 0.1, seed=6), held)  # the seed matters


def test_no_image_to_hold_out_is_said_once(caplog):
    with caplog.at_level(logging.WARNING):
        assert len(heldout_set(torch.tensor([4, 4, 4]), 0.1, seed=0)) == 0
    assert len(caplog.records) == 1 and "none can be held out" in caplog.records[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert len(heldout_set(torch.tensor([4]), 0.0, seed=0)) == 0  # not asked for: silent
        assert len(heldout_set(torch.tensor([4]), 0.1, seed=0, warn=False)) == 0
    assert not caplog.records


def test_sixteen_images_at_few_samples_per_filter_warn_of_overfitting(caplog):
    """``--num-images 16 --samples-per-image 40`` for VGG-16's conv5 (512 filters): 14 images
    solved, 560 samples, 1.09 per filter. Here the same ratio in the 7-conv test net, whose last
    block has 64 filters, at 5 samples per image: 70 samples for 64 filters (a full VGG-16 takes
    minutes). With the default seed the former rule held out no image, so no warning could
    fire."""
    net = small_net(width=16)
    images = torch.randn(16, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    batches = [images[i : i + 4] for i in range(0, 16, 4)]
    with caplog.at_level(logging.WARNING):
        result = compress(net, batches, speedup=2.0, method="asym", samples_per_image=5,
                          schedule=SHORT, progress=False, heldout_fraction=0.1)  # fmt: skip
    assert result.plan["heldout"]["images"] == 2
    assert result.plan["num_samples"]["conv3_3"] == 80
    warned = [r.getMessage() for r in caplog.records if "held-out error" in r.getMessage()]
    assert any(m.startswith("conv3_") and "70 samples for 64 filters" in m for m in warned)
