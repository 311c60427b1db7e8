"""The speed benchmark (accel_det.benchmark.speed, tools/benchmark_speed.py): multiply-add counts
against fvcore, rounded spatial ranks, the inference-only fused form, the shared timer, and a
tiny end-to-end run of the tool."""

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict

import pytest
import torch

from accel_det.benchmarks import fast_rcnn, forms, macs, speed
from accel_det.benchmarks import plans as bench_plans
from accel_det.errors import AccelDetError
from accel_det.models.vgg import vgg16_features
from accel_det.nn import CHANNEL, SPATIAL, SPATIAL_CHANNEL
from accel_det.solver import plan_from_structures
from accel_det.solver.complexity import conv_macs, structure_macs
from accel_det.solver.network import conv_specs
from accel_det.solver.ranks import budget_macs
from accel_det.solver.splits import spatial_ranks
from accel_det.utils import timing as bench_latency
from accel_det.utils.timing import measure_for
from tests.helpers import REPO as ROOT
from tests.helpers import hand_macs, hand_speedup, load_tool

HW = (32, 32)


pytestmark = pytest.mark.usefixtures("one_thread")


def _plans(features, hw=HW):
    """Original, the paper's Table 6 (channel), an asym3d plan and a Jaderberg (spatial) plan."""
    specs = conv_specs(features, hw)
    names = [s.name for s in specs][1:]
    asym3d = {
        n: {
            "structure": SPATIAL_CHANNEL,
            "rank": max(1, s.out_channels // 3),
            "spatial_rank": max(1, s.out_channels // 4),
        }
        for n, s in zip(names, specs[1:])
    }
    spatial = {
        n: {"structure": SPATIAL, "spatial_rank": max(1, s.out_channels // 5)}
        for n, s in zip(names, specs[1:])
    }
    return {
        "original": plan_from_structures(specs, {}),
        "table6": bench_plans.table6_plan(features, hw) if specs[-1].out_channels == 512 else None,
        "asym3d": plan_from_structures(specs, asym3d, method="asym3d"),
        "jaderberg": plan_from_structures(specs, spatial, method="jaderberg"),
    }


def test_multiply_adds_agree_with_fvcore_on_plain_and_accelerated_vgg16():
    features = forms.random_features(1.0)
    x = torch.randn(1, 3, *HW)
    for name, plan in _plans(features).items():
        model = forms.accelerated_features(features, plan)
        ours = macs.features_macs(model, HW)
        assert ours == plan["approximated_macs"], (
            name
        )  # the solver's count, layer structure read off the modules
        assert macs.fvcore_macs(model, (x,)) == ours, name
        assert macs.features_macs(model, HW, batch=3) == 3 * ours
    table6 = _plans(features)["table6"]
    assert table6["theoretical_speedup"] == pytest.approx(
        4.005, abs=0.01
    )  # Table 6's 4x row at 224x224 too


def test_detector_multiply_adds_agree_with_fvcore(tmp_path):
    pytest.importorskip("detectron2")
    width = 0.0625
    features = vgg16_features(width)
    plan = _plans(features)["asym3d"]
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    detectors = fast_rcnn.build_detectors(
        {"asym3d": plan}, {"asym3d": str(path)}, width=width, opts=["MODEL.ROI_BOX_HEAD.FC_DIM", 32]
    )
    case = speed.Case("detector", (48, 64), 2)
    inputs = fast_rcnn.detector_inputs(case, proposals=7)
    for name, model in detectors.items():
        total, conv = macs.detector_macs(model, inputs)
        assert macs.detector_fvcore_macs(model, inputs) == total, name
        assert conv == macs.features_macs(model.backbone.features, (48, 64), 2)
    # the heads are shared, so the classifier is the same in every model and keeps no box
    with torch.inference_mode():
        out = detectors["asym3d"](inputs[:1])
    assert len(out[0]["instances"]) == 0
    heads = [
        {k: v for k, v in m.state_dict().items() if not k.startswith("backbone.")}
        for m in detectors.values()
    ]
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])


def test_spatial_ranks_rounded_meet_the_budget_close_to_it():
    specs = conv_specs(vgg16_features(1.0), (224, 224))
    solved = specs[1:]
    ranks = dict(
        zip([s.name for s in solved], [32, 64, 48, 128, 96, 112, 224, 176, 192, 320, 336, 352])
    )
    budget = budget_macs(specs, 4.0, ["conv1_1"])
    total = sum(conv_macs(s) for s in specs)

    def speedup(spatial):
        return total / (
            conv_macs(specs[0])
            + sum(
                structure_macs(s, SPATIAL_CHANNEL, ranks[s.name], spatial[s.name]) for s in solved
            )
        )

    plain = spatial_ranks(solved, budget, ranks)
    assert plain == spatial_ranks(solved, budget, ranks, round_to=1)
    rounded = spatial_ranks(solved, budget, ranks, round_to=16)
    assert all(
        v % 16 == 0 or v == min(s.in_channels * 3, ranks[s.name] * 3)
        for s, v in zip(solved, rounded.values())
    )
    assert 4.0 <= speedup(rounded) < 4.1 and 4.0 <= speedup(plain) < 4.01
    with pytest.raises(AccelDetError, match="round_to"):
        spatial_ranks(solved, budget, ranks, round_to=0)


def test_rounded_solver_plans_keep_the_speedup():
    features = forms.random_features(0.25)
    images = torch.randn(2, 3, *HW)
    eigenvalues = bench_plans.sampled_eigenvalues(features, images, samples_per_image=20)
    plans = bench_plans.solver_plans(
        features, eigenvalues, HW, speedup=2.0, methods=("asym", "asym3d"), round_to=4
    )
    assert set(plans) == {"asym", "asym, ranks x4", "asym3d", "asym3d, ranks x4"}
    for name, plan in plans.items():
        assert plan["theoretical_speedup"] >= 2.0 - 1e-9, name
        layers = list(plan["layers"].values())
        ranks = {e["name"]: e["rank"] for e in layers if e["rank"]}
        spatial = {e["name"]: e["spatial_rank"] for e in layers if e["spatial_rank"]}
        assert plan["theoretical_speedup"] == pytest.approx(
            hand_speedup(layers, ranks, spatial), rel=1e-12
        ), name
        if name.endswith("x4"):
            for entry in plan["layers"].values():
                full = min(entry["in_channels"] * 3, (entry["rank"] or entry["out_channels"]) * 3)
                assert (
                    entry["rank"] is None
                    or entry["rank"] % 4 == 0
                    or entry["rank"] == entry["out_channels"]
                )
                assert (
                    entry["spatial_rank"] is None
                    or entry["spatial_rank"] % 4 == 0
                    or entry["spatial_rank"] == full
                )
    summary = bench_plans.plan_summary(plans["asym3d, ranks x4"])
    assert (
        summary["spatial_ranks"]
        and summary["fingerprint"] != bench_plans.plan_summary(plans["asym3d"])["fingerprint"]
    )


@pytest.mark.skipif(
    not forms.fusion_available(), reason="no oneDNN fused convolution in this build"
)
def test_fused_inference_form_equals_the_eager_model():
    features = forms.random_features(0.125)
    plan = _plans(features)["asym3d"]
    model = forms.accelerated_features(features, plan)
    x = torch.randn(2, 3, *HW)
    fused = forms.fuse_for_inference(model, x)
    assert not any(isinstance(m, torch.nn.ReLU) for m in fused)  # every ReLU follows a conv: fused
    with torch.inference_mode():
        reference = model(x)
        for mode in forms.MODES:
            out = forms.model_form(model, mode, x)(x)
            assert torch.allclose(out, reference, rtol=1e-4, atol=1e-5), mode


def test_one_timer_and_adaptive_repeats():
    # one timer: the solver's latency tables time with accel_det.utils.timing
    from accel_det.solver import latency as solver_latency

    assert solver_latency.time_modules is bench_latency.time_modules
    assert solver_latency.num_threads is bench_latency.num_threads
    calls = []
    result = measure_for(
        {"a": lambda: calls.append("a"), "b": lambda: (calls.append("b"), time.sleep(0.002))},
        threads=1,
        seconds=0.02,
        warmup=2,
        min_repeats=2,
        max_repeats=6,
    )
    rounds = len(calls) // 2
    assert calls == ["a", "b"] * rounds and 2 + 2 <= rounds <= 2 + 6
    assert (
        result["b"]["repeats"] == rounds - 2
        and result["b"]["threads"] == 1
        and result["b"]["warmup"] == 2
    )
    assert result["b"]["median_ms"] >= 2.0
    assert speed.Case.parse("detector:600x1000:8") == speed.Case("detector", (600, 1000), 8)
    assert speed.Case.parse("backbone:224:1").hw == (224, 224)
    with pytest.raises(AccelDetError, match="bad case"):
        speed.Case.parse("head:224:1")
    # the smallest inputs the parts run at: VGG-16's five max-pools, the detector's four
    assert speed.Case.parse("detector:16:1").hw == (16, 16) and speed.Case.parse(
        "backbone:32:1"
    ).hw == (32, 32)
    for text in ("backbone:16:1", "backbone:32x31:1", "detector:8:1"):
        with pytest.raises(AccelDetError, match="bad case"):
            speed.Case.parse(text)


def test_speed_tool_smoke_run(tmp_path):
    pytest.importorskip("detectron2")
    out = tmp_path / "speed"
    made_elsewhere = tmp_path / "made_elsewhere.json"
    made_elsewhere.write_text(json.dumps(_plans(vgg16_features(0.125))["asym3d"]))
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "benchmark_speed.py"),
            "--width",
            "0.125",
            "--lever-size",
            "32",
            "--lever-threads",
            "1",
            "--cases",
            "backbone:32:1",
            "backbone:40x48:2",
            "detector:48x64:1",
            "--plan",
            f"elsewhere={made_elsewhere}",
            "--seconds",
            "0.2",
            "--num-images",
            "2",
            "--samples-per-image",
            "5",
            "--speedup",
            "2",
            "--round-ranks",
            "4",
            "--proposals",
            "10",
            "--detector-opts",
            "MODEL.ROI_BOX_HEAD.FC_DIM",
            "32",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((out / "benchmark_speed.json").read_text())
    assert record["format"] == speed.SPEED_FORMAT and record["threads"] == 1
    cases = {r["case"] for r in record["grid"]}
    assert cases == {"backbone:32x32:1", "backbone:40x48:2", "detector:48x64:1"}
    original = {r["case"]: r for r in record["grid"] if r["model"] == "original"}
    features = vgg16_features(0.125)
    for row in record["grid"]:
        assert row["fvcore_macs"] == row["macs"], row["model"]
        base = original[row["case"]]
        # actual speedup: the original's median over this model's, in the same case
        assert row["actual_speedup"] == pytest.approx(base["median_ms"] / row["median_ms"])
        assert row["theoretical_speedup_all"] == pytest.approx(base["macs"] / row["macs"])
        if row["model"] == "original":
            assert row["theoretical_speedup_conv"] == 1.0
            continue
        # the plan's theoretical speedup, counted here from the ranks of the file it was timed from
        plan = json.loads(open(record["models"][row["model"]]["plan_file"]).read())
        layers = list(plan["layers"].values())
        ranks = {e["name"]: e["rank"] for e in layers if e["rank"]}
        spatial = {e["name"]: e["spatial_rank"] for e in layers if e["spatial_rank"]}
        assert row["theoretical_speedup_conv"] == pytest.approx(
            hand_speedup(layers, ranks, spatial), rel=1e-12
        )
        assert row["theoretical_speedup_conv"] >= 2.0 - 1e-9
        if row["part"] == "backbone":  # the backbone's count at this case's size and batch
            shapes = [asdict(s) for s in conv_specs(features, tuple(row["input_hw"]))]
            assert row["macs"] == row["batch"] * sum(
                hand_macs(x, ranks.get(x["name"]), spatial.get(x["name"])) for x in shapes
            )
    assert {"asym", "asym, ranks x4", "asym3d", "asym3d, ranks x4", "elsewhere"} <= set(
        record["models"]
    )
    assert record["models"]["elsewhere"]["plan_file"] == str(made_elsewhere)
    assert {r["model"] for r in record["grid"]} == {
        "original",
        "asym, ranks x4",
        "asym3d, ranks x4",
        "elsewhere",
    }
    assert record["levers"] and all(
        os.path.isfile(m["plan_file"]) for n, m in record["models"].items() if n != "original"
    )
    assert "| lever |" in result.stdout and "actual / theor." in result.stdout
    assert (out / "benchmark_speed.md").read_text().startswith("# Speed")
    # tools/report.py finds these timings for train_net runs of the same plan (config.yaml names the
    # file)
    from accel_det.workflows import report

    runs = []
    for name, backbone, plan in (
        ("plain", "build_vgg16_backbone", ""),
        ("accel", "build_accel_vgg16_backbone", made_elsewhere),
    ):
        run = tmp_path / name
        run.mkdir()
        (run / "config.yaml").write_text(
            f"MODEL:\n  BACKBONE:\n    NAME: {backbone}\n  ACCEL:\n    PLAN: '{plan}'\n"
        )
        (run / "eval_results.json").write_text(json.dumps({"voc_test": {"bbox": {"AP50": 60.0}}}))
        runs.append(report.record_from_run(str(run)))
    assert report.attach_speed(runs, record) == []
    timed = {
        (r["model"], r["part"]): r["median_ms"]
        for r in record["grid"]
        if r["case"] == "detector:48x64:1"
    }
    for run, model in zip(runs, ("original", "elsewhere")):
        assert run["latency"]["model"] == model and run["latency"]["input_hw"] == [48, 64]
        assert run["latency"]["detector"]["median_ms"] == timed[(model, "detector")]


def _tool():
    return load_tool("benchmark_speed")


def test_speed_tool_reuses_the_lever_timings_for_the_same_backbone_case(tmp_path):
    """The grid's backbone case at the lever size, batch 1, is the levers' channels_last
    measurement, not a second one (and its multiply-adds are still counted)."""
    out = tmp_path / "speed"
    argv = (
        "--width 0.125 --lever-size 32 --lever-threads 1 --threads 1 --cases backbone:32:1 "
        "--no-table6 --seconds 0.2 --num-images 2 --samples-per-image 5 --speedup 2 "
        "--round-ranks 4 --fvcore none --output"
    ).split() + [str(out)]
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "benchmark_speed.py"), *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((out / "benchmark_speed.json").read_text())
    timings = record["lever_matrix"]["timings"]["1"]
    features = vgg16_features(0.125)
    assert record["grid"]
    for row in record["grid"]:
        assert row["median_ms"] == timings[row["model"]]["channels_last"]["median_ms"]
    original = next(r for r in record["grid"] if r["model"] == "original")
    assert original["macs"] == sum(hand_macs(asdict(s)) for s in conv_specs(features, (32, 32)))


