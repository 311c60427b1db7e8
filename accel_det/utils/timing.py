"""The one timer of accel-det, and where a time was measured.

Every latency accel-det reports (rank-selection latency tables, the speed benchmark, the demo)
comes from :func:`time_calls`: warm-up rounds, then timed rounds in which each call runs once, in
order (interleaved, so that a slow spell of a shared machine touches every call alike); CUDA
events on a GPU, ``time.perf_counter`` elsewhere. Speedups are ratios of medians. To change how
latency is measured, change this file.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence

import torch
from torch import nn


@contextlib.contextmanager
def num_threads(threads: Optional[int]) -> Iterator[int]:
    """Run the block with ``torch.set_num_threads(threads)`` (None or 0: unchanged), then restore;
    yields the thread count in effect."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def time_calls(
    calls: Mapping[str, Callable[[], object]], *, warmup: int, repeats: int, device=None
) -> Dict[str, List[float]]:
    """Seconds of each zero-argument call in each of ``repeats`` timed rounds, after ``warmup``
    untimed rounds; one call of each per round, in order. Runs under ``torch.inference_mode``.

    On a CUDA ``device`` each call is timed with CUDA events (the device is synchronised before
    the call and after it); elsewhere with ``time.perf_counter``.
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    cuda = device is not None and torch.device(device).type == "cuda"
    times: Dict[str, List[float]] = {name: [] for name in calls}
    with torch.inference_mode():
        for _ in range(warmup):
            for call in calls.values():
                call()
        for _ in range(repeats):
            for name, call in calls.items():
                if cuda:
                    start = torch.cuda.Event(enable_timing=True)
                    end = torch.cuda.Event(enable_timing=True)
                    torch.cuda.synchronize(device)
                    start.record()
                    call()
                    end.record()
                    end.synchronize()
                    times[name].append(start.elapsed_time(end) / 1e3)
                else:
                    begin = time.perf_counter()
                    call()
                    times[name].append(time.perf_counter() - begin)
    return times


def time_modules(
    modules: Mapping[str, nn.Module], x: torch.Tensor, warmup: int, repeats: int
) -> Dict[str, float]:
    """Median seconds of ``module(x)`` for each module (:func:`time_calls`)."""
    calls = {name: (lambda m=module: m(x)) for name, module in modules.items()}
    times = time_calls(calls, warmup=warmup, repeats=max(1, repeats), device=x.device)
    return {name: statistics.median(values) for name, values in times.items()}


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


def measure_many(
    calls: Mapping[str, Callable[[], object]],
    *,
    warmup: int = 3,
    repeats: int = 20,
    threads: Optional[int] = 1,
    device=None,
) -> Dict[str, dict]:
    """Latency of each zero-argument callable, interleaved (:func:`time_calls`), with ``threads``
    torch CPU threads (None: as set). Returns, per name, :func:`summarize`'s summary."""
    with num_threads(threads) as used:
        times = time_calls(calls, warmup=warmup, repeats=repeats, device=device)
    return {name: summarize(t, used, warmup) for name, t in times.items()}


def measure_latency(
    call: Callable[[], object],
    *,
    warmup: int = 3,
    repeats: int = 20,
    threads: Optional[int] = 1,
    device=None,
) -> dict:
    """Latency of one zero-argument callable (see :func:`measure_many`)."""
    return measure_many(
        {"call": call}, warmup=warmup, repeats=repeats, threads=threads, device=device
    )["call"]


def measure_for(
    calls: Mapping[str, Callable[[], object]],
    *,
    threads: Optional[int],
    seconds: float,
    warmup: int = 1,
    min_repeats: int = 3,
    max_repeats: int = 15,
    device=None,
) -> Dict[str, dict]:
    """:func:`measure_many` with as many timed rounds as fit in about ``seconds`` (between
    ``min_repeats`` and ``max_repeats``): the first warm-up round is timed to size the rest."""
    with num_threads(threads) as used:
        first = time_calls(calls, warmup=0, repeats=1, device=device) if warmup > 0 else None
        if first is not None:
            round_seconds = sum(t[0] for t in first.values())
            repeats = int(min(max_repeats, max(min_repeats, seconds // max(round_seconds, 1e-6))))
        else:
            repeats = max_repeats
        times = time_calls(calls, warmup=max(0, warmup - 1), repeats=repeats, device=device)
    return {name: summarize(t, used, warmup) for name, t in times.items()}


def time_chain(
    modules: Sequence, x: torch.Tensor, *, threads: Optional[int] = 1, repeats: int = 5
) -> List[float]:
    """Median seconds of each module of a chain on its own input (the output of the modules
    before it), the modules interleaved (:func:`time_calls`)."""
    inputs = []
    with torch.inference_mode():
        for module in modules:
            inputs.append(x.clone())
            x = module(x)
    calls = {str(i): (lambda m=m, h=h: m(h)) for i, (m, h) in enumerate(zip(modules, inputs))}
    with num_threads(threads):
        times = time_calls(calls, warmup=1, repeats=repeats)
    return [statistics.median(times[str(i)]) for i in range(len(modules))]


def device_name(device) -> str:
    """A readable, stable name of ``device``: the GPU's name, or the CPU model."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cpus)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cpus)"


def machine(device="cpu") -> dict:
    """What the numbers were measured on."""
    return {
        "processor": platform.processor() or platform.machine(),
        "device": device_name(device),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
