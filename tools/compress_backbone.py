#!/usr/bin/env python3
"""Compress an ImageNet VGG-16 or torchvision ResNet with the paper's method (its ImageNet protocol:
3,000 images, the first conv kept, asymmetric (3d), rank selection).

    python tools/compress_backbone.py --weights vgg16-397923af.pth --images /data/imagenet/train \\
        --num-images 3000 --samples-per-image 10 --speedup 4 --method asym3d \\
        --output output/vgg16_4x
    python tools/compress_backbone.py --arch resnet50 --weights resnet50-0676ba61.pth \\
        --images /data/imagenet/train --speedup 2 --method asym --output output/resnet50_2x

writes ``output/vgg16_4x.pth`` (state dict of the whole accelerated classifier; a ResNet's with
its batch norms folded into the convs),
``output/vgg16_4x.json`` (the plan, extended with how it was obtained) and ``output/vgg16_4x.png``
(per-layer ranks and errors), and prints a per-layer table. ``--images`` may be any folder of
JPEG/PNG images, e.g. VOC's ``JPEGImages`` with ``--image-list .../ImageSets/Main/trainval.txt``
(target-domain compression on the training split only). Every finished layer is
checkpointed to ``OUT.checkpoint.pth``; ``--resume`` continues an interrupted run and ends
bit-identical to an uninterrupted one.

Data-parallel on several GPUs (each process reads a shard of the images; the result equals one
process's within float tolerance):

    torchrun --nproc_per_node 8 tools/compress_backbone.py --weights ... --images ... --output ...
    python tools/compress_backbone.py --num-gpus 8 ...          # the same, started by the tool
    python tools/compress_backbone.py --num-gpus 2 --device cpu ...   # 2 CPU processes (gloo)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import bootstrap  # noqa: F401  (accel_det from this checkout, in its .venv)

import torch

from accel_det.errors import AccelDetError
from accel_det.models.classifier import ARCHS
from accel_det.models.vgg import CROP_SIZE, RESIZE_SIZE
from accel_det.utils.cli import (
    IMAGE_SIDE,
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    add_common_arguments,
    run_tool,
)
from accel_det.utils.dist import under_launcher
from accel_det.utils.launch import launch
from accel_det.workflows.imagenet.compress import (
    CompressOptions,
    compress_in_group,
    compress_process,
)
from accel_det.workflows.options import add_solver_arguments, solver_options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--weights",
        required=True,
        help=(
            "VGG-16 or ResNet state dict (e.g. vgg16-397923af.pth), "
            "or 'torchvision' to download torchvision's (of --arch)"
        ),
    )
    parser.add_argument(
        "--arch",
        choices=ARCHS,
        help="the network: vgg16 (its conv layers are compressed) or a torchvision ResNet (every "
        "conv, batch norms folded); default: read off --weights (vgg16 for 'torchvision')",
    )
    parser.add_argument(
        "--images",
        required=True,
        help=(
            "image folder: an ImageNet-style tree "
            "(train/<wnid>/*.JPEG) or a flat folder of JPEG/PNG"
        ),
    )
    parser.add_argument(
        "--image-list",
        metavar="FILE",
        help="draw only from the images FILE lists, one per line: a path relative to --images, "
        "with or without extension (a VOC id list such as ImageSets/Main/trainval.txt works)",
    )
    parser.add_argument(
        "--output", required=True, help="output prefix OUT: writes OUT.pth, OUT.json, OUT.png"
    )
    parser.add_argument(
        "--num-images",
        type=POSITIVE_INT,
        default=3000,
        help="images drawn with the seed (default: 3000, as the paper)",
    )
    add_solver_arguments(parser)
    parser.add_argument(
        "--resume", action="store_true", help="continue after the last layer of OUT.checkpoint.pth"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing outputs (and start over)"
    )
    parser.add_argument(
        "--batch-size", type=POSITIVE_INT, default=32, help="images per forward pass (default: 32)"
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
        "--num-gpus",
        type=POSITIVE_INT,
        default=1,
        help="processes to start, one per GPU (with --device cpu: CPU processes); "
        "under torchrun the processes are torchrun's (default: 1)",
    )
    parser.add_argument(
        "--resize",
        type=POSITIVE_INT,
        default=RESIZE_SIZE,
        help=f"shorter side before the crop (default: {RESIZE_SIZE})",
    )
    parser.add_argument(
        "--crop", type=IMAGE_SIDE, default=CROP_SIZE, help=f"centre crop (default: {CROP_SIZE})"
    )
    parser.add_argument(
        "--fc",
        action="store_true",
        help="also factor the classifier's fc6/fc7 by the same solver, one budget with the convs "
        "(--speedup is then of the whole network; beyond the paper)",
    )
    parser.add_argument("--no-plot", action="store_true", help="do not write OUT.png")
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic GPU kernels (torch.use_deterministic_algorithms, "
        "CUBLAS_WORKSPACE_CONFIG=:4096:8); the CPU is deterministic anyway",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--stop-after", help=argparse.SUPPRESS
    )  # test hook: interrupt after this layer
    return add_common_arguments(parser)


def main(args: argparse.Namespace) -> int:
    if args.num_gpus < 1:
        raise AccelDetError(f"--num-gpus must be >= 1, got {args.num_gpus}")
    options = CompressOptions(
        weights=args.weights,
        arch=args.arch,
        images=args.images,
        output=args.output,
        solver=solver_options(args),
        num_images=args.num_images,
        image_list=args.image_list,
        resume=args.resume,
        overwrite=args.overwrite,
        batch_size=args.batch_size,
        workers=max(0, args.workers),
        device=args.device,
        resize=args.resize,
        crop=args.crop,
        progress=not args.no_progress,
        plot=not args.no_plot,
        fc=args.fc,
        deterministic=args.deterministic,
        stop_after=args.stop_after,
    )
    argv = sys.argv[1:]
    if args.num_gpus > 1 and under_launcher():
        logging.getLogger(__name__).warning(
            "--num-gpus is ignored under torchrun: its %s processes do the work",
            os.environ["WORLD_SIZE"],
        )
    elif args.num_gpus > 1:
        if args.device != "cpu":
            found = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if args.device not in ("auto", "cuda") or found < args.num_gpus:
                raise AccelDetError(
                    f"--num-gpus {args.num_gpus} needs {args.num_gpus} GPUs and --device auto or "
                    f"cuda (found {found} GPU(s), --device {args.device}); --device cpu starts CPU "
                    f"processes"
                )
        return launch(compress_process, args.num_gpus, (options, argv, args.verbose, args.debug))
    return compress_in_group(options, argv)


if __name__ == "__main__":
    sys.exit(run_tool(main, build_parser()))