def test_speed_tool_refuses_bad_options_in_one_line(tmp_path, capsys):
    tool = _tool()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"layers": {"conv9_9": {"structure": CHANNEL, "rank": 2}}}))
    common = [
        "--width",
        "0.125",
        "--output",
        str(tmp_path / "o"),
        "--no-levers",
        "--cases",
        "backbone:32:1",
    ]
    assert tool.run_tool(tool.main, tool.build_parser(), common + ["--plan", str(bad)]) == 2
    assert "does not fit" in capsys.readouterr().err
    assert tool.run_tool(tool.main, tool.build_parser(), common + ["--plan", f"asym={bad}"]) == 2
    capsys.readouterr()
    malformed = tmp_path / "malformed.json"
    malformed.write_text(json.dumps({"layers": {"conv1_2": {"structure": CHANNEL}}}))  # no rank
    assert tool.run_tool(tool.main, tool.build_parser(), common + ["--plan", str(malformed)]) == 2
    assert "malformed layer entry" in capsys.readouterr().err
    for option, start in (
        (["--device", "gpu0"], "error: --device"),
        (["--lever-size", "16"], "error: argument --lever-size: must be at least 32, got 16"),
    ):
        assert tool.run_tool(tool.main, tool.build_parser(), common + option) == 2
        assert capsys.readouterr().err.startswith(start)
    assert (
        tool.run_tool(
            tool.main,
            tool.build_parser(),
            ["--cases", "backbone:224", "--output", str(tmp_path / "o")],
        )
        == 2
    )
    assert "bad case" in capsys.readouterr().err
    assert (
        tool.run_tool(
            tool.main, tool.build_parser(), ["--threads", "0", "--output", str(tmp_path / "o")]
        )
        == 2
    )
