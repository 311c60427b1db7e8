"""Process groups and every collective accel-det uses under torch.distributed.

``torchrun`` (or :func:`accel_det.utils.launch.launch`) sets the env, :func:`init_distributed`
joins the group (NCCL on GPUs, gloo on the CPU); the solver pools sampled responses with
:func:`gather_samples` so that every process solves the problems a single process would solve.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import torch
from torch import distributed as dist
from torch import nn

from ..errors import AccelDetError


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    return not is_distributed() or dist.get_rank() == 0


def collective_device() -> torch.device:
    """Where tensors must be for a collective of the current process group: NCCL moves CUDA
    tensors only; gloo and others take CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_samples(rows: torch.Tensor, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """All processes' sample rows (n × d) and their image indices, sorted by image index
    (stable)."""
    if not is_distributed():
        return rows, images
    device = collective_device()
    count = torch.tensor([rows.shape[0]], device=device)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    largest = int(max(c.item() for c in counts))
    padded = torch.zeros(largest, rows.shape[1], dtype=rows.dtype, device=device)
    padded[: rows.shape[0]] = rows.to(device)
    padded_images = torch.full((largest,), -1, dtype=torch.long, device=device)
    padded_images[: images.shape[0]] = images.to(device)
    all_rows = [torch.empty_like(padded) for _ in counts]
    all_images = [torch.empty_like(padded_images) for _ in counts]
    dist.all_gather(all_rows, padded)
    dist.all_gather(all_images, padded_images)
    rows = torch.cat([r[: int(c.item())] for r, c in zip(all_rows, counts)]).cpu()
    images = torch.cat([i[: int(c.item())] for i, c in zip(all_images, counts)]).cpu()
    order = torch.argsort(images, stable=True)
    return rows[order], images[order]


def sum_over_processes(value: int) -> int:
    if not is_distributed():
        return value
    total = torch.tensor([value], dtype=torch.long, device=collective_device())
    dist.all_reduce(total)
    return int(total.item())


def broadcast_parameters(module: nn.Module) -> None:
    """Make every process hold process 0's weights (the solvers may differ in the last bits)."""
    if not is_distributed():
        return
    device = collective_device()
    for tensor in module.state_dict().values():
        buffer = tensor.detach().to(device).contiguous()
        dist.broadcast(buffer, src=0)
        tensor.detach().copy_(buffer.to(tensor.device))


def all_gather_objects(value) -> List:
    """``value`` of every process, in process order (``[value]`` when not distributed)."""
    if not is_distributed():
        return [value]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


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
            raise AccelDetError(
                f"device {name} asked for but CUDA is not available; use --device cpu"
            )
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        elif device.index >= torch.cuda.device_count():
            raise AccelDetError(
                f"device {name} asked for but there are {torch.cuda.device_count()} GPU(s)"
            )
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
        raise AccelDetError(
            f"--device {device} under torchrun: give --device cuda (or auto); each process "
            "takes its local rank's GPU (CUDA_VISIBLE_DEVICES chooses which GPUs)"
        )
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
    messages = all_gather_objects(None if error is None else str(error))
    failed = [(rank, message) for rank, message in enumerate(messages) if message is not None]
    if not failed:
        return
    rank, message = failed[0]
    if dist.get_rank() != 0:
        raise ReportedElsewhere(message)
    if rank != 0:
        message = f"process {rank}: {message}"
    raise AccelDetError(message) from None
