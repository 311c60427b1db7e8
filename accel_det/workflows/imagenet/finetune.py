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

# the settings a resumed run must share with the checkpoint it resumes
RESUME_KEYS = (
    "batch_size",
    "accumulation",
    "seed",
    "lr",
    "momentum",
    "weight_decay",
    "augment",
    "resize",
    "crop",
)


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
    trainer = FinetuneTrainer(model, train_set, output, config, dist_info, val_set, progress)
    trainer.start(resume, overwrite)
    trainer.train(stop_after)
    return trainer.finish(record, info, overwrite)


class FinetuneTrainer:
    """One fine-tuning run: the model, its optimizer, the iteration and the loss window between
    log lines. ``start`` prepares the output (and resumes), ``train`` runs the iterations left,
    ``finish`` evaluates and writes the final pair."""

    def __init__(
        self,
        model: nn.Module,
        train_set: Dataset,
        output: str,
        config: FinetuneConfig,
        dist_info: DistInfo,
        val_set: Optional[Dataset] = None,
        progress: bool = True,
    ):
        self.model, self.train_set, self.val_set = model, train_set, val_set
        self.output, self.config, self.dist, self.progress = output, config, dist_info, progress
        self.micro = config.check(dist_info.world_size)
        self.micro_per_epoch = EpochBatchSampler.micro_batches_per_epoch(
            len(train_set), self.micro, dist_info.world_size
        )
        self.steps_per_epoch = math.ceil(self.micro_per_epoch / config.accumulation)
        self.total = config.epochs * self.steps_per_epoch
        if config.max_iters is not None:
            self.total = min(self.total, config.max_iters)
        self.checkpoint_path = os.path.join(output, CHECKPOINT)
        self.iteration = 0
        self.has_checkpoint = False
        self.skipped = torch.zeros(1, dtype=torch.float64)
        self.window: List[float] = []
        self.window_start, self.images_seen = time.perf_counter(), 0
        self.evaluations: dict = {}
        self.optimizer = self.wrapped = self.log = self.bar = None  # set by start() and train()

    @property
    def device(self) -> torch.device:
        """This process's device."""
        return self.dist.device

    def start(self, resume: bool, overwrite: bool) -> None:
        """Prepare the output folder, the optimizer and (with a checkpoint) the saved state."""
        self.has_checkpoint = prepare_output(self.output, resume, overwrite, self.dist)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.model.to(self.device)
        config = self.config
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
        if self.has_checkpoint:
            self.iteration = self.load_checkpoint()
            logger.info("resuming from %s at iteration %d", self.checkpoint_path, self.iteration)
        self.wrapped = (
            DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
            if self.dist.distributed
            else self.model
        )
        first = self.iteration if self.has_checkpoint else None
        self.log = MetricsLog(self.output, first, self.dist.is_main)
        if self.dist.is_main:
            logger.info(
                "fine-tuning: %d images, %d iteration(s) (%d per epoch, "
                "batch %d = %d process(es) x %d x %d accumulation), lr %g",
                len(self.train_set),
                self.total,
                self.steps_per_epoch,
                config.batch_size,
                self.dist.world_size,
                self.micro,
                config.accumulation,
                config.lr,
            )

    def train(self, stop_after: Optional[int] = None) -> None:
        """The iterations left, epoch by epoch; ``stop_after`` interrupts like a Ctrl-C."""
        self.bar = tqdm(
            total=self.total,
            initial=min(self.iteration, self.total),
            desc="fine-tune",
            unit="it",
            disable=not (self.progress and self.dist.is_main),
        )
        self.window_start, self.images_seen = time.perf_counter(), 0
        self.model.train()
        epoch = self.iteration // self.steps_per_epoch
        while self.iteration < self.total:
            self.train_epoch(epoch, stop_after)
            epoch += 1
        self.bar.close()

    def train_epoch(self, epoch: int, stop_after: Optional[int]) -> None:
        """The rest of ``epoch``: its image order from (seed, epoch), skipping the steps done."""
        config = self.config
        step_in_epoch = self.iteration - epoch * self.steps_per_epoch
        sampler = EpochBatchSampler(
            len(self.train_set),
            self.micro,
            epoch,
            config.seed,
            self.dist.rank,
            self.dist.world_size,
            skip=step_in_epoch * config.accumulation,
        )
        loader = DataLoader(
            self.train_set,
            batch_sampler=sampler,
            num_workers=config.workers,
            collate_fn=collate_skipping,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator(),
        )
        batches = iter(loader)
        for step in range(step_in_epoch, self.steps_per_epoch):
            if self.iteration >= self.total:
                break
            self.step(batches, step)
            if self.iteration % config.log_period == 0 or self.iteration == self.total:
                self.log_progress(epoch)
            end_of_epoch = step == self.steps_per_epoch - 1
            if (
                self.iteration % config.checkpoint_period == 0
                or end_of_epoch
                or self.iteration == self.total
            ):
                self.save_checkpoint()
            if (
                end_of_epoch
                and self.val_set is not None
                and config.eval_period
                and (epoch + 1) % config.eval_period == 0
                and self.iteration != self.total
            ):
                self.evaluations[self.iteration] = self.evaluate(epoch)
            if stop_after is not None and self.iteration == stop_after:
                raise KeyboardInterrupt(f"stopped after iteration {self.iteration} (--stop-after)")

    def step(self, batches, step: int) -> None:
        """One SGD iteration over ``accumulation`` micro-batches, dropout seeded by
        (seed, rank, iteration)."""
        config = self.config
        torch.manual_seed(sample_seed(config.seed + 1, self.dist.rank, self.iteration))  # dropout
        count = min(config.accumulation, self.micro_per_epoch - step * config.accumulation)
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for j in range(count):
            loss_sum += self.micro_step(next(batches), count, sync=j == count - 1) / count
        if not math.isfinite(loss_sum):
            raise AccelDetError(
                f"the loss is {loss_sum} at iteration {self.iteration + 1}: lower --lr"
            )
        self.optimizer.step()
        self.iteration += 1
        self.window.append(loss_sum)
        self.bar.update(1)

    def micro_step(self, batch, count: int, sync: bool) -> float:
        """Forward and backward of one micro-batch (its gradient a 1/accumulation share); its
        loss."""
        images, labels, bad = batch
        config, device = self.config, self.device
        self.skipped += bad
        weight = 1.0
        if images is None:  # every image of this micro-batch unreadable: keep the processes in step
            images = torch.zeros(1, 3, config.crop, config.crop)
            labels, weight = torch.zeros(1, dtype=torch.long), 0.0
        images, labels = (
            images.to(device, non_blocking=True),
            labels.to(device, non_blocking=True),
        )
        sync = sync or not self.dist.distributed
        with contextlib.nullcontext() if sync else self.wrapped.no_sync():
            with torch.autocast(
                device.type,
                dtype=torch.bfloat16,
                enabled=config.amp and device.type == "cuda",
            ):
                logits = self.wrapped(images)
            loss = F.cross_entropy(logits.float(), labels) * weight
            (loss / count).backward()
        self.images_seen += int(labels.shape[0]) if weight else 0
        return float(loss.detach())

    def log_progress(self, epoch: int) -> None:
        """A log line and a metrics row: the mean loss since the last one (over all processes),
        the time per iteration, images per second and the time left."""
        config, window, start = self.config, self.window, self.window_start
        values = torch.tensor([sum(window), len(window), self.images_seen], dtype=torch.float64)
        values = all_reduce_sum(values)
        loss = float(values[0] / max(values[1], 1))
        seconds = (time.perf_counter() - start) / max(len(window), 1)
        speed = float(values[2]) / max(time.perf_counter() - start, 1e-9)
        if self.dist.is_main:
            eta = datetime.timedelta(seconds=int(seconds * (self.total - self.iteration)))
            logger.info(
                "iter %d/%d (epoch %d/%d): loss %.4f, lr %g, %.3f s/iter, %.1f img/s, eta %s",
                self.iteration,
                self.total,
                epoch + 1,
                config.epochs,
                loss,
                config.lr,
                seconds,
                speed,
                eta,
            )
            self.bar.set_postfix(loss=f"{loss:.3f}")
        self.log.write(
            self.iteration,
            {
                "epoch": epoch,
                "train/loss": loss,
                "train/lr": config.lr,
                "time/s_per_iter": seconds,
                "time/images_per_s": speed,
            },
        )
        self.window, self.window_start, self.images_seen = [], time.perf_counter(), 0

    def evaluate(self, epoch: int) -> dict:
        """Top-1 / top-5 errors on the validation set, logged and written to the metrics."""
        config, dist_info = self.config, self.dist
        loader = eval_loader(
            self.val_set,
            max(1, config.batch_size // dist_info.world_size),
            config.workers,
            dist_info.rank,
            dist_info.world_size,
            pin_memory=self.device.type == "cuda",
        )
        result = evaluate(
            self.model,
            loader,
            self.device,
            progress=self.progress and dist_info.is_main,
            desc="validation",
            amp=config.amp and self.device.type == "cuda",
        )
        if dist_info.is_main:
            logger.info(
                "validation at iteration %d: top-1 error %.2f%%, top-5 error %.2f%% (%d images)",
                self.iteration,
                result["top1_error"],
                result["top5_error"],
                result["images"],
            )
        self.log.write(
            self.iteration,
            {
                "epoch": epoch,
                "val/top1_error": result["top1_error"],
                "val/top5_error": result["top5_error"],
            },
        )
        return result

    def save_checkpoint(self) -> None:
        """``last_checkpoint.pth``: the model, the optimizer, the iteration and the settings a
        resumed run must share."""
        with agreed_errors():
            if self.dist.is_main:
                atomic_torch_save(
                    {
                        "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                        "optimizer": self.optimizer.state_dict(),
                        "iteration": self.iteration,
                        "iterations_per_epoch": self.steps_per_epoch,
                        "config": json.dumps(asdict(self.config)),
                    },
                    self.checkpoint_path,
                )

    def load_checkpoint(self) -> int:
        """Load the checkpoint into the model and the optimizer, after checking it was made with
        this run's settings; its iteration."""
        path, config = self.checkpoint_path, self.config
        saved = load_torch_file(path, "fine-tuning checkpoint")
        try:
            state, optimizer_state = saved["model"], saved["optimizer"]
            iteration = int(saved["iteration"])
            saved_steps = int(saved["iterations_per_epoch"])
            saved_config = json.loads(saved["config"])
        except (KeyError, TypeError, ValueError) as error:
            raise AccelDetError(f"{path} is not a fine-tuning checkpoint ({error})") from None
        for key in RESUME_KEYS:
            if saved_config.get(key) != getattr(config, key):
                raise AccelDetError(
                    f"checkpoint {path} was made with {key}={saved_config.get(key)!r}, this run "
                    f"has {getattr(config, key)!r}; use the same options or start over with "
                    "--overwrite"
                )
        if saved_steps != self.steps_per_epoch:
            raise AccelDetError(
                f"checkpoint {path} was made with {saved_steps} iterations per epoch, this run has "
                f"{self.steps_per_epoch} (another training set or number of processes?)"
            )
        load_checked(self.model, state, f"checkpoint {path}")
        self.optimizer.load_state_dict(optimizer_state)
        return iteration

    def finish(self, record: Optional[dict], info: Optional[dict], overwrite: bool) -> dict:
        """The final validation, the record (``record`` with a ``finetune`` section) and the
        ``model_final.pth`` / ``.json`` pair; returns the record."""
        final_eval = None
        if self.val_set is not None:
            final_eval = self.evaluate(max(0, (self.iteration - 1) // self.steps_per_epoch))
            self.evaluations[self.iteration] = final_eval
        skipped = int(all_reduce_sum(self.skipped)[0])
        if skipped:
            logger.warning("skipped %d unreadable training image(s) in all", skipped)
        self.log.close()
        result = dict(record or {})
        result["finetune"] = {
            **(info or {}),
            "config": asdict(self.config),
            "world_size": self.dist.world_size,
            "iterations": self.iteration,
            "iterations_per_epoch": self.steps_per_epoch,
            "train_images": len(self.train_set),
            "skipped_unreadable": skipped,
            "evaluations": {str(k): v for k, v in self.evaluations.items()},
            "final_evaluation": final_eval,
            "created": datetime.datetime.now().isoformat(timespec="seconds"),
            "versions": {"accel_det": __version__, "torch": torch.__version__},
        }
        weights = os.path.join(self.output, FINAL_WEIGHTS)
        record_path = os.path.join(self.output, FINAL_RECORD)
        with agreed_errors():  # a failed write (a full disk) is one line, and no process waits
            if self.dist.is_main:
                state = {
                    k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()
                }
                # the record last: model_final.json on disk means the pair is complete
                result = atomic_save_pair(
                    state,
                    weights,
                    result,
                    record_path,
                    replace=overwrite or self.has_checkpoint,  # else: refused if another run did
                )
                logger.info("wrote %s and %s", weights, record_path)
        return result
