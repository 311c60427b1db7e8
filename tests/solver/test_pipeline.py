"""``compress()`` end to end on small networks: plans, every method, resume, bad input."""

import json

import pytest
import torch
from torch import nn

from accel_det.errors import AccelDetError
from accel_det.models.vgg import vgg16_features
from accel_det.nn import FactorizedConv2d
from accel_det.solver import METHODS, apply_plan, compress, plan_from_structures
from accel_det.solver.responses import sample_positions
from tests.helpers import SHORT, image_batches, small_net


@pytest.mark.parametrize("method", METHODS)
def test_every_method_meets_the_speedup_and_keeps_the_interface(method):
    net = small_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = compress(
        net, image_batches(), speedup=2.5, method=method, schedule=SHORT, progress=False
    )
    plan = json.loads(json.dumps(result.plan))  # JSON-serialisable
    assert plan["method"] == method
    # d'' in steps of 16 in this tiny net: one step is 8 % of the budget, so a 3d or Jaderberg plan
    # may stay up to a step under it rather than spend more for more error
    tolerance = 0.03 if METHODS[method].spatial else 0.02
    assert 2.5 <= plan["theoretical_speedup"] <= 2.5 * (1 + tolerance)
    assert plan["layers"]["conv1_1"]["structure"] == "original"
    expected = {
        "linear": "channel",
        "nonlinear": "channel",
        "asym": "channel",
        "asym3d": "spatial_channel",
        "jaderberg": "spatial",
        "svd": "channel",
    }
    folded = {
        "channel": "original",
        "spatial_channel": "spatial",
    }  # full-rank layers lose their 1×1 layer
    for name, entry in plan["layers"].items():
        if name != "conv1_1":
            full = entry["rank"] == entry["out_channels"]
            allowed = {folded[expected[method]] if full else expected[method]}
            if method == "asym3d":  # a split only where it is worth its error (filter energy)
                allowed.add("original" if full else "channel")
            assert entry["structure"] in allowed, name
    for entry in plan["layers"].values():
        assert entry["error"] is None or 0 <= entry["error"] < 1.5
    x = torch.rand(2, 3, 24, 24)
    with torch.no_grad():
        assert result.model(x).shape == net(x).shape
    assert all(
        torch.equal(before[k], v) for k, v in net.state_dict().items()
    )  # input left untouched
    assert sum(isinstance(m, FactorizedConv2d) for m in result.model) == 6


def test_plan_rebuilds_the_architecture_and_weights_load():
    net = small_net()
    result = compress(
        net, image_batches(), speedup=3.0, method="asym3d", schedule=SHORT, progress=False
    )
    rebuilt = apply_plan(small_net(seed=1), json.loads(json.dumps(result.plan)))
    rebuilt.load_state_dict(result.model.state_dict())
    x = torch.rand(2, 3, 24, 24)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), result.model(x))


def test_without_rank_selection_ranks_are_uniform():
    net = small_net()
    result = compress(
        net,
        image_batches(),
        speedup=2.0,
        method="asym",
        rank_selection=False,
        schedule=SHORT,
        progress=False,
        round_ranks_to=1,
    )
    layers = result.plan["layers"]
    for name in ("conv2_2", "conv3_2"):
        entry = layers[name]
        fan_in = entry["in_channels"] * 9
        assert entry["rank"] == int(
            entry["out_channels"] * fan_in / (2.0 * (fan_in + entry["out_channels"]))
        )


def test_asymmetric_beats_symmetric_on_a_deep_low_rank_network():
    """Error piles up over layers for the symmetric solution; eq. (12) corrects it (§3.3)."""
    torch.manual_seed(0)
    net = vgg16_features(width=0.125)[:16].eval()  # conv1_1 … conv3_3
    batches = image_batches(count=4, size=32)
    test = torch.rand(8, 3, 32, 32)
    errors = {}
    for method in ("nonlinear", "asym"):
        result = compress(
            net, batches, speedup=3.0, method=method, schedule=((0.01, 5), (1.0, 5)), progress=False
        )
        with torch.no_grad():
            errors[method] = float((result.model(test) - net(test)).norm() / net(test).norm())
    assert errors["asym"] < errors["nonlinear"]


