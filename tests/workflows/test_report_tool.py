"""tools/report.py: run folders (train_net OUTPUT_DIRs, demo stages) and a speed JSON → the
mAP-vs-speedup Markdown table and PNG (accel_det.report)."""

import json
import os
import subprocess
import sys

import pytest

from accel_det.errors import AccelDetError
from accel_det.workflows import report
from tests.helpers import REPO as ROOT
from tests.helpers import load_tool


def _plan(rank):
    layers = {
        "conv1_1": {
            "structure": "original",
            "rank": None,
            "spatial_rank": None,
            "in_channels": 3,
            "out_channels": 64,
        }
    }
    layers["conv1_2"] = {
        "structure": "spatial_channel",
        "rank": rank,
        "spatial_rank": 16,
        "in_channels": 64,
        "out_channels": 64,
    }
    return {
        "format": "accel-det-plan/1",
        "method": "asym3d",
        "theoretical_speedup": 64 / rank,
        "layers": layers,
    }


def _eval(ap50):
    return {"accel_voc_2007_test": {"bbox": {"AP": ap50 / 2, "AP50": ap50, "AP75": ap50 / 3}}}


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))


@pytest.fixture
def runs(tmp_path):
    """A baseline and two accelerated train_net runs (one with eval_before_ft.json) and a speed
    JSON."""
    base = tmp_path / "vgg16_voc"
    _write(
        base / "config.yaml",
        "MODEL:\n  BACKBONE:\n    NAME: build_vgg16_backbone\n  ACCEL:\n    PLAN: ''\n",
    )
    _write(base / "eval_results.json", _eval(66.9))
    folders = [base]
    for rank, ap in ((16, 66.1), (32, 66.8)):
        run = tmp_path / f"accel_{rank}"
        _write(run / "model_final.json", _plan(rank))
        _write(
            run / "config.yaml",
            "MODEL:\n  BACKBONE:\n    NAME: build_accel_vgg16_backbone\n  ACCEL:\n"
            f"    PLAN: {run / 'model_final.json'}\n",
        )
        _write(run / "eval_results.json", _eval(ap))
        folders.append(run)
    _write(folders[1] / "eval_before_ft.json", _eval(60.0))
    grid = []
    for model, backbone, detector in (
        ("original", 3000.0, 4000.0),
        ("a16", 1000.0, 2000.0),
        ("a32", 1500.0, 2500.0),
    ):
        for part, ms in (("backbone", backbone), ("detector", detector)):
            grid.append(
                {
                    "case": f"{part}:600x1000:1",
                    "part": part,
                    "input_hw": [600, 1000],
                    "batch": 1,
                    "model": model,
                    "median_ms": ms,
                    "latency": {"median_ms": ms, "repeats": 3, "threads": 1},
                }
            )
            grid.append(
                {
                    "case": f"{part}:224x224:1",
                    "part": part,
                    "input_hw": [224, 224],
                    "batch": 1,
                    "model": model,
                    "median_ms": ms / 10,
                    "latency": {"median_ms": ms / 10, "repeats": 3, "threads": 1},
                }
            )
            # a GPU grid also times half precision, after float32: the report takes float32
            grid.append(
                {
                    "case": f"{part}:600x1000:1",
                    "part": part,
                    "input_hw": [600, 1000],
                    "batch": 1,
                    "model": model,
                    "dtype": "float16",
                    "median_ms": ms / 7,
                    "latency": {"median_ms": ms / 7, "repeats": 3},
                }
            )
    speed = {
        "format": "accel-det-speed/1",
        "command": "python tools/benchmark_speed.py --plan ...",
        "threads": 1,
        "device": "test CPU",
        "grid": grid,
        "models": {
            "original": {"fingerprint": report.plan_fingerprint(None)},
            "a16": {"fingerprint": report.plan_fingerprint(_plan(16))},
            "a32": {"fingerprint": report.plan_fingerprint(_plan(32))},
        },
    }
    _write(tmp_path / "speed.json", speed)
    return folders, tmp_path / "speed.json"


