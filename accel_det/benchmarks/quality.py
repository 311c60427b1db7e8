"""Solver quality on a network trained here: a generated 10-class image task, a small VGG-16 trained
on it for a few CPU minutes, and every method of the solver at several speedups, with held-out
output error, accuracy, compression time and peak memory (paper Fig. 5/6, Tables 6/7 in shape).

Also the speed figures of the solver (one 512-channel layer from 30,000 samples; compressing all of
VGG-16 against plain forward passes); the MAC-based vs latency-based rank selection (beyond the
paper) is in :mod:`accel_det.benchmarks.selection`. No ImageNet and no GPU is needed: numbers come
from a network that is small enough to train on 2 CPU cores, so they show the *order* of the
methods and the shape of the curves, not the paper's absolute ImageNet errors. Peak memory:
:mod:`accel_det.benchmarks.memory`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from ..data.synthetic.shapes import make_task
from ..errors import AccelDetError
from ..solver import METHODS, compress
from ..solver.channel import nonlinear_reconstruction
from ..solver.planning import plan_energy
from .forms import random_features
from .memory import peak_memory
from .smallnet import (
    TrainedNet,
    feature_maps,
    held_out_metrics,
    load_net,
    net_cache_name,
    save_net,
    train_small_vgg,
)

logger = logging.getLogger(__name__)


@dataclass
class SweepConfig:
    """Sizes of a benchmark run (see :func:`quick_config` and :func:`full_config`)."""

    size: int = 32
    width: float = 0.25
    train_images: int = 8000
    test_images: int = 2000
    calibration_images: int = 500
    train_steps: int = 1500
    samples_per_image: int = 10
    speedups: Tuple[float, ...] = (2.0, 3.0, 4.0, 5.0)
    methods: Tuple[str, ...] = tuple(METHODS)
    rank_selection: Tuple[bool, ...] = (True, False)
    schedule: Tuple[Tuple[float, int], ...] = ((0.01, 25), (1.0, 25))
    seed: int = 0
    # the paper's ranks, all calibration images used: the sweep compares the methods as published
    round_ranks_to: int = 1
    heldout_fraction: float = 0.0


def quick_config() -> SweepConfig:
    """The ``--quick`` sweep: 2×/3×/4×, every method, both rank selections."""
    return SweepConfig(
        train_images=4000,
        test_images=1000,
        calibration_images=200,
        train_steps=500,
        speedups=(2.0, 3.0, 4.0),
    )


def full_config() -> SweepConfig:
    """The full sweep: 2×–5× (run times: docs/benchmarks.md)."""
    return SweepConfig(calibration_images=300, train_steps=1200)


def prepare(config: SweepConfig, cache_folder: Optional[str] = None) -> dict:
    """Generate the task and train the network: ``{"net", "test", "calibration", "trained"}``.

    With ``cache_folder`` the trained network is saved there (:func:`net_cache_name`) and reused by
    later runs of the same configuration (``trained`` says which happened). Test and calibration
    images are drawn from other seeds than the training images.
    """

    test = make_task(config.test_images, size=config.size, seed=config.seed + 1000)
    calibration = make_task(config.calibration_images, size=config.size, seed=config.seed + 2000)
    path = os.path.join(cache_folder, net_cache_name(config)) if cache_folder else None
    if path and os.path.exists(path):
        return {
            "net": load_net(path),
            "test": test,
            "calibration": calibration,
            "trained": False,
            "net_file": path,
        }
    train = make_task(config.train_images, size=config.size, seed=config.seed)
    net = train_small_vgg(*train, width=config.width, steps=config.train_steps, seed=config.seed)
    if path:
        save_net(net, path)
    return {"net": net, "test": test, "calibration": calibration, "trained": True, "net_file": path}


def _batches(images: torch.Tensor, batch: int = 100) -> List[torch.Tensor]:
    return [images[i : i + batch] for i in range(0, len(images), batch)]


def run_one(
    net: TrainedNet,
    calibration: torch.Tensor,
    test: Tuple[torch.Tensor, torch.Tensor],
    reference: torch.Tensor,
    *,
    method: str,
    speedup: float,
    rank_selection: bool,
    samples_per_image: int,
    schedule,
    seed: int = 0,
    **options,
) -> dict:
    """Compress ``net.features`` once and measure it: error, accuracy, seconds, peak memory,
    ranks."""
    record = {
        "method": method,
        "rank_selection": bool(rank_selection) and METHODS[method].channel,
        "speedup": float(speedup),
    }
    try:
        with peak_memory() as memory:
            start = time.perf_counter()
            result = compress(
                net.features,
                _batches(calibration),
                speedup=speedup,
                method=method,
                rank_selection=rank_selection,
                samples_per_image=samples_per_image,
                schedule=schedule,
                seed=seed,
                progress=False,
                **options,
            )
            seconds = time.perf_counter() - start
    except AccelDetError as error:
        record["impossible"] = str(error)
        return record
    record.update(held_out_metrics(net, result.model, test[0], test[1], reference))
    plan = result.plan
    record.update(
        theoretical_speedup=plan["theoretical_speedup"],
        seconds=seconds,
        peak_mb=memory["peak_mb"],
        ranks={n: e["rank"] for n, e in plan["layers"].items() if e["rank"] is not None},
        spatial_ranks={
            n: e["spatial_rank"] for n, e in plan["layers"].items() if e["spatial_rank"] is not None
        },
        # Per layer, relative error of the rectified responses on the calibration samples, given the
        # approximated input (conv1_2's input is exact: a single-layer comparison as in Fig. 4).
        layer_errors={
            n: e["error"] for n, e in plan["layers"].items() if e["structure"] != "original"
        },
        pca_energy_product=plan_energy(plan),
    )
    if "latency" in plan:
        record["latency"] = plan["latency"]
    return record


def run_sweep(
    config: SweepConfig, prepared: dict, on_record: Optional[Callable[[dict], None]] = None
) -> dict:
    """Every method × rank selection × speedup of ``config`` on the prepared network."""
    net = prepared["net"]
    test_images, test_labels = prepared["test"]
    reference = feature_maps(net.features, test_images)
    baseline = held_out_metrics(net, net.features, test_images, test_labels, reference)
    cases = [
        (method, selection, config.round_ranks_to)
        for method in config.methods
        for selection in (config.rank_selection if METHODS[method].channel else (True,))
    ]
    return {
        "baseline": baseline,
        "records": run_cases(config, prepared, reference, cases, on_record),
    }


def rounding_sweep(
    config: SweepConfig,
    prepared: dict,
    multiples: Sequence[int] = (1, 8, 16),
    methods: Sequence[str] = ("asym", "asym3d"),
    on_record: Optional[Callable[[dict], None]] = None,
) -> dict:
    """The error cost of hardware-aligned ranks: the same methods and speedups with d' and d''
    rounded to each of ``multiples`` at the same multiply-add budget (rank selection on)."""
    reference = feature_maps(prepared["net"].features, prepared["test"][0])
    cases = [(method, True, multiple) for method in methods for multiple in multiples]
    records = run_cases(config, prepared, reference, cases, on_record, label_multiple=True)
    return {"records": records, "multiples": list(multiples)}


def run_cases(
    config: SweepConfig,
    prepared: dict,
    reference: torch.Tensor,
    cases: Sequence[Tuple[str, bool, int]],
    on_record: Optional[Callable[[dict], None]] = None,
    label_multiple: bool = False,
) -> List[dict]:
    """:func:`run_one` at every speedup of ``config`` for each (method, rank selection, rank
    multiple) of ``cases``; with ``label_multiple`` each record says its multiple."""
    records = []
    for method, selection, multiple in cases:
        for speedup in config.speedups:
            record = run_one(
                prepared["net"], prepared["calibration"][0], prepared["test"], reference,
                method=method, speedup=speedup, rank_selection=selection,
                samples_per_image=config.samples_per_image, schedule=config.schedule,
                seed=config.seed, round_ranks_to=multiple, heldout_fraction=config.heldout_fraction,
            )  # fmt: skip
            if label_multiple:
                record["round_ranks_to"] = multiple
            records.append(record)
            if on_record is not None:
                on_record(record)
    return records


def method_order(
    records: Sequence[dict], speedup: float, rank_selection: bool = True, key: str = "error"
) -> List[str]:
    """Methods at ``speedup`` sorted best first by ``key`` (error ascending, accuracy descending);
    jaderberg (no rank selection) is ranked with either setting."""
    rows = [
        r
        for r in records
        if r["speedup"] == speedup
        and "impossible" not in r
        and (r["rank_selection"] == rank_selection or not METHODS[r["method"]].channel)
    ]
    reverse = key == "accuracy"
    return [r["method"] for r in sorted(rows, key=lambda r: r[key], reverse=reverse)]


def time_channel_solve(
    samples: int = 30000,
    channels: int = 512,
    rank: int = 230,
    *,
    seed: int = 0,
    schedule=((0.01, 25), (1.0, 25)),
) -> dict:
    """Seconds of :func:`nonlinear_reconstruction` (the asymmetric problem, eq. 12) on a
    ``samples × channels`` problem at ``rank``, with the paper's 50-iteration schedule.

    Responses are correlated (a random linear map of 1.2·d-dimensional inputs, shifted so that
    about 40 % are negative), the regressor a perturbed copy, as in a deep layer.
    """
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(samples, int(1.2 * channels), generator=g)
    mixing = torch.randn(inputs.shape[1], channels, generator=g) / math.sqrt(inputs.shape[1])
    target = inputs @ mixing - 0.25
    regressor = target + 0.1 * torch.randn(samples, channels, generator=g)
    with peak_memory() as memory:
        start = time.perf_counter()
        solution = nonlinear_reconstruction(target, regressor, rank, schedule=schedule)
        seconds = time.perf_counter() - start
    relu = target.clamp(min=0)
    error = float((relu - solution.apply(regressor).clamp(min=0)).norm() / relu.norm())
    return {
        "samples": samples,
        "channels": channels,
        "rank": rank,
        "iterations": sum(int(i) for _, i in schedule),
        "seconds": seconds,
        "peak_mb": memory["peak_mb"],
        "error": error,
        "threads": torch.get_num_threads(),
    }


def time_compress_vs_forward(
    counts: Sequence[int] = (24,),
    size: int = 224,
    *,
    method: str = "asym3d",
    speedup: float = 4.0,
    batch: int = 8,
    samples_per_image: int = 10,
    seed: int = 0,
) -> dict:
    """Wall time of ``compress`` on full-width VGG-16 features (He-initialised random weights) over
    generated images, divided by the time of one plain forward pass of the same features over the
    same images (the mean of a pass just before and one just after the compression), for each
    image count in ``counts``. With two counts or more, also the *marginal* ratio between the
    smallest and the largest (extra compression time per extra forward time), which leaves out
    the per-layer costs that do not grow with the images (SVDs, the 50 solver iterations)."""
    features = random_features(1.0, seed)

    def forward(batches) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for x in batches:
                features(x)
        return time.perf_counter() - start

    runs = []
    for count in counts:
        images = make_task(count, size=size, seed=seed + 3000)[0]
        batches = _batches(images, batch)
        forward(batches[:1])  # warm-up
        before = forward(batches)
        with peak_memory() as memory:
            start = time.perf_counter()
            result = compress(
                features,
                batches,
                speedup=speedup,
                method=method,
                samples_per_image=samples_per_image,
                seed=seed,
                progress=False,
            )
            seconds = time.perf_counter() - start
        after = forward(batches)
        plain = (before + after) / 2
        runs.append(
            {
                "images": count,
                "forward_seconds": plain,
                "forward_passes": [before, after],
                "compress_seconds": seconds,
                "ratio": seconds / plain,
                "peak_mb": memory["peak_mb"],
                "theoretical_speedup": result.plan["theoretical_speedup"],
                "layer_seconds": {n: e["seconds"] for n, e in result.plan["layers"].items()},
            }
        )
    record = {
        "size": size,
        "method": method,
        "speedup": speedup,
        "batch": batch,
        "samples_per_image": samples_per_image,
        "runs": runs,
        "threads": torch.get_num_threads(),
        **{k: runs[-1][k] for k in ("images", "ratio")},
    }
    if len(runs) > 1:
        first, last = runs[0], runs[-1]
        record["marginal_ratio"] = (last["compress_seconds"] - first["compress_seconds"]) / (
            last["forward_seconds"] - first["forward_seconds"]
        )
    return record
