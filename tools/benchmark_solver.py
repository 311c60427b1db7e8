#!/usr/bin/env python3
"""Solver benchmark: every method (linear, nonlinear, asym, asym3d, jaderberg; rank selection on and
off) at several speedups on a small VGG-16 trained here on a generated 10-class task, with held-out
output error, top-1 accuracy, compression time and peak memory; the same four methods on a small
ResNet (torchvision BasicBlocks, batch norms, residual adds) trained on the same task, with 95 %
bootstrap intervals; the solver's speed figures; and MAC-based vs latency-based rank selection.
Prints tables, writes ``benchmark_solver.json`` and ``benchmark_solver.png`` to ``--output``.

    # 2x/3x/4x + speed figures (the trained net is cached in --output)
    python tools/benchmark_solver.py --quick
    # 2x-5x, speed figures, latency section
    python tools/benchmark_solver.py
    # one section (the trained net is reused from --output)
    python tools/benchmark_solver.py --sections latency
    # the small ResNet: linear / nonlinear / asym / asym3d at 2x, 3x, 4x
    python tools/benchmark_solver.py --sections resnet

Run times and measured tables: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys

import bootstrap  # noqa: F401  (accel_det from this checkout, in its .venv)

from accel_det.benchmarks.solver_run import SECTIONS, SolverBenchmarkOptions, run
from accel_det.solver import METHODS
from accel_det.utils.cli import POSITIVE_INT, SEED, SPEEDUP, add_common_arguments, run_tool


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2x/3x/4x, fewer images and training steps, no latency section",
    )
    parser.add_argument(
        "--output",
        default="output/benchmark_solver",
        help="folder for the JSON, the PNG and the cached network",
    )
    parser.add_argument(
        "--speedups",
        type=SPEEDUP,
        nargs="+",
        help="speedups to sweep (default 2 3 4 5; --quick: 2 3 4)",
    )
    parser.add_argument(
        "--methods", nargs="+", choices=METHODS, help="methods to sweep (default: all)"
    )
    parser.add_argument(
        "--threads",
        type=POSITIVE_INT,
        default=1,
        help=(
            "torch CPU threads for everything (default 1: on a shared machine more threads than "
            "free cores make every op wait for a descheduled thread; 0 keeps torch's default)"
        ),
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        help=(
            "what to run: sweep (methods x speedups on the trained net), speed (512-channel solve, "
            "compress vs forward), latency (MAC- vs latency-based rank selection), resnet (the "
            "four methods on a trained small ResNet); default all, --quick: sweep rounding speed"
        ),
    )
    parser.add_argument(
        "--latency-cache", help="latency table cache (default: OUTPUT/latency_cache.json)"
    )
    parser.add_argument(
        "--retrain", action="store_true", help="train the network again even if OUTPUT holds it"
    )
    parser.add_argument("--seed", type=SEED, default=0)
    parser.add_argument(
        "--verbose", action="store_true", help="log every layer of every compression"
    )
    return add_common_arguments(parser)


def main(args: argparse.Namespace) -> int:
    options = SolverBenchmarkOptions(
        output=args.output,
        quick=args.quick,
        speedups=args.speedups,
        methods=args.methods,
        threads=args.threads,
        sections=args.sections,
        latency_cache=args.latency_cache,
        retrain=args.retrain,
        seed=args.seed,
        verbose=args.verbose,
        command=" ".join(["python", os.path.relpath(sys.argv[0]), *sys.argv[1:]]),
    )
    run(options)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, build_parser()))