def test_the_layer_log_and_callback_see_every_layer():
    seen = []
    compress(
        small_net(),
        image_batches(),
        speedup=2.0,
        method="linear",
        progress=False,
        on_layer_done=lambda name, entry: seen.append((name, entry["structure"])),
    )
    assert [name for name, _ in seen] == [
        "conv1_1",
        "conv1_2",
        "conv2_1",
        "conv2_2",
        "conv3_1",
        "conv3_2",
        "conv3_3",
    ]


class Stop(Exception):
    pass


def test_resume_after_an_interruption_is_bit_identical(tmp_path):
    net, batches = small_net(), image_batches()
    options = dict(speedup=2.5, method="asym3d", schedule=SHORT, progress=False, seed=3)
    full = compress(net, batches, **options)

    checkpoint = str(tmp_path / "ckpt.pth")

    def stop_after_conv2_1(name, entry):
        if name == "conv2_1":
            raise Stop

    with pytest.raises(Stop):
        compress(net, batches, checkpoint=checkpoint, on_layer_done=stop_after_conv2_1, **options)
    finished = []
    resumed = compress(
        net,
        batches,
        checkpoint=checkpoint,
        resume=True,
        on_layer_done=lambda name, entry: finished.append(name),
        **options,
    )
    assert finished == ["conv2_2", "conv3_1", "conv3_2", "conv3_3"]
    assert resumed.plan["layers"] == full.plan["layers"] or all(
        {k: v for k, v in resumed.plan["layers"][n].items() if k != "seconds"}
        == {k: v for k, v in full.plan["layers"][n].items() if k != "seconds"}
        for n in full.plan["layers"]
    )
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_resume_refuses_a_checkpoint_of_other_options(tmp_path):
    net, batches = small_net(), image_batches()
    checkpoint = str(tmp_path / "ckpt.pth")
    compress(
        net,
        batches,
        speedup=2.0,
        method="asym",
        schedule=SHORT,
        progress=False,
        checkpoint=checkpoint,
    )
    with pytest.raises(AccelDetError, match="speedup"):
        compress(
            net,
            batches,
            speedup=3.0,
            method="asym",
            schedule=SHORT,
            progress=False,
            checkpoint=checkpoint,
            resume=True,
        )


@pytest.mark.parametrize("rank_selection", [True, False])
@pytest.mark.parametrize("change", ["images", "weights"])
def test_resume_refuses_a_checkpoint_of_other_images_or_weights(tmp_path, change, rank_selection):
    """Without rank selection the ranks do not depend on the data: only the checkpoint's
    fingerprints of the image batches and of the weights tell another run's layers apart."""
    net, batches = small_net(), image_batches()
    options = dict(
        speedup=2.5, method="asym", schedule=SHORT, progress=False, rank_selection=rank_selection
    )
    checkpoint = str(tmp_path / "ckpt.pth")

    def stop_after_conv2_1(name, entry):
        if name == "conv2_1":
            raise Stop

    with pytest.raises(Stop):
        compress(net, batches, checkpoint=checkpoint, on_layer_done=stop_after_conv2_1, **options)
    if change == "images":
        batches = image_batches(seed=1)
    else:
        net = small_net(seed=1)
    with pytest.raises(AccelDetError, match=f"was made from other {change}"):
        compress(net, batches, checkpoint=checkpoint, resume=True, **options)
    # the same images as other tensor objects, in other batches of the same order: resumed
    same = torch.cat(image_batches())
    resumed = compress(
        small_net(), [same[:5], same[5:]], checkpoint=checkpoint, resume=True, **options
    )
    assert resumed.plan["layers"]["conv3_3"]["error"] is not None


