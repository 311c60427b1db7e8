"""The speed benchmark's runtime axis (accel_det.benchmarks.runtimes / runtime_axis /
layers / subjects, tools/benchmark_runtimes.py): every form computes what eager PyTorch computes,
multiply-adds and speedups recounted by hand, per-layer times attributed to the right layer, and a
tiny end-to-end run whose record is consistent with itself."""

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from accel_det.benchmarks import layers, macs, runtime_axis, runtimes, subjects
from accel_det.nn.chain import conv_names
from accel_det.nn.network import apply_plan
from tests.helpers import REPO, hand_macs, load_tool, small_net

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("form", runtimes.CPU_FORMS)
def test_every_cpu_form_computes_what_eager_pytorch_computes(form, tmp_path):
    torch.manual_seed(0)
    features = small_net(8)
    x = torch.randn(1, 3, 32, 32)
    expected = features(x)
    path = ""
    if form in runtimes.EXPORTED:
        path = runtimes.export_onnx(features, (x,), str(tmp_path / "m.onnx"))
    if form in runtimes.INT8_FORMS:  # calibrated on the input it is timed on
        runtimes.quantize_for_timing(path, (x,), runtimes.int8_path(path))
    call = runtimes.build_call(form, features, (x,), threads=1, onnx_path=path)
    with torch.inference_mode():
        got = call()
    got = torch.as_tensor(got[0] if isinstance(got, list) else got).float()
    assert got.shape == expected.shape
    # bfloat16 keeps 8 bits of mantissa, int8 256 levels per tensor
    tolerance = {"fp32": 1e-4, "bf16": 5e-2, "int8": 5e-2}[runtimes.form_precision(form)]
    assert (got - expected).abs().max() <= tolerance * expected.abs().max()
    if form in runtimes.INT8_FORMS:  # not float32 in disguise
        assert (got - expected).abs().max() > 1e-5 * expected.abs().max()


def test_unknown_forms_are_refused():
    from accel_det.errors import AccelDetError

    with pytest.raises(AccelDetError, match="unknown form"):
        runtimes.forms_for(torch.device("cpu"), ["tensorrt"])
    with pytest.raises(AccelDetError, match="unknown form"):
        runtimes.forms_for(torch.device("cpu"), ["cuda fp16 channels_last"])


def test_multiply_adds_are_counted_as_by_hand():
    conv = nn.Conv2d(5, 7, 3, padding=1)
    linear = nn.Linear(11, 13)
    counts = macs.layer_macs(conv, (torch.randn(2, 5, 6, 4),))
    layer = {"in_channels": 5, "out_channels": 7, "kernel_size": (3, 3), "out_hw": (6, 4)}
    assert counts == {"": 2 * hand_macs(layer)}
    assert macs.layer_macs(linear, (torch.randn(17, 11),)) == {"": 17 * 11 * 13}


def test_speedups_and_best_against_best_are_ratios_of_medians():
    rows = [
        {"case": "c", "model": "original", "form": "a", "threads": 1, "median_ms": 100.0},
        {"case": "c", "model": "original", "form": "b", "threads": 1, "median_ms": 80.0},
        {"case": "c", "model": "m", "form": "a", "threads": 1, "median_ms": 20.0},
        {"case": "c", "model": "m", "form": "b", "threads": 1, "median_ms": 40.0},
    ]
    for row in rows:
        row["theoretical"] = 1.0 if row["model"] == "original" else 4.0
    runtime_axis.add_speedups(rows)
    assert [r["speedup"] for r in rows] == [1.0, 1.0, 5.0, 2.0]
    assert rows[2]["ratio"] == 1.25
    (best,) = runtime_axis.best_against_best(rows)
    # the original's best form (b, 80 ms) against the model's best form (a, 20 ms)
    assert (best["original_form"], best["form"], best["speedup"]) == ("b", "a", 4.0)
    assert best["ratio"] == 1.0


