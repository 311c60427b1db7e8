"""The solver benchmark's library code on minimal sizes: the generated task, training and batch-norm
folding, the sweep, the tables and the PNG, the speed figures and the latency comparison."""

import json
import os
import subprocess
import sys

import pytest
import torch

from accel_det.data.synthetic import shapes
from accel_det.models.vgg import vgg16_features
from accel_det.nn.fold import fold_batch_norms
from accel_det.solver import METHODS
from accel_det.solver import latency as latency_module
from accel_det.utils.io import json_safe
from accel_det.workflows.bench import memory as bench_memory
from accel_det.workflows.bench import quality as bench
from accel_det.workflows.bench import quality_report, selection
from accel_det.workflows.classifier import with_batch_norms
from tests.helpers import REPO as ROOT  # noqa: E402

SHORT = ((0.01, 2), (1.0, 2))


pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_task_is_deterministic_and_balanced():
    images, labels = shapes.make_task(40, size=16, seed=3)
    again, labels_again = shapes.make_task(40, size=16, seed=3)
    assert torch.equal(images, again) and torch.equal(labels, labels_again)
    assert images.shape == (40, 3, 16, 16) and torch.isfinite(images).all()
    assert torch.bincount(labels, minlength=10).tolist() == [4] * 10
    assert not torch.equal(images, shapes.make_task(40, size=16, seed=4)[0])


def test_batchnorm_folding_keeps_the_function():
    torch.manual_seed(0)
    features = with_batch_norms(vgg16_features(0.0625)[:7])
    for module in features:
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 2)
            module.bias.data.uniform_(-1, 1)
    features.eval()
    folded = fold_batch_norms(features)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(folded(x), features(x), atol=1e-5)


@pytest.fixture(scope="module")
def tiny():
    config = bench.SweepConfig(
        size=32,
        width=0.0625,
        train_images=60,
        test_images=30,
        calibration_images=20,
        train_steps=4,
        samples_per_image=3,
        speedups=(2.0,),
        schedule=SHORT,
    )
    return config, bench.prepare(config)


def test_sweep_runs_every_method_and_reports(tiny, tmp_path):
    config, prepared = tiny
    records = []
    sweep = bench.run_sweep(config, prepared, on_record=records.append)
    assert (
        len(sweep["records"]) == len(records) == 9
    )  # 4 methods x rank selection on/off + jaderberg
    assert sweep["baseline"]["error"] == 0.0
    for record in sweep["records"]:
        assert "impossible" in record or (
            record["error"] >= 0
            and 0 <= record["accuracy"] <= 1
            and record["seconds"] > 0
            and record["theoretical_speedup"] >= 1.9
        )
    assert set(bench.method_order(sweep["records"], 2.0)) <= set(METHODS)
    text = quality_report.sweep_table(sweep, config.speedups)
    assert "asym3d (rank sel.)" in text and "original" in text
    assert "MB" in quality_report.sweep_table(sweep, config.speedups, "cost")
    png = str(tmp_path / "sweep.png")
    quality_report.plot_sweep(sweep, png, title="test")
    assert open(png, "rb").read(4) == b"\x89PNG"
    json.dumps(json_safe(sweep))


def test_trained_network_is_cached(tiny, tmp_path):
    config, _ = tiny
    first = bench.prepare(config, cache_folder=str(tmp_path))
    second = bench.prepare(config, cache_folder=str(tmp_path))
    assert first["trained"] and not second["trained"]
    x = first["test"][0][:4]
    assert torch.equal(first["net"].classify(x), second["net"].classify(x))


def test_speed_figures_on_small_problems():
    solve = bench.time_channel_solve(samples=500, channels=16, rank=6, schedule=SHORT)
    assert solve["seconds"] > 0 and 0 <= solve["error"] < 1
    with bench_memory.peak_memory() as memory:
        block = torch.ones(64, 2**20)  # 256 MB, touched
        block += 1
    assert memory["peak_mb"] > 100
    del block


def test_latency_comparison_runs(tiny, monkeypatch):
    config, prepared = tiny

    def fake(modules, x, warmup, repeats):
        return {
            name: 1e-4 + 1e-11 * x.shape[-1] * x.shape[-2] * sum(p.numel() for p in m.parameters())
            for name, m in modules.items()
        }

    monkeypatch.setattr(latency_module, "time_modules", fake)
    comparison = selection.latency_comparison(
        prepared["net"],
        prepared["test"],
        prepared["calibration"][0],
        speedup=2.0,
        size=32,
        num_images=2,
        samples_per_image=4,
        measure_repeats=1,
        schedule=SHORT,
        small_samples_per_image=3,
        round_to=4,
    )
    vgg = comparison["vgg16"]
    assert vgg["latency"]["predicted_speedup"] == pytest.approx(2.0, rel=0.05)
    assert vgg["MACs"]["theoretical_speedup"] == pytest.approx(2.0, rel=0.02)
    assert all(r % 4 == 0 for r in vgg["latency, ranks x4"]["ranks"].values())
    assert set(comparison["small_net"]) <= set(vgg)
    assert "measured" in selection.latency_table_text(comparison)


def test_the_tool_refuses_bad_options_in_one_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "benchmark_solver.py"),
            "--speedups",
            "1",
            "--output",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --speedups must all be greater than 1"]
