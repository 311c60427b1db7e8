#!/usr/bin/env python3
"""Speed of Detectron2's R50-FPN Faster R-CNN (configs/faster_rcnn_R_50_FPN.yaml) against the
same detector accelerated to 2x and 3x as a whole (the backbone's convs, the RPN head's conv and
the box head's fcs under one budget, as tools/compress_detector.py plans it): the backbone + FPN
in torch eager, TorchScript, ONNX Runtime
and OpenVINO, the whole model (eager, eager with the backbone in ONNX Runtime / OpenVINO,
TorchScript through Detectron2's TracingAdapter) split into stages, at one thread and all
threads, best form against best form. Random weights with realistic batch-norm statistics, plans
from eigenvalues sampled on random images: timing only. Prints Markdown tables and writes the
JSON record at --output, its .md and .png (stage bars) next to it, and the exported backbones in
<output stem>_exports/.

    python tools/benchmark_rcnn.py --output output/rcnn/benchmark_rcnn.json
    python tools/benchmark_rcnn.py --output output/rcnn/benchmark_rcnn.json --threads 1
    python tools/benchmark_rcnn.py --output out.json --quick     # 320x427, one round
    python tools/benchmark_rcnn.py --threads 1 --output out.json MODEL.RESNETS.DEPTH 101

Config overrides (KEY VALUE) go last, after an option other than --threads or --speedups (which
would take them as values).

Measured tables: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys

import bootstrap  # noqa: F401  (accel_det from this checkout, in its .venv)

from accel_det.benchmarks.rcnn import RcnnBenchOptions, run
from accel_det.utils.cli import (
    IMAGE_SIDE,
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    SEED,
    SPEEDUP,
    add_common_arguments,
    run_tool,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", required=True, help="the JSON record (.json)")
    parser.add_argument(
        "--config-file",
        default="faster_rcnn_R_50_FPN.yaml",
        help="the detector's config (default: faster_rcnn_R_50_FPN.yaml); its weights are not read",
    )
    parser.add_argument(
        "--input-size",
        type=IMAGE_SIDE,
        nargs=2,
        metavar=("H", "W"),
        default=(800, 1333),
        help="the image's size at test time (default: 800 1333)",
    )
    parser.add_argument(
        "--speedups", type=SPEEDUP, nargs="+", default=[2.0, 3.0], help="plans (default: 2 3)"
    )
    parser.add_argument(
        "--method",
        default="asym",
        help="the plans' method (default: asym; asym3d's rank selection cannot reach 2x on "
        "R50-FPN)",
    )
    parser.add_argument(
        "--threads",
        type=NON_NEGATIVE_INT,
        nargs="+",
        default=[1, 0],
        help="thread counts, 0: all cores (default: 1 0)",
    )
    parser.add_argument("--repeats", type=POSITIVE_INT, default=5, help="timed rounds (default 5)")
    parser.add_argument("--warmup", type=NON_NEGATIVE_INT, default=1, help="untimed rounds")
    parser.add_argument("--seed", type=SEED, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="320x427 images, one round, no warm-up (a smoke test)"
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, default=[], help="config overrides, KEY VALUE ..."
    )
    return add_common_arguments(parser)


def main(args) -> int:
    run(
        RcnnBenchOptions(
            output=args.output,
            config_file=args.config_file,
            opts=list(args.opts),
            input_hw=tuple(args.input_size),
            speedups=tuple(args.speedups),
            method=args.method,
            threads=tuple(args.threads),
            repeats=args.repeats,
            warmup=args.warmup,
            seed=args.seed,
            quick=args.quick,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, build_parser()))
