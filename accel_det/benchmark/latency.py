"""Wall-clock latency of a model call: warm-up, then the median of repeats, at a stated thread count.

The paper measures "actual speedup" as running time per view on one CPU thread (§6.6); here the
thread count is an argument and is recorded with every result. Several models are measured
*interleaved* (round-robin, one call of each per round), so a slow spell of a shared machine
touches all of them alike, and speedups (ratios of medians) stay fair.

The timer itself is the solver's (:func:`accel_det.solver.latency.time_calls`, which also prices
ranks for latency-aware rank selection): one clock for every latency accel-det reports. This
module adds the summary (median, min, mean, p90) and the record of where it was measured.
"""

from __future__ import annotations

import os
import platform
import statistics
from typing import Callable, Dict, Mapping, Optional

import torch

from ..solver.latency import device_name, num_threads, time_calls

__all__ = ["machine", "measure_latency", "measure_many", "num_threads", "summarize"]


def summarize(seconds, threads: int, warmup: int) -> dict:
    """Median / min / mean / p90 in milliseconds of per-call ``seconds``, with the settings."""
    ms = sorted(t * 1000.0 for t in seconds)
    return {
        "median_ms": statistics.median(ms),
        "min_ms": ms[0],
        "mean_ms": statistics.fmean(ms),
        "p90_ms": ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))],
        "repeats": len(ms),
        "warmup": warmup,
        "threads": threads,
    }


def measure_many(calls: Mapping[str, Callable[[], object]], *, warmup: int = 3, repeats: int = 20,
                 threads: Optional[int] = 1, device=None) -> Dict[str, dict]:
    """Latency of each zero-argument callable (run under ``torch.inference_mode``), interleaved:
    ``warmup`` untimed rounds, then ``repeats`` timed rounds, with ``threads`` torch CPU threads
    (None: as set). On a CUDA ``device``, CUDA events time each call. Returns, per name, the
    median / min / mean / p90 in milliseconds and the settings."""
    with num_threads(threads) as used:
        times = time_calls(calls, warmup=warmup, repeats=repeats, device=device)
    return {name: summarize(t, used, warmup) for name, t in times.items()}


def measure_latency(call: Callable[[], object], *, warmup: int = 3, repeats: int = 20,
                    threads: Optional[int] = 1, device=None) -> dict:
    """Latency of one zero-argument callable (see :func:`measure_many`)."""
    return measure_many({"call": call}, warmup=warmup, repeats=repeats, threads=threads, device=device)["call"]


def machine(device="cpu") -> dict:
    """What the numbers were measured on."""
    return {
        "processor": platform.processor() or platform.machine(),
        "device": device_name(device),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
