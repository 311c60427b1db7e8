"""Fine-tuning ("FT", Tables 7–8): end-to-end SGD on ImageNet, lr 1e-5, batch 128, 5 epochs.

One process or many (``torchrun``, DDP). The run is reproducible: the epoch's image order comes
from (seed, epoch), each image's augmentation from (seed, epoch, image) and dropout from
(seed, rank, iteration), so ``--resume`` from a checkpoint ends where an uninterrupted run ends.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ... import __version__
from ...data.images import collate_skipping
from ...errors import AccelDetError
from ...models.vgg import CROP_SIZE, RESIZE_SIZE, load_checked
from ...utils.dist import DistInfo, agreed_errors, all_reduce_sum
from ...utils.io import atomic_save_pair, atomic_torch_save, load_torch_file
from .evaluate import eval_loader, evaluate
from .training import (
    CHECKPOINT,
    FINAL_RECORD,
    FINAL_WEIGHTS,
    EpochBatchSampler,
    MetricsLog,
    prepare_output,
    sample_seed,
)

logger = logging.getLogger(__name__)


@dataclass
class FinetuneConfig:
    """The paper's FT recipe as defaults; momentum, weight decay and augmentation are not given by
    the paper (VGG's own training values and Caffe's usual crop + flip are used)."""

    epochs: int = 5
    lr: float = 1e-5
    batch_size: int = 128  # over all processes and accumulation steps
    momentum: float = 0.9
    weight_decay: float = 5e-4
    accumulation: int = 1  # micro-batches per step, for GPUs that cannot hold the whole batch
    max_iters: Optional[int] = None
    checkpoint_period: int = 1000
    log_period: int = 20
    eval_period: int = 1  # epochs between evaluations on the validation set (0: only at the end)
    seed: int = 0
    augment: str = "crop-flip"
    resize: int = RESIZE_SIZE
    crop: int = CROP_SIZE
    workers: int = 8
    amp: bool = False  # bfloat16 autocast on GPUs

    def check(self, world_size: int) -> int:
        """The per-process micro-batch; a clear error for impossible settings."""
        for name in ("epochs", "batch_size", "accumulation", "checkpoint_period", "log_period"):
            if getattr(self, name) < 1:
                raise AccelDetError(
                    f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}"
                )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise AccelDetError(f"--lr must be a positive number, got {self.lr}")
        if self.max_iters is not None and self.max_iters < 1:
            raise AccelDetError(f"--max-iters must be at least 1, got {self.max_iters}")
        share = world_size * self.accumulation
        if self.batch_size % share:
            raise AccelDetError(
                f"--batch-size {self.batch_size} is not divisible by {world_size} process(es) x "
                f"{self.accumulation} accumulation step(s)"
            )
        return self.batch_size // share


def finetune(
    model: nn.Module,
    train_set: Dataset,
    output: str,
    config: FinetuneConfig,
    dist_info: DistInfo,
    *,
    val_set: Optional[Dataset] = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    record: Optional[dict] = None,
    info: Optional[dict] = None,
    stop_after: Optional[int] = None,
) -> dict:
    """Fine-tune ``model`` on ``train_set`` (items ``(image, label)`` or ``None``, indexed by
    ``(index, seed)``), writing checkpoints, logs and ``model_final.pth`` / ``.json`` in ``output``.

    The JSON record is ``record`` (for an accelerated model, its plan) with a ``finetune`` section:
    ``info`` (sources, data) and the run's configuration and results. Returns it. ``stop_after`` (a
    test hook) interrupts after that iteration like a Ctrl-C."""
    micro = config.check(dist_info.world_size)
    has_checkpoint = prepare_output(output, resume, overwrite, dist_info)
    device = dist_info.device
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model.to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    micro_per_epoch = EpochBatchSampler.micro_batches_per_epoch(
        len(train_set), micro, dist_info.world_size
    )
    steps_per_epoch = math.ceil(micro_per_epoch / config.accumulation)
    total = config.epochs * steps_per_epoch
    if config.max_iters is not None:
        total = min(total, config.max_iters)

    iteration = 0
    checkpoint_path = os.path.join(output, CHECKPOINT)
    if has_checkpoint:
        iteration = _load_checkpoint(checkpoint_path, model, optimizer, steps_per_epoch, config)
        logger.info("resuming from %s at iteration %d", checkpoint_path, iteration)
    wrapped = (
        DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if dist_info.distributed
        else model
    )
    log = MetricsLog(output, iteration if has_checkpoint else None, dist_info.is_main)
    if dist_info.is_main:
        logger.info(
            "fine-tuning: %d images, %d iteration(s) (%d per epoch, "
            "batch %d = %d process(es) x %d x %d accumulation), lr %g",
            len(train_set),
            total,
            steps_per_epoch,
            config.batch_size,
            dist_info.world_size,
            micro,
            config.accumulation,
            config.lr,
        )

    bar = tqdm(
        total=total,
        initial=min(iteration, total),
        desc="fine-tune",
        unit="it",
        disable=not (progress and dist_info.is_main),
    )
    skipped = torch.zeros(1, dtype=torch.float64)
    window: List[float] = []
    window_start, images_seen = time.perf_counter(), 0
    evaluations = {}
    model.train()
    epoch = iteration // steps_per_epoch
    while iteration < total:
        step_in_epoch = iteration - epoch * steps_per_epoch
        sampler = EpochBatchSampler(
            len(train_set),
            micro,
            epoch,
            config.seed,
            dist_info.rank,
            dist_info.world_size,
            skip=step_in_epoch * config.accumulation,
        )
        loader = DataLoader(
            train_set,
            batch_sampler=sampler,
            num_workers=config.workers,
            collate_fn=collate_skipping,
            pin_memory=device.type == "cuda",
            generator=torch.Generator(),
        )
        batches = iter(loader)
        for step in range(step_in_epoch, steps_per_epoch):
            if iteration >= total:
                break
            torch.manual_seed(sample_seed(config.seed + 1, dist_info.rank, iteration))  # dropout
            count = min(config.accumulation, micro_per_epoch - step * config.accumulation)
            optimizer.zero_grad(set_to_none=True)
            loss_sum = 0.0
            for j in range(count):
                images, labels, bad = next(batches)
                skipped += bad
                weight = 1.0
                if (
                    images is None
                ):  # every image of this micro-batch unreadable: keep the processes in step
                    images = torch.zeros(1, 3, config.crop, config.crop)
                    labels, weight = torch.zeros(1, dtype=torch.long), 0.0
                images, labels = (
                    images.to(device, non_blocking=True),
                    labels.to(device, non_blocking=True),
                )
                sync = j == count - 1 or not dist_info.distributed
                with contextlib.nullcontext() if sync else wrapped.no_sync():
                    with torch.autocast(
                        device.type,
                        dtype=torch.bfloat16,
                        enabled=config.amp and device.type == "cuda",
                    ):
                        logits = wrapped(images)
                    loss = F.cross_entropy(logits.float(), labels) * weight
                    (loss / count).backward()
                loss_sum += float(loss.detach()) / count
                images_seen += int(labels.shape[0]) if weight else 0
            if not math.isfinite(loss_sum):
                raise AccelDetError(
                    f"the loss is {loss_sum} at iteration {iteration + 1}: lower --lr"
                )
            optimizer.step()
            iteration += 1
            window.append(loss_sum)
            bar.update(1)
            if iteration % config.log_period == 0 or iteration == total:
                _log_progress(
                    log,
                    window,
                    iteration,
                    total,
                    epoch,
                    config,
                    window_start,
                    images_seen,
                    dist_info,
                    bar,
                )
                window, window_start, images_seen = [], time.perf_counter(), 0
            end_of_epoch = step == steps_per_epoch - 1
            if iteration % config.checkpoint_period == 0 or end_of_epoch or iteration == total:
                _save_checkpoint(
                    checkpoint_path, model, optimizer, iteration, steps_per_epoch, config, dist_info
                )
            if (
                end_of_epoch
                and val_set is not None
                and config.eval_period
                and (epoch + 1) % config.eval_period == 0
                and iteration != total
            ):
                evaluations[iteration] = _evaluate(
                    model, val_set, config, dist_info, log, iteration, epoch, progress
                )
            if stop_after is not None and iteration == stop_after:
                raise KeyboardInterrupt(f"stopped after iteration {iteration} (--stop-after)")
        epoch += 1
    bar.close()

    final_eval = None
    if val_set is not None:
        final_eval = _evaluate(
            model,
            val_set,
            config,
            dist_info,
            log,
            iteration,
            max(0, (iteration - 1) // steps_per_epoch),
            progress,
        )
        evaluations[iteration] = final_eval
    skipped = int(all_reduce_sum(skipped)[0])
    if skipped:
        logger.warning("skipped %d unreadable training image(s) in all", skipped)
    log.close()
    result = dict(record or {})
    result["finetune"] = {
        **(info or {}),
        "config": asdict(config),
        "world_size": dist_info.world_size,
        "iterations": iteration,
        "iterations_per_epoch": steps_per_epoch,
        "train_images": len(train_set),
        "skipped_unreadable": skipped,
        "evaluations": {str(k): v for k, v in evaluations.items()},
        "final_evaluation": final_eval,
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "versions": {"accel_det": __version__, "torch": torch.__version__},
    }
    with agreed_errors():  # a failed write (a full disk) is one line, and no process waits
        if dist_info.is_main:
            state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            # the record last: model_final.json on disk means the pair is complete
            result = atomic_save_pair(
                state,
                os.path.join(output, FINAL_WEIGHTS),
                result,
                os.path.join(output, FINAL_RECORD),
                replace=overwrite or has_checkpoint,  # else: refused if another run wrote them
            )
            logger.info(
                "wrote %s and %s",
                os.path.join(output, FINAL_WEIGHTS),
                os.path.join(output, FINAL_RECORD),
            )
    return result


def _log_progress(
    log, window, iteration, total, epoch, config, start, images_seen, dist_info, bar
) -> None:
    values = torch.tensor([sum(window), len(window), images_seen], dtype=torch.float64)
    values = all_reduce_sum(values)
    loss = float(values[0] / max(values[1], 1))
    seconds = (time.perf_counter() - start) / max(len(window), 1)
    speed = float(values[2]) / max(time.perf_counter() - start, 1e-9)
    if dist_info.is_main:
        eta = datetime.timedelta(seconds=int(seconds * (total - iteration)))
        logger.info(
            "iter %d/%d (epoch %d/%d): loss %.4f, lr %g, %.3f s/iter, %.1f img/s, eta %s",
            iteration,
            total,
            epoch + 1,
            config.epochs,
            loss,
            config.lr,
            seconds,
            speed,
            eta,
        )
        bar.set_postfix(loss=f"{loss:.3f}")
    log.write(
        iteration,
        {
            "epoch": epoch,
            "train/loss": loss,
            "train/lr": config.lr,
            "time/s_per_iter": seconds,
            "time/images_per_s": speed,
        },
    )


def _evaluate(model, val_set, config, dist_info, log, iteration, epoch, progress) -> dict:
    loader = eval_loader(
        val_set,
        max(1, config.batch_size // dist_info.world_size),
        config.workers,
        dist_info.rank,
        dist_info.world_size,
        pin_memory=dist_info.device.type == "cuda",
    )
    result = evaluate(
        model,
        loader,
        dist_info.device,
        progress=progress and dist_info.is_main,
        desc="validation",
        amp=config.amp and dist_info.device.type == "cuda",
    )
    if dist_info.is_main:
        logger.info(
            "validation at iteration %d: top-1 error %.2f%%, top-5 error %.2f%% (%d images)",
            iteration,
            result["top1_error"],
            result["top5_error"],
            result["images"],
        )
    log.write(
        iteration,
        {
            "epoch": epoch,
            "val/top1_error": result["top1_error"],
            "val/top5_error": result["top5_error"],
        },
    )
    return result


def _save_checkpoint(path, model, optimizer, iteration, steps_per_epoch, config, dist_info) -> None:
    with agreed_errors():
        if dist_info.is_main:
            atomic_torch_save(
                {
                    "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "iteration": iteration,
                    "iterations_per_epoch": steps_per_epoch,
                    "config": json.dumps(asdict(config)),
                },
                path,
            )


def _load_checkpoint(path, model, optimizer, steps_per_epoch, config) -> int:
    saved = load_torch_file(path, "fine-tuning checkpoint")
    try:
        state, optimizer_state, iteration = (
            saved["model"],
            saved["optimizer"],
            int(saved["iteration"]),
        )
        saved_steps = int(saved["iterations_per_epoch"])
        saved_config = json.loads(saved["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise AccelDetError(f"{path} is not a fine-tuning checkpoint ({error})") from None
    for key in (
        "batch_size",
        "accumulation",
        "seed",
        "lr",
        "momentum",
        "weight_decay",
        "augment",
        "resize",
        "crop",
    ):
        if saved_config.get(key) != getattr(config, key):
            raise AccelDetError(
                f"checkpoint {path} was made with {key}={saved_config.get(key)!r}, this run has "
                f"{getattr(config, key)!r}; use the same options or start over with --overwrite"
            )
    if saved_steps != steps_per_epoch:
        raise AccelDetError(
            f"checkpoint {path} was made with {saved_steps} iterations per epoch, this run has "
            f"{steps_per_epoch} (another training set or number of processes?)"
        )
    load_checked(model, state, f"checkpoint {path}")
    optimizer.load_state_dict(optimizer_state)
    return iteration