def test_best_against_best_takes_the_originals_fastest_fp32_form_as_reference():
    rows = [
        {"case": "c", "model": "original", "form": "openvino", "median_ms": 100.0},
        {"case": "c", "model": "original", "form": "openvino int8", "median_ms": 50.0},
        {"case": "c", "model": "m", "form": "openvino", "median_ms": 40.0},
        {"case": "c", "model": "m", "form": "openvino int8", "median_ms": 10.0},
    ]
    for row in rows:
        row.update(threads=1, theoretical=1.0 if row["model"] == "original" else 4.0)
    (best,) = runtime_axis.best_against_best(rows)
    assert (best["original_form"], best["form"], best["speedup"]) == (
        "openvino",
        "openvino int8",
        10.0,
    )
    by = {r["precision"]: r for r in runtime_axis.best_by_precision(rows)}
    assert (by["fp32"]["speedup"], by["int8"]["speedup"]) == (2.5, 5.0)
    assert by["int8"]["original_form"] == "openvino int8" and by["int8"]["ratio"] == 1.25


def test_the_int8_targets_read_int8_against_fp32_and_int8_against_int8():
    from accel_det.benchmarks.runtime_tables import target_lines

    case = {"case": "detector 600x1000, 2000 RoIs", "threads": 1}
    rows = [
        {**case, "model": "original", "form": "openvino", "median_ms": 9000.0},
        {**case, "model": "original", "form": "onnxruntime", "median_ms": 8000.0},
        {**case, "model": "original", "form": "openvino int8", "median_ms": 5000.0},
        {**case, "model": "detector 4x", "form": "openvino int8", "median_ms": 700.0,
         "ratio": 0.8},
        {**case, "model": "detector 4x", "form": "onnxruntime int8", "median_ms": 1400.0,
         "ratio": 0.5},
    ]  # fmt: skip
    lines = target_lines(rows, [])
    assert lines[6].endswith(f"target 10, measured {8000 / 700:.2f} (worst case): met")
    assert lines[7].endswith("target 0.75, measured 0.80 (worst case): met")


def test_per_layer_times_are_attributed_to_their_layer(tmp_path):
    """One conv layer is made far heavier than the others: both profiles must put the largest
    time on it (a wrong node-to-layer mapping puts it elsewhere)."""
    torch.manual_seed(0)
    features = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 192, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(192, 8, 3, padding=1),
        nn.ReLU(),
    ).eval()
    x = torch.randn(1, 3, 48, 48)
    path = runtimes.export_onnx(features, (x,), str(tmp_path / "f.onnx"))
    eager = layers.eager_conv_ms(features, x)
    ort = layers.onnxruntime_conv_ms(path, features, x, runs=3)
    assert sorted(eager) == sorted(ort) == [0, 2, 4, 6]
    heavy = {4, 6}  # 8 -> 192 and 192 -> 8: 24x the multiply-adds of conv 2
    assert max(eager, key=eager.get) in heavy and max(ort, key=ort.get) in heavy
    assert min(ort, key=ort.get) not in heavy and min(eager, key=eager.get) not in heavy


def test_layer_profile_recounts_each_layers_flop_ratio():
    features = small_net(8)
    plan = {
        "layers": {
            "conv1_2": {"structure": "channel", "rank": 3},
            "conv3_3": {"structure": "spatial_channel", "rank": 16, "spatial_rank": 8},
        }
    }
    names = conv_names(features)
    assert "conv1_2" in names and "conv3_3" in names
    model = apply_plan(features, plan).eval()
    x = torch.randn(1, 3, 16, 16)
    index = {n: i for n, i in names.items()}
    fake = {i: 1.0 for i in index.values()}
    profile = layers.layer_profile(
        features, model, x, {"f": (fake, {**fake, index["conv1_2"]: 2.0})}
    )
    by = {r["layer"]: r for r in profile}
    c12 = {"in_channels": 8, "out_channels": 8, "kernel_size": (3, 3), "out_hw": (16, 16)}
    c33 = {"in_channels": 32, "out_channels": 32, "kernel_size": (3, 3), "out_hw": (4, 4)}
    assert by["conv1_2"]["theoretical"] == pytest.approx(hand_macs(c12) / hand_macs(c12, 3))
    assert by["conv3_3"]["theoretical"] == pytest.approx(hand_macs(c33) / hand_macs(c33, 16, 8))
    assert by["conv1_1"]["theoretical"] == 1.0
    # every layer at its FLOP ratio but conv1_2, which took twice its original's time: worst first
    at_ratio = {index[n]: 1.0 / by[n]["theoretical"] for n in index}
    timings = {"f": (fake, {**at_ratio, index["conv1_2"]: 2.0})}
    profile = layers.layer_profile(features, model, x, timings)
    assert profile[0]["layer"] == "conv1_2" and profile[0]["f"]["speedup"] == 0.5
    assert all(r["f"]["ratio"] == pytest.approx(1.0) for r in profile[1:])


