"""MAC-based vs latency-based rank selection (beyond the paper): plans from either budget, timed
on full-width VGG-16 and applied to the trained small network."""

from __future__ import annotations

import logging
import time
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from ..data.synthetic.shapes import make_task
from ..nn.network import apply_plan
from ..solver import SolverOptions, make_plan
from ..solver.network import conv_specs
from ..solver.planning import plan_energy
from ..utils.tables import text_table
from ..utils.timing import measure_many, num_threads
from .forms import random_features
from .plans import sampled_eigenvalues
from .quality import run_one
from .smallnet import (
    TrainedNet,
    feature_maps,
)

logger = logging.getLogger(__name__)


def plan_only(
    features: nn.Sequential,
    images: torch.Tensor,
    *,
    speedup: float,
    method: str = "asym",
    samples_per_image: int = 100,
    rank_cost: str = "with_1x1",
    latency_table=None,
    round_ranks_to: int = 1,
    skip=("conv1_1",),
    seed: int = 0,
) -> dict:
    """The plan ``compress`` would follow (ranks from eigenvalues of sampled responses), without
    solving any layer: enough to build the architecture and time it."""
    options = SolverOptions(
        speedup=speedup,
        method=method,
        samples_per_image=samples_per_image,
        skip=tuple(skip),
        seed=seed,
        rank_cost=rank_cost,
        latency_table=latency_table,
        round_ranks_to=round_ranks_to,
    )
    specs = conv_specs(features, tuple(images.shape[-2:]))
    eigenvalues = sampled_eigenvalues(
        features, images, samples_per_image=samples_per_image, seed=seed
    )
    return make_plan(specs, eigenvalues, options)


def measured_speedups(
    features: nn.Sequential,
    plans: Dict[str, dict],
    input_hw: Tuple[int, int],
    *,
    batch: int = 1,
    warmup: int = 2,
    repeats: int = 9,
    threads_count: Optional[int] = None,
) -> dict:
    """Median latency of the original features and of each plan's architecture (random weights:
    speed only), measured interleaved, and the speedups over the original."""
    x = torch.randn(batch, 3, *input_hw)
    models = {"original": features.eval()}
    for name, plan in plans.items():
        models[name] = apply_plan(features, plan).eval()
    calls = {name: (lambda m=model: m(x)) for name, model in models.items()}
    timings = measure_many(calls, warmup=warmup, repeats=repeats, threads=threads_count)
    base = timings["original"]["median_ms"]
    return {
        name: {"median_ms": t["median_ms"], "speedup": base / t["median_ms"]}
        for name, t in timings.items()
    }


