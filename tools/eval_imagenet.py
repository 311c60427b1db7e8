#!/usr/bin/env python3
"""Top-1 and top-5 1-view error (shorter side 256, centre crop 224) of a plain
or accelerated VGG-16 or torchvision ResNet, and with ``--baseline`` the increase of error, as in
the paper's tables.

    python tools/eval_imagenet.py --weights output/vgg16_4x.pth --val /data/imagenet/val \\
        --baseline vgg16-397923af.pth

``--val`` is an ImageNet-style tree (``val/<wnid>/*.JPEG``, class index = sorted folder names) or a
flat folder with ``--labels FILE`` (``<file> <label>`` lines; the label a 0-based class index, as in
Caffe's ``val.txt``, or a class name such as a WordNet id, mapped with ``--classes`` or sorted).
An accelerated model needs its plan: ``--plan``, else the ``.json`` next to the weights. The
architecture is read off the weights (``--arch`` for torchvision's download of a ResNet).
"""

from __future__ import annotations

import argparse
import os
import sys

import bootstrap  # noqa: F401  (accel_det from this checkout, in its .venv)

from tqdm.contrib.logging import logging_redirect_tqdm

from accel_det.models.classifier import ARCHS
from accel_det.models.vgg import CROP_SIZE, RESIZE_SIZE
from accel_det.utils.cli import (
    IMAGE_SIDE,
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    add_common_arguments,
    run_tool,
)
from accel_det.workflows.imagenet.eval_run import EvalOptions, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--weights",
        required=True,
        help="VGG-16 or ResNet state dict (plain or accelerated), or 'torchvision' (of --arch)",
    )
    parser.add_argument(
        "--arch",
        choices=ARCHS,
        help="the network of --weights and --baseline (default: read off the weights; vgg16 "
        "for 'torchvision')",
    )
    parser.add_argument(
        "--plan", help="plan JSON of an accelerated model (default: the .json next to --weights)"
    )
    parser.add_argument(
        "--val",
        required=True,
        help="validation images: class folders, or a flat folder with --labels",
    )
    parser.add_argument("--labels", help="label file for a flat folder: '<file> <label>' per line")
    parser.add_argument(
        "--classes", help="class names in index order, one per line (e.g. synset_words.txt)"
    )
    parser.add_argument(
        "--baseline",
        help="weights of the reference model (e.g. vgg16-397923af.pth) for the increase of error",
    )
    parser.add_argument("--baseline-plan", help="plan JSON of the baseline when it is accelerated")
    parser.add_argument(
        "--batch-size", type=POSITIVE_INT, default=64, help="images per forward pass (default: 64)"
    )
    parser.add_argument(
        "--workers",
        type=NON_NEGATIVE_INT,
        default=min(8, os.cpu_count() or 1),
        help="image decoding processes",
    )
    parser.add_argument(
        "--device", default="auto", help="auto (a GPU if there is one), cpu, cuda, cuda:1, ..."
    )
    parser.add_argument(
        "--resize",
        type=POSITIVE_INT,
        default=RESIZE_SIZE,
        help=f"shorter side (default: {RESIZE_SIZE})",
    )
    parser.add_argument(
        "--crop", type=IMAGE_SIDE, default=CROP_SIZE, help=f"centre crop (default: {CROP_SIZE})"
    )
    parser.add_argument(
        "--limit",
        type=POSITIVE_INT,
        help="evaluate a random subset of this many images (seed 0), for a quick look",
    )
    parser.add_argument("--output", help="also write the results to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return add_common_arguments(parser)


def main(args: argparse.Namespace) -> int:
    options = EvalOptions(
        weights=args.weights,
        val=args.val,
        arch=args.arch,
        plan=args.plan,
        labels=args.labels,
        classes=args.classes,
        baseline=args.baseline,
        baseline_plan=args.baseline_plan,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        resize=args.resize,
        crop=args.crop,
        limit=args.limit,
        output=args.output,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    run(options)
    return 0


def _main(args: argparse.Namespace) -> int:
    with logging_redirect_tqdm():
        return main(args)


if __name__ == "__main__":
    sys.exit(run_tool(_main, build_parser()))