def test_sampling_is_deterministic_and_bounded():
    a = sample_positions(0, 3, 17, (14, 14), 10)
    assert torch.equal(a, sample_positions(0, 3, 17, (14, 14), 10))
    assert len(set(a.tolist())) == 10 and int(a.max()) < 196
    assert not torch.equal(a, sample_positions(0, 3, 18, (14, 14), 10))
    assert len(sample_positions(0, 0, 0, (2, 2), 10)) == 4
    result = compress(
        small_net(),
        image_batches(count=2),
        speedup=2.0,
        method="linear",
        samples_per_image=5,
        progress=False,
    )
    assert result.plan["num_samples"]["conv3_1"] == 8 * 5
    assert result.plan["num_images"] == 8


def test_one_shot_iterators_and_tuples_are_accepted():
    batches = image_batches()
    result = compress(
        small_net(),
        ((b, torch.zeros(len(b))) for b in batches),
        speedup=2.0,
        method="asym",
        schedule=SHORT,
        progress=False,
    )
    reference = compress(
        small_net(), batches, speedup=2.0, method="asym", schedule=SHORT, progress=False
    )
    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, result.model.state_dict()[key])


class ChangingBatches:
    def __iter__(self):
        return iter(image_batches(seed=int(torch.randint(0, 10**6, (1,)))))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="nope"), "unknown method"),
        (dict(speedup=1.0), "greater than 1"),
        (dict(speedup=float("nan")), "greater than 1"),
        (dict(speedup=500.0), "impossible"),
        (dict(samples_per_image=0), "samples_per_image"),
        (dict(skip=("conv9_9",)), "conv9_9"),
    ],
)
def test_bad_arguments_get_one_clear_error(kwargs, message):
    options = dict(speedup=2.0, method="asym", progress=False)
    options.update(kwargs)
    with pytest.raises(AccelDetError, match=message):
        compress(small_net(), image_batches(count=1), **options)


def test_bad_inputs_get_one_clear_error():
    with pytest.raises(AccelDetError, match="no image batches"):
        compress(small_net(), [], speedup=2.0, progress=False)
    bad = image_batches(count=1)
    bad[0][0, 0, 0, 0] = float("nan")
    with pytest.raises(AccelDetError, match="NaN"):
        compress(small_net(), bad, speedup=2.0, progress=False)
    with pytest.raises(AccelDetError, match=r"layer 0 is followed by GroupNorm \(1\)"):
        compress(
            nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Conv2d(4, 4, 3)),
            image_batches(count=1),
            speedup=2.0,
            progress=False,
        )
    with pytest.raises(AccelDetError, match="single Conv2d"):
        compress(nn.Conv2d(3, 4, 3), image_batches(count=1), speedup=2.0, progress=False)
    with pytest.raises(AccelDetError, match="changed between passes"):
        compress(small_net(), ChangingBatches(), speedup=2.0, method="asym", progress=False)
    broken = small_net()
    with torch.no_grad():
        broken[2].weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(AccelDetError, match="conv1_2"):
        compress(broken, image_batches(count=1), speedup=2.0, progress=False)


def test_dead_filters_are_handled():
    net = small_net()
    with torch.no_grad():
        net[2].weight[:3] = 0
        net[2].bias[:3] = -1.0  # three dead channels after the ReLU
    result = compress(
        net, image_batches(), speedup=2.0, method="asym", schedule=SHORT, progress=False
    )
    assert all(torch.isfinite(v).all() for v in result.model.state_dict().values())


def test_carrying_activations_between_layers_changes_nothing():
    net, batches = small_net(), image_batches()
    options = dict(speedup=2.5, method="asym3d", schedule=SHORT, progress=False)
    carried = compress(net, batches, **options)  # everything fits in the default memory
    recomputed = compress(net, batches, memory=0, **options)
    partly = compress(
        net, batches, memory=3 * 4 * 16 * 12 * 12 * 4 * 3, **options
    )  # only the deeper layers fit
    for key, value in recomputed.model.state_dict().items():
        assert torch.equal(value, carried.model.state_dict()[key]), key
        assert torch.equal(value, partly.model.state_dict()[key]), key