def latency_comparison(
    net: Optional[TrainedNet],
    small_test: Optional[Tuple[torch.Tensor, torch.Tensor]],
    small_calibration: Optional[torch.Tensor],
    *,
    speedup: float = 4.0,
    method: str = "asym",
    size: int = 224,
    num_images: int = 8,
    samples_per_image: int = 100,
    round_to: int = 8,
    threads_count: Optional[int] = None,
    cache: Optional[str] = None,
    repeats: int = 5,
    measure_repeats: int = 9,
    small_samples_per_image: int = 10,
    schedule=((0.01, 25), (1.0, 25)),
    seed: int = 0,
) -> dict:
    """MAC-based vs latency-based rank selection at ``speedup`` (method ``asym``: the channel
    structure).

    1. Full-width VGG-16 at ``size``², batch 1 on this CPU: each conv's latency table
       (:func:`accel_det.solver.latency.measure_latency_table`, cached in ``cache``); plans from the
       eigenvalues of He-initialised VGG-16 on generated images (no ImageNet weights here), by
       multiply-adds, by latency, and by latency with ranks rounded to multiples of ``round_to``;
       their theoretical speedup, the speedup the table predicts and the measured speedup of the
       whole ``features`` (interleaved medians, random weights: speed only).
    2. The trained small network (``net``): the same three selections, the latency costs being the
       full-width table with the rank axis scaled by the width (:meth:`LatencyTable.rescaled`);
       held-out error and accuracy after compression.
    """
    from ..solver.latency import measure_latency_table

    result: dict = {"speedup": speedup, "method": method}
    with num_threads(threads_count) as used:
        full = random_features(1.0, seed)
        start = time.perf_counter()
        table = measure_latency_table(
            full,
            (size, size),
            batch=1,
            threads=used,
            cache=cache,
            skip=("conv1_1",),
            repeats=repeats,
        )
        result["table"] = {**table.meta, "key": table.key, "seconds": time.perf_counter() - start}
        images = make_task(num_images, size=size, seed=seed + 4000)[0]
        specs = conv_specs(full, (size, size))
        original_ms = 1e3 * table.predicted(specs, {})
        equal = "latency, same predicted ms as MACs"
        variants = {
            "MACs": dict(speedup=speedup, rank_cost="with_1x1"),
            "latency": dict(speedup=speedup, rank_cost="latency", latency_table=table),
            f"latency, ranks x{round_to}": dict(
                speedup=speedup, rank_cost="latency", latency_table=table, round_ranks_to=round_to
            ),
            equal: dict(
                rank_cost="latency", latency_table=table
            ),  # speedup: the MAC plan's predicted one
        }
        plans, vgg = {}, {}
        for name, options in variants.items():
            if name == equal:
                options = {**options, "speedup": vgg["MACs"]["predicted_speedup"]}
            plan = plan_only(
                full,
                images,
                method=method,
                samples_per_image=samples_per_image,
                seed=seed,
                **options,
            )
            ranks = {n: e["rank"] for n, e in plan["layers"].items() if e["rank"] is not None}
            predicted_ms = 1e3 * table.predicted(specs, ranks)
            plans[name] = plan
            vgg[name] = {
                "target": options["speedup"],
                "theoretical_speedup": plan["theoretical_speedup"],
                "pca_energy_product": plan_energy(plan),
                "predicted_ms": predicted_ms,
                "predicted_speedup": original_ms / predicted_ms,
                "ranks": ranks,
            }
        measured = measured_speedups(
            full, plans, (size, size), repeats=measure_repeats, threads_count=used
        )
        for name in plans:
            vgg[name].update(
                median_ms=measured[name]["median_ms"], measured_speedup=measured[name]["speedup"]
            )
        result["vgg16"] = {
            "original": {
                "median_ms": measured["original"]["median_ms"],
                "predicted_ms": original_ms,
            },
            **vgg,
        }
        result["threads"] = used

        if net is not None:
            input_hw = tuple(small_test[0].shape[-2:])
            small_specs = conv_specs(net.features, input_hw)
            small_table = table.rescaled(small_specs)
            small_original = small_table.predicted(small_specs, {})
            reference = feature_maps(net.features, small_test[0])
            small = {}
            # Ranks rounded to multiples of round_to at full width are multiples of round_to·width
            # here.
            small_round = max(
                1, round(round_to * small_specs[-1].out_channels / specs[-1].out_channels)
            )
            for name, options in variants.items():
                if "latency_table" in options:
                    options = {**options, "latency_table": small_table}
                if "round_ranks_to" in options:
                    options = {**options, "round_ranks_to": small_round}
                if name == equal:
                    mac_ranks = small["MACs"].get("ranks")
                    if mac_ranks is None:
                        continue
                    options = {
                        **options,
                        "speedup": small_original / small_table.predicted(small_specs, mac_ranks),
                    }
                record = run_one(
                    net,
                    small_calibration,
                    small_test,
                    reference,
                    method=method,
                    rank_selection=True,
                    samples_per_image=small_samples_per_image,
                    schedule=schedule,
                    seed=seed,
                    **options,
                )
                if "ranks" in record:
                    record["predicted_speedup"] = small_original / small_table.predicted(
                        small_specs, record["ranks"]
                    )
                small[name] = record
            result["small_net"] = small
    return result


def latency_table_text(comparison: dict) -> str:
    """The MAC- vs latency-based selections side by side."""
    header = [
        "selection (budget)",
        "VGG-16 theor.",
        "table-predicted",
        "measured",
        "small net theor.",
        "small net E (eq. 13)",
        "small net error / top-1",
    ]
    body = []
    for name, row in comparison["vgg16"].items():
        if name == "original":
            continue
        small = comparison.get("small_net", {}).get(name, {})
        quality = (
            "impossible"
            if "impossible" in small
            else f"{small['error']:.3f} / {100 * small['accuracy']:.1f}%"
            if small
            else "-"
        )
        small_theoretical = (
            f"{small['theoretical_speedup']:.2f}x" if "theoretical_speedup" in small else "-"
        )
        energy = f"{small['pca_energy_product']:.3f}" if "pca_energy_product" in small else "-"
        body.append(
            [
                f"{name} ({row['target']:.2f}x)",
                f"{row['theoretical_speedup']:.2f}x",
                f"{row['predicted_speedup']:.2f}x",
                f"{row['measured_speedup']:.2f}x ({row['median_ms']:.0f} ms)",
                small_theoretical,
                energy,
                quality,
            ]
        )
    return text_table(header, body)
