"""The mAP-vs-speedup report (accel_det.report) and latency measurement (accel_det.benchmark)."""

import json

import pytest
import torch

from accel_det.errors import AccelDetError
from accel_det.utils.timing import measure_latency, measure_many, num_threads
from accel_det.workflows.report import (
    load_records,
    plot_map_vs_speedup,
    report_rows,
    results_table,
    write_report,
)

RECORDS = [
    {
        "name": "asym3d_4x",
        "theoretical_speedup": 4.02,
        "ap50": 60.0,
        "ap50_before_ft": 41.0,
        "latency": {"backbone": {"median_ms": 5.0}, "detector": {"median_ms": 12.0}},
    },
    {
        "name": "baseline",
        "baseline": True,
        "theoretical_speedup": 1.0,
        "ap50": 62.5,
        "latency": {"backbone": {"median_ms": 15.0}, "detector": {"median_ms": 24.0}},
    },
]


def test_rows_table_and_plot(tmp_path):
    rows = report_rows(RECORDS)
    assert [r["name"] for r in rows] == ["baseline", "asym3d_4x"]
    accel = rows[1]
    assert accel["backbone_speedup"] == pytest.approx(3.0) and accel[
        "detector_speedup"
    ] == pytest.approx(2.0)
    assert accel["delta_ap50"] == pytest.approx(-2.5)
    table = results_table(rows)
    assert "| baseline | 1.00× | 1.00× | 1.00× | 15.0 | 24.0 | – | 62.5 | – |" in table
    assert "| asym3d_4x | 4.02× | 3.00× | 2.00× | 5.0 | 12.0 | 41.0 | 60.0 | -2.5 |" in table
    png = tmp_path / "plot.png"
    plot_map_vs_speedup(rows, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    write_report(
        str(tmp_path / "r.md"), rows, title="T", notes=["synthetic data"], sections=["## more"]
    )
    text = (tmp_path / "r.md").read_text()
    assert text.startswith("# T") and "- synthetic data" in text and "## more" in text


def test_records_need_one_baseline(tmp_path):
    with pytest.raises(AccelDetError, match="exactly one baseline"):
        report_rows([RECORDS[0]])
    path = tmp_path / "r.json"
    path.write_text(json.dumps(RECORDS[1]))
    assert load_records([str(path)])[0]["name"] == "baseline"
    with pytest.raises(AccelDetError, match="cannot read result record"):
        load_records([str(tmp_path / "missing.json")])


def test_latency_is_measured_interleaved_at_the_given_thread_count():
    before = torch.get_num_threads()
    calls = []
    result = measure_many(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
        warmup=2,
        repeats=3,
        threads=1,
    )
    assert calls == ["a", "b"] * 5  # warm-up rounds, then timed rounds, one call of each per round
    assert (
        result["a"]["repeats"] == 3
        and result["a"]["threads"] == 1
        and result["a"]["median_ms"] >= 0
    )
    assert torch.get_num_threads() == before
    single = measure_latency(
        lambda: torch.inference_mode() and torch.ones(3).sum(), warmup=0, repeats=2
    )
    assert single["min_ms"] <= single["median_ms"] <= single["p90_ms"]
    with num_threads(1):
        assert torch.get_num_threads() == 1


def test_rows_carry_intervals_paired_against_the_baseline(tmp_path):
    from accel_det.evaluation import paired_delta, write_records
    from accel_det.workflows.report import add_intervals, comparison_text
    from tests.evaluation.test_ap import synthetic_records

    records = [dict(r) for r in RECORDS] + [dict(RECORDS[0], name="asym3d_4x_copy")]
    detections = {
        "asym3d_4x": synthetic_records(300, seed=1, skill=0.5),
        "baseline": synthetic_records(300, seed=1, skill=0.7),
        "asym3d_4x_copy": synthetic_records(300, seed=1, skill=0.5),
    }
    for record in records:
        path = tmp_path / f"{record['name']}.detections.npz"
        write_records(detections[record["name"]], str(path))
        record["detections"] = str(path)
    found = add_intervals(records, [("asym3d_4x", "asym3d_4x_copy")])
    assert found[0]["value"] == 0 and found[0]["low"] == found[0]["high"] == 0
    assert comparison_text(found[0]).endswith("(no measurable difference)")
    rows = {r["name"]: r for r in report_rows(records)}
    expected = paired_delta(detections["asym3d_4x"], detections["baseline"])
    assert rows["asym3d_4x"]["delta_ap50_interval"]["low"] == pytest.approx(expected.low)
    table = results_table(list(rows.values()))
    assert "ΔAP50 [95 %, paired]" in table and expected.delta_text()[2:] in table
    assert expected.high < 0 and "\u2212" in expected.delta_text()
    png = tmp_path / "plot.png"
    plot_map_vs_speedup(list(rows.values()), str(png))
    assert png.stat().st_size > 10_000
