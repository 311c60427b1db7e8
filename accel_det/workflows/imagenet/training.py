"""The pieces of ImageNet fine-tuning around the training loop: the seeded epoch sampler (so
that a resumed run sees the same batches), the metrics log and the output folder checks."""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Iterator, List, Optional, Tuple

import torch
from torch.utils.data import Sampler

from ...errors import AccelDetError
from ...utils.dist import DistInfo, barrier
from ...utils.io import atomic_write_text, check_writable_folder, write_failure

logger = logging.getLogger(__name__)

CHECKPOINT = "last_checkpoint.pth"
FINAL_WEIGHTS = "model_final.pth"
FINAL_RECORD = "model_final.json"
METRICS = "metrics.json"
TENSORBOARD = "tensorboard"


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Seed of one image's augmentation in one epoch."""
    return (seed * 1_000_003 + epoch * 10_000_019 + index * 7919) % (2**62)


class EpochBatchSampler(Sampler):
    """This process's micro-batches of ``(index, augmentation seed)`` for one epoch: a permutation
    fixed by (seed, epoch), padded to a multiple of the process count, split ``rank::world_size``;
    the first ``skip`` micro-batches are left out (resuming within an epoch)."""

    def __init__(
        self,
        length: int,
        micro_batch: int,
        epoch: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        skip: int = 0,
    ):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(length, generator=generator).tolist()
        per_rank = math.ceil(length / world_size)
        order += order[: per_rank * world_size - length]
        self.indices = order[rank::world_size]
        self.micro_batch, self.epoch, self.seed, self.skip = micro_batch, epoch, seed, skip

    @staticmethod
    def micro_batches_per_epoch(length: int, micro_batch: int, world_size: int) -> int:
        return math.ceil(math.ceil(length / world_size) / micro_batch)

    def __len__(self) -> int:
        return max(0, math.ceil(len(self.indices) / self.micro_batch) - self.skip)

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        for start in range(self.skip * self.micro_batch, len(self.indices), self.micro_batch):
            chunk = self.indices[start : start + self.micro_batch]
            yield [(i, sample_seed(self.seed, self.epoch, i)) for i in chunk]


def iteration_of(line: str) -> Optional[int]:
    """The iteration of a metrics line; None for a blank line or one a kill cut in half (appends
    are not atomic, and a half line must not stop a resume)."""
    try:
        return int(json.loads(line).get("iteration", 0))
    except ValueError:
        return None


class MetricsLog:
    """``metrics.json``: one JSON object per line (as Detectron2 writes it), plus TensorBoard."""

    def __init__(
        self, folder: str, resume_from: Optional[int], enabled: bool, tensorboard: bool = True
    ):
        self.path = os.path.join(folder, METRICS)
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        if resume_from is not None and os.path.exists(
            self.path
        ):  # drop lines of the interrupted part
            with open(self.path, encoding="utf-8") as f:
                kept = [
                    line
                    for line in f
                    if (number := iteration_of(line)) is not None and number <= resume_from
                ]
            atomic_write_text("".join(kept), self.path)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(
                    os.path.join(folder, TENSORBOARD), purge_step=resume_from
                )
            except ImportError as error:  # tensorboard is optional for the run itself
                logger.warning("no TensorBoard logs (%s)", error)

    def write(self, iteration: int, values: dict) -> None:
        if not self.enabled:
            return
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"iteration": iteration, **values}) + "\n")
        except OSError as error:
            failure = write_failure(self.path, error)
            if failure is None:
                raise
            raise failure from None
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and key not in ("epoch",):
                    self.writer.add_scalar(key, value, iteration)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def check_output(folder: str, resume: bool, overwrite: bool, create: bool = True) -> bool:
    """Refuse an unwritable folder or existing outputs unless ``overwrite`` (or ``resume``), before
    any work; returns whether there is a checkpoint to resume from."""
    check_writable_folder(folder, create=create)
    checkpoint = os.path.join(folder, CHECKPOINT)
    final = os.path.join(folder, FINAL_WEIGHTS)
    if resume:
        if not os.path.exists(checkpoint) and os.path.exists(final) and not overwrite:
            raise AccelDetError(
                f"output {final} already exists and there is no "
                f"checkpoint to resume; pass --overwrite to replace it"
            )
        return os.path.exists(checkpoint)
    for path in (final, os.path.join(folder, FINAL_RECORD), checkpoint):
        if os.path.exists(path) and not overwrite:
            # a run stopped while writing model_final.* is finished by --resume
            hint = " or --resume to continue it" if os.path.exists(checkpoint) else ""
            raise AccelDetError(
                f"output {path} already exists; pass --overwrite to replace it{hint}"
            )
    return False


def prepare_output(folder: str, resume: bool, overwrite: bool, dist_info: DistInfo) -> bool:
    """:func:`check_output`, then (main process only) remove the files of an earlier run that is
    not resumed, so that logs and checkpoints never mix two runs."""
    has_checkpoint = check_output(folder, resume, overwrite)
    if resume and not has_checkpoint:
        logger.warning(
            "--resume: no checkpoint in %s yet, starting from the first iteration", folder
        )
    if has_checkpoint:
        return True
    barrier()
    if dist_info.is_main:
        for name in (FINAL_WEIGHTS, FINAL_RECORD, CHECKPOINT, METRICS):
            if os.path.exists(os.path.join(folder, name)):
                os.remove(os.path.join(folder, name))
        events = os.path.join(folder, TENSORBOARD)
        if os.path.isdir(events):
            for name in os.listdir(events):
                if name.startswith("events.out.tfevents."):
                    os.remove(os.path.join(events, name))
    barrier()
    return False
