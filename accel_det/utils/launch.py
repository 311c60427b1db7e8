"""Start a local process group (one process per GPU, or CPU processes), as ``torchrun
--standalone`` would, for tools that take ``--num-gpus``; the group itself is
:mod:`accel_det.utils.dist`'s."""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from typing import Callable, Sequence

from ..errors import AccelDetError


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launched(
    local_rank: int, world_size: int, port: int, function: Callable[..., int], args: Sequence
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world_size),
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        LOCAL_WORLD_SIZE=str(world_size),
    )
    try:
        code = function(*args)
    except BaseException:  # an unexpected error: its traceback, as a single process would show it
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(int(code or 0))


def launch(
    function: Callable[..., int], num_processes: int, args: Sequence = (), grace_s: float = 30.0
) -> int:
    """Run ``function(*args)`` in ``num_processes`` new local processes that form a process group
    the way ``torchrun --standalone`` would (the same env variables, so :func:`init_distributed`
    joins it), like ``detectron2.engine.launch`` without needing detectron2. ``function`` is a
    module-level function returning an exit code. Returns 0, or the exit code of the first
    process that failed; the others get ``grace_s`` seconds to end by themselves (to report the
    same error, or to be stopped in a collective that can no longer complete), then are stopped."""
    if num_processes < 1:
        raise AccelDetError(f"the number of processes must be positive, got {num_processes}")
    if num_processes == 1:
        return int(function(*args) or 0)
    import multiprocessing
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("spawn")
    port = _free_port()
    alive = [
        context.Process(target=_launched, args=(rank, num_processes, port, function, tuple(args)))
        for rank in range(num_processes)
    ]
    for process in alive:
        process.start()
    code, deadline = 0, None
    try:
        while alive:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = wait([p.sentinel for p in alive], timeout=timeout)
            if not ready:
                break
            for process in [p for p in alive if p.sentinel in ready]:
                process.join()
                alive.remove(process)
                if process.exitcode != 0 and code == 0:
                    code = process.exitcode if process.exitcode > 0 else 1
                    deadline = time.monotonic() + grace_s
    finally:  # grace over, or Ctrl-C here
        for process in alive:
            process.terminate()
        for process in alive:
            process.join()
    return code
