#!/usr/bin/env python3
"""Speed benchmark: theoretical vs measured speedup of the accelerated VGG-16 backbone and Fast
R-CNN detector against the original (batch 1 and 8, 224x224 and 600x1000; CPU at a stated thread
count, CUDA when present), and the levers that close the gap (memory format, ranks rounded to a
multiple of 16, threads, fused bias/ReLU). Prints Markdown tables, writes
``benchmark_speed.json``, ``benchmark_speed.md`` and the timed plans to ``--output``.

    OMP_NUM_THREADS=2 python tools/benchmark_speed.py --quick   # batch 1
    OMP_NUM_THREADS=2 python tools/benchmark_speed.py           # adds batch 8
    python tools/benchmark_speed.py --plan output/vgg16_4x.json --grid-plans output/vgg16_4x.json
                                                                # time a plan made elsewhere

Weights are random (speed does not depend on them); the solver's plans take their ranks from the
eigenvalues of a random-weight VGG-16's responses to generated images (no ImageNet here).
Run times and measured tables: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys

import bootstrap  # noqa: F401  (accel_det from this checkout, in its .venv)

from accel_det.benchmarks.speed_run import SpeedBenchmarkOptions, run
from accel_det.solver import METHODS
from accel_det.utils.cli import (
    IMAGE_SIDE,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    SEED,
    SPEEDUP,
    add_common_arguments,
    run_tool,
)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """How long, where and on how many threads."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help="batch 1 only, shorter timings",
    )
    parser.add_argument(
        "--output",
        default="output/benchmark_speed",
        help="folder for the JSON, the Markdown and the plans",
    )
    parser.add_argument(
        "--threads",
        type=POSITIVE_INT,
        default=1,
        help="torch CPU threads for the grid (default 1, the paper's CPU protocol)",
    )
    parser.add_argument(
        "--lever-threads",
        type=POSITIVE_INT,
        nargs="+",
        default=[1, 2],
        help="thread counts of the lever comparison (default 1 2)",
    )
    parser.add_argument(
        "--device", default="auto", help="auto (cuda when present), cpu or cuda[:N] for the grid"
    )


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """The plans timed: the solver's, the paper's Table 6 and plan files."""
    parser.add_argument(
        "--speedup",
        type=SPEEDUP,
        default=4.0,
        help="whole-model theoretical speedup of the solver's plans",
    )
    parser.add_argument(
        "--round-ranks",
        type=POSITIVE_INT,
        default=16,
        help="multiple the rounded plans keep d' (and asym3d's d'') at (default 16: oneDNN's fp32 "
        "channel block on AVX-512; 8 suits GPU fp16)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["asym", "asym3d"],
        choices=[name for name, method in METHODS.items() if method.channel],
        help="solver methods to plan (default asym asym3d)",
    )
    parser.add_argument(
        "--plan",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help=(
            "also time this plan JSON (the solver's, e.g. "
            "from tools/compress_backbone.py); repeatable"
        ),
    )
    parser.add_argument(
        "--grid-plans",
        nargs="+",
        metavar="NAME",
        help="plans timed in the grid (names, or the paths given to --plan; default: the rounded "
        "solver plans and every --plan)",
    )


def add_case_arguments(parser: argparse.ArgumentParser) -> None:
    """The grid's cases, the lever comparison and the detector."""
    parser.add_argument(
        "--cases",
        nargs="+",
        metavar="PART:HxW:BATCH",
        help=(
            "grid cells, e.g. backbone:224:1 detector:600x1000:8 (default: batch 1 and 8 at "
            "224x224, batch 1 at 600x1000, on a GPU also batch 8 at 600x1000; --quick: batch 1)"
        ),
    )
    parser.add_argument(
        "--lever-size",
        type=IMAGE_SIDE,
        default=224,
        help="input size of the lever comparison (batch 1)",
    )
    parser.add_argument("--no-levers", action="store_true", help="skip the lever comparison")
    parser.add_argument(
        "--no-table6", action="store_true", help="leave out the paper's Table 6 ranks"
    )
    parser.add_argument(
        "--seconds",
        type=POSITIVE_FLOAT,
        help="timing budget per case, sizes the repeats (default 20; --quick 8)",
    )
    parser.add_argument(
        "--proposals",
        type=POSITIVE_INT,
        default=300,
        help="precomputed proposals per image for the detector",
    )
    parser.add_argument(
        "--num-images",
        type=POSITIVE_INT,
        help="generated images for the plans' eigenvalues (default 8; --quick 4)",
    )
    parser.add_argument(
        "--samples-per-image",
        type=POSITIVE_INT,
        help="responses sampled per image (default 100; --quick 50)",
    )
    parser.add_argument(
        "--fvcore",
        choices=("all", "small", "none"),
        help="cross-check multiply-adds with fvcore in all cases, at inputs up to 224x224, or none "
        "(default all; --quick small)",
    )
    parser.add_argument(
        "--width",
        type=POSITIVE_FLOAT,
        default=1.0,
        help="VGG-16 channel multiplier (1: VGG-16; smaller for tests)",
    )
    parser.add_argument(
        "--detector-opts",
        nargs="*",
        default=[],
        metavar="KEY VALUE",
        help="config overrides of the detectors (e.g. MODEL.ROI_BOX_HEAD.FC_DIM 64)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_run_arguments(parser)
    add_plan_arguments(parser)
    add_case_arguments(parser)
    parser.add_argument("--seed", type=SEED, default=0)
    return add_common_arguments(parser)


def main(args: argparse.Namespace) -> int:
    options = SpeedBenchmarkOptions(
        output=args.output,
        quick=args.quick,
        threads=args.threads,
        lever_threads=args.lever_threads,
        device=args.device,
        speedup=args.speedup,
        round_ranks=args.round_ranks,
        methods=args.methods,
        plans=args.plan,
        grid_plans=args.grid_plans,
        cases=args.cases,
        lever_size=args.lever_size,
        levers=not args.no_levers,
        table6=not args.no_table6,
        seconds=args.seconds,
        proposals=args.proposals,
        num_images=args.num_images,
        samples_per_image=args.samples_per_image,
        fvcore=args.fvcore,
        width=args.width,
        detector_opts=args.detector_opts,
        seed=args.seed,
        command=" ".join(["python", os.path.relpath(sys.argv[0]), *sys.argv[1:]]),
    )
    run(options)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, build_parser()))
