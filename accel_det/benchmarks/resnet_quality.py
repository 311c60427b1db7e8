"""Solver quality on a small ResNet trained here: torchvision's ``BasicBlock`` in four stages (two
blocks each, widths w, 2w, 4w, 8w, batch norms), trained on the generated shapes task as the VGG
sweep's network is, then compressed as a whole (batch norms folded, every conv but the stem, the
residual convs in the linear form) by linear / nonlinear / asym / asym3d at each speedup.

Measured on held-out images: the relative error of the logits ‖F̂(x) − F(x)‖ / ‖F(x)‖ and top-1
accuracy, each with a 95 % percentile-bootstrap interval over the test images, and the accuracy
drop against the original paired on the same resampled images.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from ..data.synthetic.shapes import NUM_CLASSES, make_task
from ..errors import AccelDetError
from ..solver import compress
from ..utils.io import atomic_torch_save, load_torch_file
from ..utils.tables import text_table
from ..workflows.classifier import fit_classifier
from .smallnet import feature_maps, flipped_batch, net_cache_name

logger = logging.getLogger(__name__)
METHODS = ("linear", "nonlinear", "asym", "asym3d")


@dataclass
class ResNetSweepConfig:
    size: int = 32
    width: int = 16
    train_images: int = 8000
    test_images: int = 2000
    calibration_images: int = 300
    train_steps: int = 1200
    samples_per_image: int = 10
    speedups: Tuple[float, ...] = (2.0, 3.0, 4.0)
    methods: Tuple[str, ...] = METHODS
    schedule: Tuple[Tuple[float, int], ...] = ((0.01, 25), (1.0, 25))
    seed: int = 0
    bootstrap: int = 1000


def small_resnet(width: int = 16, num_classes: int = NUM_CLASSES) -> nn.Module:
    """A ResNet-18 layout for 32×32 inputs: 3×3 stem (no max-pool), four stages of two torchvision
    ``BasicBlock`` s (widths ``width`` … 8·``width``, stride 2 from the second), pooling, fc."""
    layers: List[nn.Module] = [
        nn.Conv2d(3, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    ]
    channels = width
    for stage in range(4):
        planes, stride = width * 2**stage, 1 if stage == 0 else 2
        downsample = None
        if stride != 1 or channels != planes:
            downsample = nn.Sequential(
                nn.Conv2d(channels, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        layers.append(
            nn.Sequential(
                BasicBlock(channels, planes, stride, downsample), BasicBlock(planes, planes)
            )
        )
        channels = planes
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


def train_small_resnet(images, labels, config: ResNetSweepConfig) -> Tuple[nn.Module, dict]:
    """:func:`small_resnet` trained with AdamW (one-cycle learning rate, random flips)."""
    torch.manual_seed(config.seed)
    model = small_resnet(config.width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=2e-3, total_steps=config.train_steps, pct_start=0.15
    )
    g = torch.Generator().manual_seed(config.seed + 1)
    running = {"correct": 0, "seen": 0}
    start = time.perf_counter()

    def next_batch(step: int):
        return flipped_batch(images, labels, 64, g)

    def on_step(step, loss, out, y):
        if step >= config.train_steps - 200:  # the running accuracy of the last 200 steps
            running["correct"] += int((out.argmax(1) == y).sum())
            running["seen"] += len(y)

    fit_classifier(model, next_batch, optimizer, config.train_steps, scheduler=schedule,
                   on_step=on_step)  # fmt: skip
    info = {
        "train_seconds": time.perf_counter() - start,
        "train_accuracy": running["correct"] / max(1, running["seen"]),
    }
    return model.eval(), info


def prepare(config: ResNetSweepConfig, cache_folder: Optional[str] = None) -> dict:
    """The task's test and calibration images and the trained network (cached in
    ``cache_folder``)."""
    test = make_task(config.test_images, size=config.size, seed=config.seed + 1000)
    calibration = make_task(config.calibration_images, size=config.size, seed=config.seed + 2000)
    path = (
        os.path.join(cache_folder, net_cache_name(config, "small_resnet", "r1"))
        if cache_folder
        else None
    )
    if path and os.path.exists(path):
        saved = load_torch_file(path, "trained network")
        model = small_resnet(config.width)
        model.load_state_dict(saved["state_dict"])
        return {"net": model.eval(), "info": saved["info"], "test": test,
                "calibration": calibration, "trained": False}  # fmt: skip
    train = make_task(config.train_images, size=config.size, seed=config.seed)
    model, info = train_small_resnet(*train, config)
    if path:
        atomic_torch_save({"state_dict": model.state_dict(), "info": info}, path)
    return {"net": model, "info": info, "test": test, "calibration": calibration,
            "trained": True}  # fmt: skip


def bootstrap_metrics(reference, logits, labels, resamples: int = 1000, seed: int = 0) -> dict:
    """Held-out error and top-1 accuracy of ``logits`` against the original's ``reference``, with
    95 % percentile-bootstrap intervals over the test images (each resample draws images with
    replacement; the accuracy drop is paired: the same images for both models)."""
    squared_error = (logits - reference).double().square().sum(1).numpy()
    squared_norm = reference.double().square().sum(1).numpy()
    correct = (logits.argmax(1) == labels).double().numpy()
    original = (reference.argmax(1) == labels).double().numpy()
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(labels), size=(resamples, len(labels)))
    errors = np.sqrt(squared_error[draws].sum(1) / squared_norm[draws].sum(1))
    accuracies = correct[draws].mean(1)
    drops = (original[draws] - correct[draws]).mean(1)

    def interval(values):
        return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]

    return {
        "error": float(np.sqrt(squared_error.sum() / squared_norm.sum())),
        "error_interval": interval(errors),
        "accuracy": float(correct.mean()),
        "accuracy_interval": interval(accuracies),
        "accuracy_drop": float((original - correct).mean()),
        "accuracy_drop_interval": interval(drops),
    }


def run_sweep(config: ResNetSweepConfig, prepared: dict,
              on_record: Optional[Callable[[dict], None]] = None) -> dict:  # fmt: skip
    """Every method × speedup of ``config`` (rank selection, the paper's ranks: no rounding, all
    calibration images used) on the prepared network."""
    net = prepared["net"]
    images, labels = prepared["test"]
    reference = feature_maps(net, images, 250)
    calibration = prepared["calibration"][0]
    batches = [calibration[i : i + 100] for i in range(0, len(calibration), 100)]
    base = bootstrap_metrics(reference, reference, labels, config.bootstrap, config.seed)
    records = []
    for method in config.methods:
        for speedup in config.speedups:
            record = {"method": method, "speedup": speedup}
            start = time.perf_counter()
            try:
                result = compress(
                    net, batches, speedup=speedup, method=method, progress=False,
                    samples_per_image=config.samples_per_image, schedule=config.schedule,
                    seed=config.seed, round_ranks_to=1, heldout_fraction=0.0,
                )  # fmt: skip
            except AccelDetError as error:
                record["impossible"] = str(error)
            else:
                logits = feature_maps(result.model, images, 250)
                record.update(bootstrap_metrics(reference, logits, labels, config.bootstrap,
                                                config.seed))  # fmt: skip
                record.update(
                    seconds=time.perf_counter() - start,
                    theoretical_speedup=result.plan["theoretical_speedup"],
                    ranks={n: e["rank"] for n, e in result.plan["layers"].items()},
                    linear_layers=[n for n, e in result.plan["layers"].items() if not e["relu"]],
                )
            records.append(record)
            if on_record is not None:
                on_record(record)
    return {"baseline": base, "records": records}


def sweep_table(sweep: dict, speedups: Sequence[float]) -> str:
    """Methods down, speedups across: held-out error [95 % CI] / top-1 % [95 % CI]."""
    base = sweep["baseline"]

    def cell(r: Dict) -> str:
        if "impossible" in r:
            return "impossible"
        low, high = r["error_interval"]
        a_low, a_high = (100 * v for v in r["accuracy_interval"])
        return (
            f"{r['error']:.3f} [{low:.3f}, {high:.3f}] / {100 * r['accuracy']:.1f}% "
            f"[{a_low:.1f}, {a_high:.1f}]"
        )

    a_low, a_high = (100 * v for v in base["accuracy_interval"])
    body = [["original"] + [f"0 / {100 * base['accuracy']:.1f}% [{a_low:.1f}, {a_high:.1f}]"]
            * len(speedups)]  # fmt: skip
    for method in dict.fromkeys(r["method"] for r in sweep["records"]):
        rows = {r["speedup"]: r for r in sweep["records"] if r["method"] == method}
        body.append([method] + [cell(rows[s]) if s in rows else "-" for s in speedups])
    header = ["method (held-out logit error [95% CI] / top-1 [95% CI])"]
    return text_table(header + [f"{s:g}x" for s in speedups], body)


def order_lines(sweep: dict, speedups: Sequence[float]) -> List[str]:
    """Per speedup the methods best first by held-out error, and whether the paper's order
    (nonlinear < linear, asym < nonlinear) holds."""
    lines = []
    for speedup in speedups:
        rows = {r["method"]: r for r in sweep["records"]
                if r["speedup"] == speedup and "impossible" not in r}  # fmt: skip
        order = sorted(rows, key=lambda m: rows[m]["error"])
        holds = all(
            a in rows and b in rows and rows[a]["error"] < rows[b]["error"]
            for a, b in (("nonlinear", "linear"), ("asym", "nonlinear"))
        )
        lines.append(
            f"order at {speedup:g}x (held-out error, best first): {' < '.join(order)}; "
            f"target nonlinear < linear and asym < nonlinear: {'met' if holds else 'NOT met'}"
        )
    return lines
