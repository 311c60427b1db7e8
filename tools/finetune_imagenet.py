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
import logging
import os
import sys

import bootstrap  # noqa: F401  (accel_det from this checkout, in its .venv)

from tqdm.contrib.logging import logging_redirect_tqdm

from accel_det.data import (
    eval_transform,
    labeled_images,
    preprocessing_record,
    read_class_list,
    train_transform,
)
from accel_det.data.transforms import TRAIN_AUGMENTATIONS
from accel_det.errors import AccelDetError
from accel_det.models.vgg import CROP_SIZE, RESIZE_SIZE, load_vgg16, weights_file
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
from accel_det.utils.dist import init_distributed, shutdown
from accel_det.utils.io import sha256_file
from accel_det.workflows.imagenet.finetune import FinetuneConfig, finetune
from accel_det.workflows.imagenet.training import check_output

logger = logging.getLogger("accel_det.finetune_imagenet")


def build_parser() -> argparse.ArgumentParser:
    defaults = FinetuneConfig()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
    dist_info = init_distributed(args.device)
    try:
        if not dist_info.is_main:
            logging.getLogger().setLevel(logging.WARNING)
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
        config.check(dist_info.world_size)
        check_output(os.path.expanduser(args.output), args.resume, args.overwrite, create=False)
        model, plan, plan_path = load_vgg16(args.weights, args.plan)
        num_classes = model.classifier[-1].out_features
        classes = read_class_list(args.classes) if args.classes else None
        train_set = labeled_images(
            args.train,
            train_transform(args.augment, args.resize, args.crop),
            args.train_labels,
            classes,
        )
        val_set = None
        if args.val:
            val_set = labeled_images(
                args.val, eval_transform(args.resize, args.crop), args.val_labels, classes
            )
        for name, dataset in (("training", train_set), ("validation", val_set)):
            if dataset is None:
                continue
            top = max(label for _, label in dataset.samples)
            if top >= num_classes:
                raise AccelDetError(
                    f"the {name} labels go up to class index "
                    f"{top}, but the model has {num_classes} classes"
                )
        if len(train_set.classes) != num_classes and classes is None:
            logger.warning(
                "the training set has %d classes, the model "
                "%d: class i is the i-th class in sorted order",
                len(train_set.classes),
                num_classes,
            )
        source = weights_file(args.weights)
        # the plan (for an accelerated model, with how it was compressed) stays at the top level,
        # so model_final.pth + model_final.json load like the compressor's OUT.pth + OUT.json
        record = (
            {k: v for k, v in plan.items() if k not in ("outputs", "command")}
            if plan is not None
            else {}
        )
        info = {
            "source_weights": {
                "path": os.path.abspath(source) if source else args.weights,
                "sha256": sha256_file(source) if source and dist_info.is_main else None,
                "plan": os.path.abspath(plan_path) if plan_path else None,
            },
            "data": {
                "train": os.path.abspath(args.train),
                "val": os.path.abspath(args.val) if args.val else None,
                "train_labels": args.train_labels,
                "val_labels": args.val_labels,
                "classes": args.classes,
                "preprocessing": preprocessing_record(args.resize, args.crop),
                "augment": args.augment,
            },
            "command": sys.argv[1:],
        }
        with logging_redirect_tqdm():
            finetune(
                model,
                train_set,
                os.path.expanduser(args.output),
                config,
                dist_info,
                val_set=val_set,
                resume=args.resume,
                overwrite=args.overwrite,
                progress=not args.no_progress,
                record=record,
                info=info,
                stop_after=args.stop_after,
            )
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, build_parser()))
