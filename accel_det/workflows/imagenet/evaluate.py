"""Top-1 / top-5 1-view error of a classifier (the paper's Tables 6–8), plain or accelerated, one or
many processes."""

from __future__ import annotations

import logging
import time
from typing import Dict, Iterable, Optional, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from ...data.images import collate_skipping
from ...utils.dist import all_reduce_sum
from ...utils.tables import text_table

logger = logging.getLogger(__name__)


class ShardSampler(Sampler):
    """Indices ``rank, rank + world_size, …``: every image exactly once over all processes."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, length, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices)


def eval_loader(
    dataset: Dataset,
    batch_size: int,
    workers: int,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """In-order batches ``(images, labels, skipped)`` of this process's share of ``dataset``."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ShardSampler(len(dataset), rank, world_size),
        num_workers=workers,
        collate_fn=collate_skipping,
        pin_memory=pin_memory,
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device,
    *,
    topk: Sequence[int] = (1, 5),
    progress: bool = True,
    desc: str = "evaluate",
    amp: bool = False,
) -> Dict[str, float]:
    """Top-k errors (in %) of ``model`` on ``loader``'s ``(images, labels, skipped)`` batches,
    summed over processes. k larger than the number of classes counts every image as correct."""
    was_training = model.training
    model.eval()
    counts = torch.zeros(len(topk) + 2, dtype=torch.float64)  # correct@k…, images, skipped
    start = time.perf_counter()
    for images, labels, skipped in tqdm(
        loader, desc=desc, unit="batch", disable=not progress, leave=False
    ):
        counts[-1] += skipped
        if images is None:
            continue
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(images)
        counts[:-1] += correct_counts(logits.float(), labels, topk)
    model.train(was_training)
    counts = all_reduce_sum(counts)
    total = int(counts[-2])
    result: Dict[str, float] = {
        "images": total,
        "skipped_unreadable": int(counts[-1]),
        "seconds": round(time.perf_counter() - start, 2),
    }
    for i, k in enumerate(topk):
        result[f"top{k}_error"] = 100.0 * (1 - float(counts[i]) / total) if total else float("nan")
    return result


def correct_counts(logits: torch.Tensor, labels: torch.Tensor, topk: Sequence[int]) -> torch.Tensor:
    """Number of images whose label is among the top-k logits, for each k; then the image count."""
    largest = min(max(topk), logits.shape[1])
    top = logits.topk(largest, dim=1).indices
    hits = top.eq(labels[:, None])
    out = [float(hits[:, : min(k, largest)].any(1).sum()) for k in topk]
    return torch.tensor(out + [float(labels.shape[0])], dtype=torch.float64)


def format_results(rows: Dict[str, Dict[str, float]], baseline: Optional[str] = None) -> str:
    """A table of top-1 / top-5 errors per model; with ``baseline``, the increase of error (the
    paper's "err. ↑ %") of every other model over it."""
    header = ["model", "top-1 err. %", "top-5 err. %"]
    if baseline:
        header += ["top-1 err. ↑ %", "top-5 err. ↑ %"]
    table = [header]
    for name, r in rows.items():
        row = [name, f"{r['top1_error']:.2f}", f"{r['top5_error']:.2f}"]
        if baseline:
            b = rows[baseline]
            row += (
                ["-", "-"]
                if name == baseline
                else [
                    f"{r['top1_error'] - b['top1_error']:+.2f}",
                    f"{r['top5_error'] - b['top5_error']:+.2f}",
                ]
            )
        table.append(row)
    return text_table(header, table[1:], align="l" + "r" * (len(header) - 1))
