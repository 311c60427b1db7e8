"""The R-CNN speed benchmark in quick mode on a narrow R18-FPN: a consistent record."""

import json
import os
import statistics

import pytest

pytest.importorskip("detectron2")
pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

from accel_det.benchmarks import rcnn
from accel_det.benchmarks.rcnn_forms import STAGES
from accel_det.errors import AccelDetError
from tests.deploy.test_backbone_export import TINY_R18_FPN

pytestmark = pytest.mark.usefixtures("one_thread")


def test_quick_run_record_is_consistent(tmp_path, monkeypatch):
    monkeypatch.setattr(rcnn, "QUICK_HW", (64, 96))
    output = str(tmp_path / "rcnn.json")
    options = rcnn.RcnnBenchOptions(
        output=output, opts=list(TINY_R18_FPN), speedups=(2.0,), threads=(1,), quick=True
    )
    record = rcnn.run(options)
    with open(output) as f:
        assert json.load(f)["best"] == record["best"]
    paths = rcnn.output_paths(output)
    assert os.path.getsize(paths["png"]) > 0 and "**best form**" in open(paths["md"]).read()
    assert record["options"]["repeats"] == 1 and record["backbone_input_hw"] == [64, 96]
    rows = record["rows"]
    forms = {(r["part"], r["form"]) for r in rows}
    assert {("backbone", f) for f in ("eager", "torchscript", "onnxruntime", "openvino")} <= forms
    assert ("model", "eager + openvino backbone") in forms
    for r in rows:
        assert r["median_ms"] == pytest.approx(statistics.median(r["times_ms"]))
        if "stages_ms" in r:
            stages = sum(r["stages_ms"][s] for s in STAGES)
            assert stages == pytest.approx(r["stages_ms"]["total"], rel=0.05)
    for best in record["best"]:
        cell = [r for r in rows if (r["part"], r["threads"], r["model"]) ==
                (best["part"], best["threads"], best["model"])]  # fmt: skip
        fastest = min(cell, key=lambda r: r["median_ms"])
        assert (best["form"], best["median_ms"]) == (fastest["form"], fastest["median_ms"])
        original = min(
            r["median_ms"] for r in rows
            if (r["part"], r["threads"], r["model"]) == (best["part"], best["threads"], "original")
        )  # fmt: skip
        assert best["speedup"] == pytest.approx(original / best["median_ms"])
        assert best["fastest_ms"] == min(r["min_ms"] for r in cell)
    assert record["target"]["measured"] == pytest.approx(
        next(b["speedup"] for b in record["best"] if (b["part"], b["model"]) == ("model", "2x"))
    )
    for check in record["exports"].values():  # the accelerated backbones export too
        assert check["onnxruntime"] <= 1e-3 and check["openvino"] <= 1e-3
    original, accelerated = record["macs"]["original"], record["macs"]["2x"]
    assert accelerated["backbone"] < original["backbone"]
    assert accelerated["total"] < original["total"]
    assert accelerated["proposal_generator"] <= original["proposal_generator"]
    assert "| total |" in open(paths["md"]).read()


def test_best_forms_picks_the_fastest_form_per_model():
    rows = [
        {"part": "model", "threads": 1, "model": "original", "form": "a", "median_ms": 10.0},
        {"part": "model", "threads": 1, "model": "original", "form": "b", "median_ms": 8.0},
        {"part": "model", "threads": 1, "model": "2x", "form": "a", "median_ms": 4.0},
        {"part": "model", "threads": 1, "model": "2x", "form": "b", "median_ms": 5.0},
    ]
    for r, fastest in zip(rows, (6.0, 7.0, 3.5, 2.0)):
        r["min_ms"] = fastest
    best = {b["model"]: b for b in rcnn.best_forms(rows)}
    assert (best["original"]["form"], best["2x"]["form"]) == ("b", "a")
    assert best["2x"]["speedup"] == pytest.approx(2.0)
    assert best["2x"]["speedup_fastest"] == pytest.approx(3.0)  # 6 ms against 2 ms
    assert rcnn.target_check(list(best.values()))["met"] is True


def test_refuses_bad_output_before_work(tmp_path):
    with pytest.raises(AccelDetError, match="must end with .json"):
        rcnn.run(rcnn.RcnnBenchOptions(output=str(tmp_path / "x.txt")))
    assert not list(tmp_path.iterdir())
