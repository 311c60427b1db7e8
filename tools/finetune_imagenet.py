#!/usr/bin/env python3
"""Fine-tune a (usually accelerated) VGG-16 on ImageNet: the paper's "FT" (lr 1e-5, batch 128,
5 epochs) by default. One GPU, or several through ``torchrun`` (DDP):

    torchrun --nproc_per_node 8 tools/finetune_imagenet.py --weights output/vgg16_4x.pth \\
        --train /data/imagenet/train --val /data/imagenet/val --output output/vgg16_4x_ft

writes ``OUT/model_final.pth`` + ``OUT/model_final.json`` (the plan and a record of the run, so the
pair works with ``tools/eval_imagenet.py --weights OUT/model_final.pth``),
``OUT/last_checkpoint.pth`` (every ``--checkpoint-period`` iterations and every epoch; ``--resume``
continues from it), ``OUT/metrics.json`` (JSON lines) and TensorBoard logs in ``OUT/tensorboard``.
``--batch-size`` is the global batch over all processes; ``--accumulation`` splits it further for
small GPUs.
"""

from __future__ import annotations

import argparse
import os
import sys

import bootstrap  # noqa: F401  (accel_det from this checkout, in its .venv)

from accel_det.data.transforms import TRAIN_AUGMENTATIONS
from accel_det.models.vgg import CROP_SIZE, RESIZE_SIZE
from accel_det.utils.cli import (
    FRACTION,
    IMAGE_SIDE,
    NON_NEGATIVE_FLOAT,
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    SEED,
    add_common_arguments,
    run_tool,
)
from accel_det.workflows.imagenet.finetune import FinetuneConfig
from accel_det.workflows.imagenet.finetune_run import FinetuneOptions, run


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The model, the images and the output folder."""
    parser.add_argument(
        "--weights",
        required=True,
        help="VGG-16 state dict (plain or accelerated), or 'torchvision'",
    )
    parser.add_argument(
        "--plan", help="plan JSON of an accelerated model (default: the .json next to --weights)"
    )
    parser.add_argument(
        "--train",
        required=True,
        help="training images: class folders, or a flat folder with --train-labels",
    )
    parser.add_argument(
        "--train-labels", help="label file for a flat training folder: '<file> <label>' per line"
    )
    parser.add_argument(
        "--val", help="validation images, evaluated after every --eval-period epochs and at the end"
    )
    parser.add_argument("--val-labels", help="label file for a flat validation folder")
    parser.add_argument(
        "--classes", help="class names in index order, one per line (e.g. synset_words.txt)"
    )
    parser.add_argument("--output", required=True, help="output folder")


def add_schedule_arguments(parser: argparse.ArgumentParser, defaults: FinetuneConfig) -> None:
    """The SGD recipe (the paper's FT by default) and the periods of logs and checkpoints."""
    parser.add_argument(
        "--epochs",
        type=POSITIVE_INT,
        default=defaults.epochs,
        help=f"(default: {defaults.epochs}, as the paper)",
    )
    parser.add_argument(
        "--lr",
        type=NON_NEGATIVE_FLOAT,
        default=defaults.lr,
        help=f"constant learning rate (default: {defaults.lr:g}, as the paper)",
    )
    parser.add_argument(
        "--batch-size",
        type=POSITIVE_INT,
        default=defaults.batch_size,
        help=f"global batch over all processes (default: {defaults.batch_size}, as the paper)",
    )
    parser.add_argument(
        "--accumulation",
        type=POSITIVE_INT,
        default=defaults.accumulation,
        help="micro-batches per iteration (gradient accumulation) when a GPU cannot hold the batch",
    )
    parser.add_argument(
        "--momentum",
        type=FRACTION,
        default=defaults.momentum,
        help=f"SGD momentum (default: {defaults.momentum})",
    )
    parser.add_argument(
        "--weight-decay",
        type=NON_NEGATIVE_FLOAT,
        default=defaults.weight_decay,
        help=f"(default: {defaults.weight_decay:g}, VGG's)",
    )
    parser.add_argument(
        "--augment",
        choices=TRAIN_AUGMENTATIONS,
        default=defaults.augment,
        help="crop-flip: resize, random crop, flip (default); resized-crop: torchvision's; none",
    )
    parser.add_argument(
        "--max-iters", type=POSITIVE_INT, help="stop after this many iterations (for quick tries)"
    )
    parser.add_argument(
        "--checkpoint-period",
        type=POSITIVE_INT,
        default=defaults.checkpoint_period,
        help="iterations between checkpoints",
    )
    parser.add_argument(
        "--log-period",
        type=POSITIVE_INT,
        default=defaults.log_period,
        help="iterations between log lines",
    )
    parser.add_argument(
        "--eval-period",
        type=NON_NEGATIVE_INT,
        default=defaults.eval_period,
        help="epochs between validations (0: at the end only)",
    )
    parser.add_argument(
        "--seed", type=SEED, default=defaults.seed, help="image order, augmentation and dropout"
    )


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """Preprocessing, data loading and the device."""
    parser.add_argument(
        "--resize",
        type=POSITIVE_INT,
        default=RESIZE_SIZE,
        help=f"shorter side (default: {RESIZE_SIZE})",
    )
    parser.add_argument(
        "--crop", type=IMAGE_SIDE, default=CROP_SIZE, help=f"crop (default: {CROP_SIZE})"
    )
    parser.add_argument(
        "--workers",
        type=NON_NEGATIVE_INT,
        default=min(8, os.cpu_count() or 1),
        help="image decoding processes per GPU",
    )
    parser.add_argument(
        "--device", default="auto", help="auto (each process's GPU if there are GPUs), cpu, cuda"
    )
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast on GPUs")


def build_parser() -> argparse.ArgumentParser:
    defaults = FinetuneConfig()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_data_arguments(parser)
    add_schedule_arguments(parser, defaults)
    add_input_arguments(parser)
    parser.add_argument(
        "--resume", action="store_true", help="continue from OUT/last_checkpoint.pth"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the outputs of an earlier run"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--stop-after", type=POSITIVE_INT, help=argparse.SUPPRESS
    )  # test hook: interrupt after this iteration
    return add_common_arguments(parser)


def main(args: argparse.Namespace) -> int:
    config = FinetuneConfig(
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        accumulation=args.accumulation,
        max_iters=args.max_iters,
        checkpoint_period=args.checkpoint_period,
        log_period=args.log_period,
        eval_period=max(0, args.eval_period),
        seed=args.seed,
        augment=args.augment,
        resize=args.resize,
        crop=args.crop,
        workers=max(0, args.workers),
        amp=args.amp,
    )
    options = FinetuneOptions(
        weights=args.weights,
        train=args.train,
        output=args.output,
        config=config,
        plan=args.plan,
        train_labels=args.train_labels,
        val=args.val,
        val_labels=args.val_labels,
        classes=args.classes,
        device=args.device,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        stop_after=args.stop_after,
        command=sys.argv[1:],
    )
    run(options)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, build_parser()))