def test_report_tool_builds_the_table_and_the_png(runs, tmp_path):
    folders, speed = runs
    out = tmp_path / "report"
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "report.py"),
            *map(str, folders),
            f"{folders[2]}=asym3d 2x",
            "--speed",
            str(speed),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    table = (out / "report.md").read_text()
    # baseline first, then by theoretical speedup; actual speedups from the 600x1000 timings
    assert "| vgg16_voc | 1.00× | 1.00× | 1.00× | 3000.0 | 4000.0 | – | 66.9 | – |" in table
    assert "| accel_16 | 4.00× | 3.00× | 2.00× | 1000.0 | 2000.0 | 60.0 | 66.1 | -0.8 |" in table
    assert "| asym3d 2x | 2.00× | 2.00× | 1.60× | 1500.0 | 2500.0 | – | 66.8 | -0.1 |" in table
    assert table.index("vgg16_voc") < table.index("asym3d 2x") < table.index("accel_16")
    assert "test CPU" in table and "mAP_vs_speedup.png" in table
    assert (out / "mAP_vs_speedup.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = json.loads((out / "records.json").read_text())["records"]
    assert records[1]["latency"]["model"] == "a16" and records[1]["latency"]["input_hw"] == [
        600,
        1000,
    ]
    # another timed size, on request
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "report.py"),
            *map(str, folders),
            "--speed",
            str(speed),
            "--speed-input",
            "224x224",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        result.returncode == 0
        and "| accel_16 | 4.00× | 3.00× | 2.00× | 100.0 | 200.0 |" in result.stdout
    )


def test_whole_detector_runs_show_both_speedups_and_rows_are_told_apart(runs, tmp_path, capsys):
    """Two evaluations in folders of the same name ("eval") are named by the shortest distinct
    ending of their paths; a whole-detector plan's theoretical speedup (tools/compress_detector.py
    records it) has its column, – for a plan of the conv layers alone."""
    folders, speed = runs
    evals = []
    fc6 = {"in_features": 25088, "out_features": 4096, "structure": "channel", "rank": 512}
    for name, detector in (("frcnn_4x", 4.04), ("frcnn_3x", 3.0)):
        plan = dict(_plan(16), theoretical_speedup_detector=detector)
        plan["layers"] = {**plan["layers"], "fc6": fc6}
        _write(tmp_path / name / "plan.json", plan)
        evals.append(tmp_path / name / "eval")
        _write(
            evals[-1] / "config.yaml",
            "MODEL:\n  BACKBONE:\n    NAME: build_accel_vgg16_backbone\n  ACCEL:\n"
            f"    PLAN: {tmp_path / name / 'plan.json'}\n",
        )
        _write(evals[-1] / "eval_results.json", _eval(60.0))
    assert report.distinct_names(["a/x/eval", "b/y/eval", "c/z"]) == ["x/eval", "y/eval", "z"]
    tool = load_tool("report")
    argv = [*map(str, folders), *map(str, evals), "--output", str(tmp_path / "report")]
    assert tool.run_tool(tool.main, tool.build_parser(), argv) == 0
    table = capsys.readouterr().out
    assert "| frcnn_4x/eval | 4.00× | 4.04× | – | 60.0 | -6.9 |" in table, table
    assert "| frcnn_3x/eval | 4.00× | 3.00× |" in table and "| accel_16 | 4.00× | – |" in table
    assert "| vgg16_voc | 1.00× | 1.00× |" in table
    # benchmark_speed.py times a plan's conv structures with plain fc layers: such a timing is
    # not a whole-detector plan's latency (a note, no measured speedup)
    record, timed = report.record_from_run(str(evals[0])), json.loads(speed.read_text())
    timed["models"]["w4"] = {"fingerprint": record["plan_fingerprint"]}
    timed["grid"] += [dict(r, model="w4") for r in timed["grid"] if r["model"] == "a16"]
    notes = report.attach_speed([record], timed)
    assert record["fc_layers"] == ["fc6"] and "latency" not in record
    assert len(notes) == 1 and "its plan factors fc6, which the speed JSON's timing" in notes[0]
    argv = [str(folders[0]), str(evals[0]), f"{evals[1]}=eval", "--output", str(tmp_path / "r")]
    assert tool.run_tool(tool.main, tool.build_parser(), argv) == 2
    assert "two runs are named 'eval'" in capsys.readouterr().err


