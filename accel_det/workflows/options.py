"""The solver's command-line options, shared by the compression tools (``--speedup``,
``--method``, ``--round-ranks``, …): added to a parser once, read back into
:class:`~accel_det.solver.SolverOptions` once."""

from __future__ import annotations

import argparse

from ..errors import AccelDetError
from ..solver import METHODS, SolverOptions, paper_schedule
from ..solver.ranks import RANK_COSTS
from ..utils.cli import NON_NEGATIVE_INT, POSITIVE_INT, SEED, SPEEDUP, number


def add_solver_arguments(
    parser: argparse.ArgumentParser, *, samples_per_image: int = 10
) -> argparse.ArgumentParser:
    """The solver's options, with the paper's protocol as defaults."""
    group = parser.add_argument_group("solver")
    group.add_argument(
        "--speedup",
        type=SPEEDUP,
        default=4.0,
        help="whole-model theoretical speedup of the conv layers (default: 4)",
    )
    group.add_argument(
        "--method", choices=list(METHODS), default="asym3d", help="solution (default: asym3d)"
    )
    group.add_argument(
        "--no-rank-selection",
        action="store_true",
        help="the same speedup for every layer instead of eq. (14)",
    )
    group.add_argument(
        "--samples-per-image",
        type=POSITIVE_INT,
        default=samples_per_image,
        help=f"responses sampled per image and layer (default: {samples_per_image})",
    )
    group.add_argument(
        "--seed",
        type=SEED,
        default=0,
        help="draws the images and the sampled positions (default: 0)",
    )
    group.add_argument(
        "--iterations",
        type=NON_NEGATIVE_INT,
        default=25,
        help=(
            "nonlinear solver iterations per lambda step: 0.01 then 1.0 (default: 25, as the paper)"
        ),
    )
    group.add_argument(
        "--rank-cost",
        choices=[c for c in RANK_COSTS if c != "latency"],
        default="with_1x1",
        help=(
            "rank selection cost per kept rank (default: "
            "with_1x1, which reproduces the paper's tables)"
        ),
    )
    group.add_argument(
        "--round-ranks",
        type=POSITIVE_INT,
        default=16,
        metavar="N",
        help="keep every d' and d'' a multiple of N at the same multiply-add budget (beyond the "
        "paper; default 16, oneDNN's fp32 channel block on x86 CPUs; 8 suits fp16 GPU kernels; 1: "
        "the paper's ranks; thin layers get a smaller power of two)",
    )
    group.add_argument(
        "--heldout-fraction",
        type=number(float, minimum=0, below=1),
        default=0.1,
        help="share of the images kept out of every solve to measure the held-out error "
        "(default: 0.1; 0: none)",
    )
    group.add_argument(
        "--skip",
        nargs="*",
        help="layers left as they are (default: the first conv layer, conv1_1 of VGG-16, conv1 of "
        "a ResNet; --skip with no layer: none)",
    )
    return parser


def solver_options(args: argparse.Namespace) -> SolverOptions:
    """:class:`SolverOptions` from the parsed options of :func:`add_solver_arguments`."""
    if args.iterations < 0:
        raise AccelDetError(f"--iterations must be >= 0, got {args.iterations}")
    if args.round_ranks < 1:
        raise AccelDetError(f"--round-ranks must be >= 1, got {args.round_ranks}")
    return SolverOptions(
        speedup=args.speedup,
        method=args.method,
        rank_selection=not args.no_rank_selection,
        samples_per_image=args.samples_per_image,
        skip=tuple(args.skip) if args.skip is not None else None,
        seed=args.seed,
        schedule=paper_schedule(args.iterations),
        rank_cost=args.rank_cost,
        round_ranks_to=args.round_ranks,
        heldout_fraction=args.heldout_fraction,
    )