# the end-to-end run's forms: each runtime and precision once (eager and TorchScript have their
# own test above and take long to build for every subject)
FORMS = ["channels_last", "onnxruntime", "openvino", "openvino bf16", "onnxruntime int8",
         "openvino int8"]  # fmt: skip


def test_runtime_benchmark_end_to_end_record_is_consistent(tmp_path):
    out = tmp_path / "rt"
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "benchmark_runtimes.py"), "--output", str(out)]
        + "--width 0.25 --speedup 2 --backbone-sizes 64 --detector-size 64x96 --rois 40 "
        "--threads 1 --seconds 0.2 --resnet --forms".split()
        + FORMS,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((out / "benchmark_runtimes.json").read_text())
    rows = record["rows"]
    cases = {r["case"] for r in rows}
    assert cases == {"backbone 64x64", "detector 64x96, 40 RoIs"}
    backbone = [r for r in rows if r["case"] == "backbone 64x64"]
    models = {r["model"] for r in backbone}
    assert models == {
        "original", "asym", "asym3d", "asym, ranks x16", "asym3d, ranks x16",
        "asym, ranks x16, conv1_2 kept", "asym3d, ranks x16, conv1_2 kept",
    }  # fmt: skip
    assert len(backbone) == len(models) * len(FORMS)
    assert {r["precision"] for r in rows} == {"fp32", "bf16", "int8"}
    for row in rows:  # speedups are the ratio of the two medians
        base = next(
            r for r in rows
            if (r["case"], r["form"], r["model"]) == (row["case"], row["form"], "original")
        )  # fmt: skip
        assert row["speedup"] == pytest.approx(base["median_ms"] / row["median_ms"])
        base_macs = base["macs"]
        assert row["theoretical"] == pytest.approx(base_macs / row["macs"])
    for best in record["best"]:
        candidates = [r for r in rows if r["case"] == best["case"] and r["model"] == best["model"]]
        assert best["median_ms"] == min(r["median_ms"] for r in candidates)
        originals = [r for r in rows if r["case"] == best["case"] and r["model"] == "original"]
        fp32 = min(r["median_ms"] for r in originals if r["precision"] == "fp32")
        assert best["original_ms"] == fp32  # the reference: the original's fastest fp32 form
    int8 = [b for b in record["best_by_precision"] if b["precision"] == "int8"]
    assert int8 and all(b["original_form"].endswith("int8") for b in int8)
    detector = next(r for r in record["best"] if r["case"].startswith("detector"))
    assert detector["theoretical"] == pytest.approx(2.0, rel=0.02)  # the budget, within 2 %
    stages = record["stages"]["detector 64x96, 40 RoIs"]
    assert set(next(iter(stages.values()))) == {
        "backbone", "RoI pooling", "fc6", "fc7", "predictor", "post-processing",
    }  # fmt: skip
    assert record["profiles"]["backbone 64x64"]["asym, ranks x16"][0]["layer"].startswith("conv")
    assert (out / "benchmark_runtimes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "benchmark_runtimes.md").read_text()
    assert "## Best form against best form" in text and "## Targets" in text
    assert "int8 in its fastest runtime against the original's fastest fp32 form" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--speedup", "1"], "argument --speedup: must be greater than 1, got 1"),
        (["--rois", "0"], "argument --rois: must be at least 1, got 0"),
    ],
)
def test_runtime_benchmark_refuses_bad_options_in_one_line(argv, message, tmp_path, capsys):
    tool = load_tool("benchmark_runtimes")
    code = tool.run_tool(tool.main, tool.build_parser(), argv + ["--output", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "form, tolerance", [("cuda fp32 channels_last", 1e-4), ("cuda bf16 channels_last", 5e-2)]
)
def test_the_gpu_forms_compute_what_eager_pytorch_computes(form, tolerance):
    """The GPU forms' code (cast, channels_last) run on the CPU, where no GPU is at hand."""
    torch.manual_seed(0)
    features = small_net(8)
    x = torch.randn(1, 3, 32, 32)
    expected = features(x)
    call = runtimes.build_call(form, features, (x,), device=torch.device("cpu"))
    with torch.inference_mode():
        got = call().float()
    assert (got - expected).abs().max() <= tolerance * expected.abs().max()


def test_targets_judge_the_default_plans_worst_case():
    from accel_det.benchmarks.runtime_tables import target_lines

    best = [
        {"case": "backbone 224x224", "threads": 1, "model": "asym, ranks x16", "ratio": 0.93},
        {"case": "backbone 600x1000", "threads": 1, "model": "asym, ranks x16", "ratio": 0.88},
        {"case": "backbone 600x1000", "threads": 1, "model": "asym, ranks x16, conv1_2 kept",
         "ratio": 0.97},
        {"case": "backbone 224x224", "threads": 2, "model": "asym, ranks x16", "ratio": 0.1},
        {"case": "backbone 224x224", "threads": 1, "model": "asym3d, ranks x16", "ratio": 0.86},
    ]  # fmt: skip
    lines = target_lines([], best)
    assert lines[0].endswith("measured 0.88 (worst case): NOT met (keeping more layers: 0.97)")
    assert lines[1].endswith("measured 0.86 (worst case): met")
    assert lines[2].endswith("not measured") and lines[3].endswith("not measured")


def test_a_plan_made_elsewhere_is_timed_and_one_that_does_not_fit_is_refused():
    from accel_det.benchmarks.forms import random_features
    from accel_det.errors import AccelDetError
    from accel_det.solver import plan_from_structures
    from accel_det.solver.network import conv_specs

    def plan_at(width):
        specs = conv_specs(random_features(width), (64, 64))
        return plan_from_structures(specs, {"conv2_1": {"structure": "channel", "rank": 4}})

    found = subjects.backbone_subjects(
        0.25, (64, 64), speedup=2, extra_plans={"mine": plan_at(0.25)}, num_images=2,
        samples_per_image=20,
    )  # fmt: skip
    mine = next(s for s in found if s.name == "mine")
    layers_ = [
        {"name": s.name, "in_channels": s.in_channels, "out_channels": s.out_channels,
         "kernel_size": (3, 3), "out_hw": s.out_hw}
        for s in conv_specs(random_features(0.25), (64, 64))
    ]  # fmt: skip
    from tests.helpers import hand_speedup

    assert mine.theoretical == pytest.approx(hand_speedup(layers_, {"conv2_1": 4}))
    with pytest.raises(AccelDetError, match="plan wide does not fit VGG-16 at width 0.25"):
        subjects.backbone_subjects(
            0.25, (64, 64), speedup=2, extra_plans={"wide": plan_at(0.5)}, num_images=2,
            samples_per_image=20,
        )  # fmt: skip


def test_a_missing_plan_file_is_refused_in_one_line(tmp_path, capsys):
    tool = load_tool("benchmark_runtimes")
    argv = ["--plan", str(tmp_path / "nope.json"), "--output", str(tmp_path)]
    code = tool.run_tool(tool.main, tool.build_parser(), argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"error: plan file not found: {tmp_path / 'nope.json'}"


def test_resnet_subjects_meet_their_speedups_and_the_targets_read_them():
    from accel_det.benchmarks.runtime_tables import target_lines

    found = subjects.resnet_subjects(
        "resnet18", (64, 64), speedups=(2.0,), num_images=2, samples_per_image=20
    )
    assert [s.name for s in found] == ["original", "asym 2x", "asym3d 2x"]
    x = torch.randn(1, 3, 64, 64)
    for subject in found[1:]:
        # the plan's count (conv layers) is the timed module's, within the ranks' rounding
        assert subject.theoretical == pytest.approx(subject.plan["theoretical_speedup"])
        assert 2.0 <= subject.theoretical < 2.2 and subject.plan["skip"] == ["conv1"]
        with torch.inference_mode():
            assert torch.isfinite(subject.module(x)).all()
    case = {"case": "resnet50 224x224", "threads": 1}
    best = [
        {**case, "model": "asym 2x", "speedup": 1.85},
        {**case, "model": "asym3d 2x", "speedup": 1.7},
    ]
    lines = target_lines([], best)
    assert lines[4].endswith("measured 1.85 (worst case): met")
    assert lines[5].endswith("measured 1.70 (worst case): NOT met")
