"""The process-group plumbing of the ImageNet tools: ``torchrun`` (or :func:`launch`) sets the env,
:func:`init_distributed` joins the group; fine-tuning, evaluation and compression share it. The
collectives themselves (which device a backend takes, pooling samples) are the solver's
(:mod:`accel_det.solver.distributed`)."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import torch
import torch.distributed as dist

from ..errors import AccelDetError
from ..solver.distributed import collective_device, is_distributed

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: the local rank's GPU when there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AccelDetError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise AccelDetError(f"device {name} asked for but CUDA is not available; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        elif device.index >= torch.cuda.device_count():
            raise AccelDetError(f"device {name} asked for but there are {torch.cuda.device_count()} GPU(s)")
        torch.cuda.set_device(device)
    return device


def under_launcher() -> bool:
    """True when ``torchrun`` (or :func:`launch`) started this process as part of a group."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1): NCCL on GPUs,
    gloo on the CPU. A single process needs nothing. Calling it again returns the same info."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size > 1 and device.startswith("cuda:"):
        raise AccelDetError(f"--device {device} under torchrun: give --device cuda (or auto); each process "
                            "takes its local rank's GPU (CUDA_VISIBLE_DEVICES chooses which GPUs)")
    target = pick_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if target.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=target)


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` over the processes (itself when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        reduced = values.detach().to(collective_device()).clone()
        dist.all_reduce(reduced)
        return reduced.to(values.device)
    return values


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class ReportedElsewhere(AccelDetError):
    """An error that process 0 reports for the whole group: the other processes exit quietly
    (``accel_det.utils.cli`` prints nothing for it) and with code 0, so that the launcher
    (torchrun, :func:`launch`) does not stop process 0 before it has said what went wrong; the
    group's exit code is process 0's."""

    quiet = True
    exit_code = 0


@contextlib.contextmanager
def agreed_errors() -> Iterator[None]:
    """Run a setup step that holds no collective; afterwards the processes compare notes, and if
    any of them raised an :class:`AccelDetError` every one raises it: process 0 with the message
    (naming the process it came from when not its own), the others a quiet
    :class:`ReportedElsewhere`. So a bad input is one line under ``torchrun``, not one per process,
    and no process waits forever in a collective for one that has failed."""
    error: Optional[AccelDetError] = None
    try:
        yield
    except AccelDetError as raised:
        if not is_distributed():
            raise
        error = raised
    if not is_distributed():
        return
    messages: list = [None] * dist.get_world_size()
    dist.all_gather_object(messages, None if error is None else str(error))
    failed = [(rank, message) for rank, message in enumerate(messages) if message is not None]
    if not failed:
        return
    rank, message = failed[0]
    if dist.get_rank() != 0:
        raise ReportedElsewhere(message)
    if rank != 0:
        message = f"process {rank}: {message}"
    raise AccelDetError(message) from None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launched(local_rank: int, world_size: int, port: int, function: Callable[..., int], args: Sequence) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size),
                      RANK=str(local_rank), LOCAL_RANK=str(local_rank), LOCAL_WORLD_SIZE=str(world_size))
    try:
        code = function(*args)
    except BaseException:  # an unexpected error: its traceback, as a single process would show it
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(int(code or 0))


def launch(function: Callable[..., int], num_processes: int, args: Sequence = (), grace_s: float = 30.0) -> int:
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
    alive = [context.Process(target=_launched, args=(rank, num_processes, port, function, tuple(args)))
             for rank in range(num_processes)]
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