def test_records_from_runs_and_errors(runs, tmp_path, capsys):
    folders, speed = runs
    record = report.record_from_run(str(folders[1]))
    assert (
        record["ap50"] == 66.1
        and record["ap50_before_ft"] == 60.0
        and record["theoretical_speedup"] == 4.0
    )
    assert (
        record["plan_fingerprint"]
        == report.plan_fingerprint(_plan(16))
        != report.plan_fingerprint(_plan(32))
    )
    assert report.record_from_run(str(folders[0]))["theoretical_speedup"] == 1.0
    # a demo stage: its own result.json, a speed.json next to it
    demo = tmp_path / "demo_stage"
    _write(demo / "result.json", {"name": "asym3d_4x", "theoretical_speedup": 4.0, "ap50": 55.0})
    _write(demo / "speed.json", {"latency": {"backbone": {"median_ms": 5.0}}})
    assert report.record_from_run(str(demo))["latency"]["backbone"]["median_ms"] == 5.0
    # a run whose plan was not timed keeps no latency, and says so
    notes = report.attach_speed(
        [record, {"name": "x", "plan_fingerprint": "0" * 12}], json.loads(speed.read_text())
    )
    assert len(notes) == 1 and "x:" in notes[0]
    # a plan in the speed JSON's models but not timed in its grid: a note, and no latency from
    # elsewhere
    timed = json.loads(speed.read_text())
    timed["grid"] = [r for r in timed["grid"] if r["model"] != "a16"]
    stale = dict(record, latency={"backbone": {"median_ms": 1.0}})
    notes = report.attach_speed([stale], timed)
    assert len(notes) == 1 and "accel_16:" in notes[0] and "latency" not in stale
    with pytest.raises(
        AccelDetError, match="no timings at batch 8; it has: 224x224 batch 1, 600x1000 batch 1"
    ):
        report.attach_speed([record], timed, batch=8)
    with pytest.raises(AccelDetError, match="no timings at batch 1, input 300x300"):
        report.attach_speed([record], timed, input_hw=[300, 300])
    # a demo stage moved elsewhere: its plan is found next to the record; a plan that is gone is not
    # the original's
    moved = tmp_path / "moved_stage"
    _write(moved / "plan.json", _plan(16))
    _write(
        moved / "result.json",
        {
            "name": "moved",
            "theoretical_speedup": 4.0,
            "ap50": 55.0,
            "plan": "/nonexistent/demo/moved_stage/plan.json",
        },
    )
    assert report.record_from_run(str(moved))["plan_fingerprint"] == report.plan_fingerprint(
        _plan(16)
    )
    (moved / "plan.json").unlink()
    assert report.record_from_run(str(moved))["plan_fingerprint"] is None
    with pytest.raises(AccelDetError, match="neither result.json nor eval_results.json"):
        report.record_from_run(str(tmp_path))
    (folders[2] / "model_final.json").unlink()
    with pytest.raises(AccelDetError, match="plan .* is not found"):
        report.record_from_run(str(folders[2]))
    assert report.eval_ap50({"bbox": {"AP50": 1.5}}) == 1.5
    with pytest.raises(AccelDetError, match="no bbox AP50"):
        report.eval_ap50({"voc": {"segm": {}}})
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "report.py"),
            str(tmp_path / "missing"),
            "--output",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        result.returncode == 2
        and "does not exist" in result.stderr
        and "Traceback" not in result.stderr
    )
    # bad input is one line naming the file: evaluation results that are no dict, a speed JSON
    # without the asked size
    from accel_det.utils.cli import run_tool

    tool = _tool()
    _write(folders[1] / "eval_results.json", "[1, 2]")
    assert (
        run_tool(tool.main, tool.build_parser(), [str(folders[1]), "--output", str(tmp_path / "o")])
        == 2
    )
    assert "eval_results.json: the evaluation results hold no bbox AP50" in capsys.readouterr().err
    args = [
        str(folders[0]),
        "--speed",
        str(speed),
        "--speed-input",
        "300x300",
        "--output",
        str(tmp_path / "o"),
    ]
    assert run_tool(tool.main, tool.build_parser(), args) == 2
    assert (
        f"{speed}: the speed JSON has no timings at batch 1, input 300x300"
        in capsys.readouterr().err
    )


def _tool():
    return load_tool("report")
