"""Peak memory of a run: the increase of the process's resident set size (RSS) over its value at
the start, polled by a thread with psutil (tracemalloc does not see PyTorch's C++ allocations);
freed heap is handed back to the OS (``malloc_trim``) before each run so that the baseline is
low."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import threading
from typing import Iterator


def trim_heap() -> None:
    gc.collect()
    with contextlib.suppress(Exception):  # glibc only
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextlib.contextmanager
def peak_memory(interval: float = 0.002) -> Iterator[dict]:
    """Yields a dict that, after the block, holds ``peak_mb``: the largest RSS increase over the
    RSS at entry, polled every ``interval`` seconds by a thread (psutil)."""
    import psutil

    trim_heap()
    process = psutil.Process()
    baseline = process.memory_info().rss
    result = {
        "peak_mb": 0.0,
        "method": "RSS increase over the start of the run, polled every 2 ms (psutil)",
    }
    peak = [baseline]
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            stop.wait(interval)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], process.memory_info().rss)
        result["peak_mb"] = (peak[0] - baseline) / 2**20
