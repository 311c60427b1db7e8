"""What the solver shares between processes under torch.distributed: each process samples its own
shard of the images, then every process sees all samples, in image order, so that all solve the
same problems a single process would solve."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import distributed as dist
from torch import nn


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
    """All processes' sample rows (n × d) and their image indices, sorted by image index (stable)."""
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