def test_full_rank_layers_fold_the_1x1_layer_away():
    """A layer at full rank d' = d after a factorized one is solved with M folded into it (eq. 12
    makes up for its approximated input); before any factorized layer it keeps its own weights."""
    net = small_net()
    index = {"conv3_3": 14, "conv3_2": 12, "conv3_1": 10, "conv2_2": 7, "conv2_1": 5, "conv1_2": 2}
    seen = set()

    def linear_planner(specs, eigenvalues):  # conv2_1 at half rank, then conv2_2 at full rank
        given = {"conv2_1": {"structure": "channel", "rank": 16}, "conv2_2": {"rank": 32}}
        plan = plan_from_structures(specs, given, method="linear", speedup=1.1)
        for entry in plan["layers"].values():
            entry.update(pca_energy=1.0, error=None, seconds=None)
        return plan

    for method, speedup in (("asym3d", 1.1), ("asym3d", 1.15), ("linear", 1.1)):
        result = compress(
            net, image_batches(), speedup=speedup, method=method, schedule=SHORT, progress=False,
            planner=linear_planner if method == "linear" else None,
        )  # fmt: skip
        layers = result.plan["layers"]
        full = [n for n, e in layers.items() if e["rank"] == e["out_channels"]]
        first = min(index[n] for n, e in layers.items() if e["structure"] != "original")
        for name, entry in layers.items():
            if name in index and index[name] < first:  # untouched: no rank, its own weights
                assert entry["rank"] is None and entry["error"] == 0.0
                assert torch.equal(result.model[index[name]].weight, net[index[name]].weight)
        for name in full:
            entry = layers[name]
            assert index[name] > first or entry["structure"] == "spatial"
            assert entry["error"] is not None
            assert entry["structure"] in ("original", "spatial")
            seen.add((method, entry["structure"]))
            layer = result.model[index[name]]
            assert not isinstance(layer, FactorizedConv2d) or "expand" not in dict(
                layer.named_children()
            )
        assert result.plan["theoretical_speedup"] >= speedup or method == "linear"  # given plan
        rebuilt = apply_plan(small_net(seed=2), result.plan)
        rebuilt.load_state_dict(result.model.state_dict())
        if method == "linear":  # folding is exact: full-rank PCA of a layer's own responses
            for name in full:
                with torch.no_grad():
                    inputs = torch.rand(2, net[index[name]].in_channels, 8, 8)
                    expected = net[index[name]](inputs)
                    assert torch.allclose(result.model[index[name]](inputs), expected, atol=1e-4)
    assert seen == {("asym3d", "original"), ("asym3d", "spatial"), ("linear", "original")}


def test_held_out_error_shows_overfitting_and_is_recorded(caplog):
    """A seeded fraction of the images is kept out of every solve: with few samples per filter the
    held-out error is far above the in-sample one (and a warning says so); with many it is not."""
    net = small_net(width=16)
    few = [torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    with caplog.at_level("WARNING"):
        result = compress(net, few, speedup=2.0, method="asym", samples_per_image=2, schedule=SHORT,
                          progress=False, heldout_fraction=0.3)  # fmt: skip
    plan = result.plan
    assert plan["heldout"]["images"] > 0 and plan["heldout"]["output_error"] > 0
    deep = plan["layers"]["conv3_3"]
    assert deep["heldout_error"] > 1.5 * deep["error"]
    assert any(
        "held-out error" in r.getMessage() and "per filter" in r.getMessage()
        for r in caplog.records
    )

    many = [torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(12)]
    caplog.clear()
    with caplog.at_level("WARNING"):
        again = compress(net, many, speedup=2.0, method="asym", samples_per_image=64,
                         schedule=SHORT, progress=False, heldout_fraction=0.3)  # fmt: skip
    deep = again.plan["layers"]["conv3_3"]
    assert deep["heldout_error"] < 1.5 * deep["error"] + 0.02
    assert not any("held-out error" in r.getMessage() for r in caplog.records)
    none = compress(net, many[:2], speedup=2.0, progress=False, schedule=SHORT, heldout_fraction=0)
    assert "heldout" not in none.plan and none.plan["layers"]["conv3_3"]["heldout_error"] is None
