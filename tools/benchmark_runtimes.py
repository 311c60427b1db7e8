#!/usr/bin/env python3
"""Speed benchmark, runtime axis: the original and accelerated VGG-16 backbone, torchvision
ResNet-50 (whole, against the solver's 2x and 3x plans) and Fast R-CNN detector in the forms users
deploy them in (torch eager contiguous / channels_last, frozen TorchScript, ONNX Runtime,
OpenVINO; the reduced precisions: eager bf16 autocast, OpenVINO bf16, int8 QDQ in ONNX Runtime and
OpenVINO; on a GPU torch fp32 / fp16 / bf16 channels_last), at one thread and all threads, best
form against best form (the original's fastest fp32 form the reference; also within each
precision), with a per-layer profile of the layers furthest from their FLOP ratio and
the detector's stages. Prints Markdown tables, writes ``benchmark_runtimes.json``, ``.md``,
``.png``, the plans and the ONNX files to ``--output``.

    python tools/benchmark_runtimes.py                 # full width, every case
    python tools/benchmark_runtimes.py --quick         # backbone at 224x224 and the detector
                                                       # at 600x1000, one thread
    python tools/benchmark_runtimes.py --device cuda   # on a GPU (tools/benchmark_gpu.sh)
    python tools/benchmark_runtimes.py --plan output/vgg16_4x.json \
        --detector-plan output/accel_vgg16_voc/plan.json   # also time plans made elsewhere
    python tools/benchmark_runtimes.py --backbone-sizes --no-detector --resnet resnet50
                                                       # ResNet-50 alone

The eager levers of the backbone (memory format, rounding, fused oneDNN, allocator) stay in
tools/benchmark_speed.py. Run times and measured tables: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys

import bootstrap  # noqa: F401  (accel_det from this checkout, in its .venv)

import torch

from accel_det.benchmarks.plans import named_paths
from accel_det.benchmarks.runtime_run import RuntimeBenchmarkOptions, run
from accel_det.benchmarks.runtimes import CPU_FORMS, CUDA_FORMS
from accel_det.errors import AccelDetError
from accel_det.models.resnet import RESNETS
from accel_det.utils.cli import (
    NON_NEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    SEED,
    SPEEDUP,
    add_common_arguments,
    run_tool,
)
from accel_det.utils.io import check_writable_folder

# --quick on the CPU: every runtime and precision but eager contiguous and eager bf16 autocast
# (the slowest to time; eager channels_last stays as the eager reference)
QUICK_FORMS = tuple(f for f in CPU_FORMS if f not in ("eager", "channels_last bf16"))


def size(text: str):
    height, _, width = text.partition("x")
    try:
        value = (int(height), int(width or height))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW or S, got {text!r}") from None
    if min(value) < 32:
        raise argparse.ArgumentTypeError(f"{text}: at least 32x32 (five 2x downsamplings)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", default="output/benchmark_runtimes", help="output folder")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="224x224 backbone, one thread, no eager contiguous or eager bf16 form",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument(
        "--forms", nargs="+", choices=CPU_FORMS + CUDA_FORMS, help="default: all of the device's"
    )
    parser.add_argument(
        "--threads", type=NON_NEGATIVE_INT, nargs="+", help="default 1 0 (0: all cores)"
    )
    parser.add_argument(
        "--backbone-sizes", type=size, nargs="*", metavar="HxW", help="default 224 600x1000"
    )
    parser.add_argument("--detector-size", type=size, default=(600, 1000), metavar="HxW")
    parser.add_argument(
        "--rois",
        type=POSITIVE_INT,
        nargs="+",
        default=[2000, 300],
        help="RoIs per image of the detector",
    )
    parser.add_argument("--no-detector", action="store_true", help="the backbone only")
    parser.add_argument(
        "--resnet",
        nargs="*",
        choices=RESNETS,
        help="torchvision ResNets timed whole against the solver's plans (default resnet50, none "
        "with --quick; --resnet with none: no ResNet)",
    )
    parser.add_argument(
        "--resnet-size", type=size, default=(224, 224), metavar="HxW", help="default 224"
    )
    parser.add_argument(
        "--resnet-speedups", type=SPEEDUP, nargs="+", default=[2.0, 3.0], help="default 2 3"
    )
    parser.add_argument("--no-profile", action="store_true", help="no per-layer profile")
    parser.add_argument("--speedup", type=SPEEDUP, default=4.0, help="theoretical speedup")
    parser.add_argument(
        "--round-ranks",
        type=POSITIVE_INT,
        default=16,
        help="d' and d'' multiple (compress's default 16)",
    )
    parser.add_argument(
        "--skip", nargs="*", default=["conv1_1"], help="layers the plans keep (compress's default)"
    )
    parser.add_argument(
        "--also-keep",
        nargs="*",
        default=["conv1_2"],
        metavar="LAYER",
        help="also time the backbone plans that keep these layers too (default conv1_2; none: "
        "--also-keep with no layer)",
    )
    parser.add_argument(
        "--plan",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="also time this backbone plan (tools/compress_backbone.py's OUT.json); repeatable",
    )
    parser.add_argument(
        "--detector-plan",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="also time this detector plan (tools/compress_detector.py's DIR/plan.json)",
    )
    parser.add_argument(
        "--seconds", type=POSITIVE_FLOAT, default=20.0, help="timing budget per case"
    )
    parser.add_argument(
        "--width",
        type=POSITIVE_FLOAT,
        default=1.0,
        help="VGG-16 channel multiplier (smaller for tests)",
    )
    parser.add_argument("--seed", type=SEED, default=0)
    return add_common_arguments(parser)


def main(args: argparse.Namespace) -> int:
    if any(s <= 1 for s in args.resnet_speedups):
        raise AccelDetError("--resnet-speedups must all be above 1")
    if args.speedup <= 1 or args.round_ranks < 1 or args.seconds <= 0:
        raise AccelDetError("--speedup must be above 1, --round-ranks at least 1, --seconds > 0")
    if any(r < 1 for r in args.rois) or any(t < 0 for t in args.threads or []):
        raise AccelDetError("--rois must be at least 1 and --threads at least 0")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AccelDetError(f"--device {args.device}: CUDA is not available")
    sizes = args.backbone_sizes
    if sizes is None:
        sizes = [(224, 224)] if args.quick else [(224, 224), (600, 1000)]
    options = RuntimeBenchmarkOptions(
        output=check_writable_folder(args.output),
        width=args.width,
        speedup=args.speedup,
        round_ranks=args.round_ranks,
        backbone_sizes=sizes,
        detector_size=args.detector_size,
        rois=args.rois,
        threads=args.threads or ([1] if args.quick else [1, 0]),
        forms=args.forms or (QUICK_FORMS if args.quick and device.type == "cpu" else ()),
        device=str(device),
        seconds=args.seconds,
        skip=args.skip,
        also_keep=args.also_keep,
        plans=named_paths(args.plan),
        detector_plans=named_paths(args.detector_plan),
        detector=not args.no_detector,
        resnets=args.resnet if args.resnet is not None else ([] if args.quick else ["resnet50"]),
        resnet_size=args.resnet_size,
        resnet_speedups=args.resnet_speedups,
        profile=not args.no_profile,
        seed=args.seed,
        command=" ".join(["python", os.path.relpath(sys.argv[0]), *sys.argv[1:]]),
    )
    run(options, progress=lambda text: print(text, flush=True))
    print(f"wrote {os.path.join(options.output, 'benchmark_runtimes.md')} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, build_parser()))
