"""Wall-clock latency of a model call: warm-up, then the median of repeats, at a stated thread count.

The paper measures "actual speedup" as running time per view on one CPU thread (§6.6); here the
thread count is an argument and is recorded with every result. Several models are measured
*interleaved* (round-robin, one call of each per round), so a slow spell of a shared machine
touches all of them alike, and speedups (ratios of medians) stay fair.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from typing import Callable, Dict, Iterator, Mapping, Optional

import torch


@contextlib.contextmanager
def num_threads(threads: Optional[int]) -> Iterator[int]:
    """Run the block with ``torch.set_num_threads(threads)`` (None: unchanged), then restore."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def _summary(times, threads, warmup) -> dict:
    ms = sorted(t * 1000.0 for t in times)
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
                 threads: Optional[int] = 1) -> Dict[str, dict]:
    """Latency of each zero-argument callable (run under ``torch.inference_mode``), interleaved:
    ``warmup`` untimed rounds, then ``repeats`` timed rounds. Returns, per name, the median /
    min / mean / p90 in milliseconds and the settings."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    times: Dict[str, list] = {name: [] for name in calls}
    with num_threads(threads) as used, torch.inference_mode():
        for _ in range(warmup):
            for call in calls.values():
                call()
        for _ in range(repeats):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    return {name: _summary(t, used, warmup) for name, t in times.items()}


def measure_latency(call: Callable[[], object], *, warmup: int = 3, repeats: int = 20,
                    threads: Optional[int] = 1) -> dict:
    """Latency of one zero-argument callable (see :func:`measure_many`)."""
    return measure_many({"call": call}, warmup=warmup, repeats=repeats, threads=threads)["call"]


def machine() -> dict:
    """What the numbers were measured on."""
    return {
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
