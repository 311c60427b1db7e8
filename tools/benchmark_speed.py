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
import re
import sys
import time

import bootstrap  # noqa: F401  (accel_det from this checkout, in its .venv)

import torch

from accel_det.data.synthetic.shapes import make_task
from accel_det.errors import AccelDetError
from accel_det.nn.chain import conv_names
from accel_det.nn.network import apply_plan
from accel_det.plan import Plan, plan_fingerprint
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
from accel_det.utils.io import (
    atomic_write_json,
    atomic_write_text,
    check_writable_folder,
    json_safe,
)
from accel_det.utils.timing import device_name, machine, num_threads
from accel_det.workflows.bench import detector as bench_detector
from accel_det.workflows.bench import forms, macs, speed, tables
from accel_det.workflows.bench import plans as bench_plans

QUICK_CASES = ("backbone:224:1", "backbone:600x1000:1", "detector:224:1", "detector:600x1000:1")
FULL_CASES = (
    "backbone:224:1",
    "backbone:224:8",
    "backbone:600x1000:1",
    "detector:224:1",
    "detector:224:8",
    "detector:600x1000:1",
)
# batch 8 at 600x1000 takes 33 s per call of the original on one CPU thread (4-5 minutes a case):
# GPU only by default
GPU_CASES = FULL_CASES + ("backbone:600x1000:8", "detector:600x1000:8")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
    parser.add_argument("--seed", type=SEED, default=0)
    return add_common_arguments(parser)


def main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.threads < 1 or any(t < 1 for t in args.lever_threads):
        raise AccelDetError("--threads and --lever-threads must be at least 1")
    if args.round_ranks < 1:
        raise AccelDetError("--round-ranks must be at least 1")
    if args.lever_size < speed.MIN_SIZE["backbone"]:
        raise AccelDetError(
            f"--lever-size must be at least "
            f"{speed.MIN_SIZE['backbone']} (VGG-16 halves it five times)"
        )
    try:
        device = torch.device(
            "cuda"
            if args.device == "auto" and torch.cuda.is_available()
            else ("cpu" if args.device == "auto" else args.device)
        )
    except RuntimeError:
        raise AccelDetError(f"--device {args.device!r}: expected auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AccelDetError("--device cuda but CUDA is not available")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise AccelDetError(
            f"--device {args.device}: there are {torch.cuda.device_count()} CUDA device(s)"
        )
    quick = args.quick
    seconds = args.seconds or (8.0 if quick else 20.0)
    cases = [
        speed.Case.parse(c)
        for c in (
            args.cases
            or (QUICK_CASES if quick else GPU_CASES if device.type == "cuda" else FULL_CASES)
        )
    ]
    fvcore = args.fvcore or ("small" if quick else "all")
    folder = check_writable_folder(args.output)
    torch.set_num_threads(args.threads)
    command = " ".join(["python", os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    env_threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print(
        f"speed benchmark: {'quick' if quick else 'full'} run; grid on {device_name(device)} with "
        f"{args.threads} torch thread(s); levers at {args.lever_threads} thread(s); "
        f"OMP_NUM_THREADS={env_threads}",
        flush=True,
    )
    print(f"load average before: {_load()}", flush=True)

    features = forms.random_features(args.width, args.seed)
    size = (args.lever_size, args.lever_size)
    plans, files = _plans(args, features, size, quick)
    plan_dir = os.path.join(folder, "plans")
    os.makedirs(plan_dir, exist_ok=True)
    plan_files = {}
    for name, plan in plans.items():
        plan_files[name] = files.get(name) or os.path.join(plan_dir, _slug(name) + ".json")
        if name not in files:
            atomic_write_json(plan, plan_files[name])
    print("\nplans (d' and d'' of conv1_1 ... conv5_3; '-': layer kept):")
    for name, plan in plans.items():
        layers = [
            plan["layers"].get(n) or {} for n in conv_names(features)
        ]  # a plan may list only some layers
        ranks = "/".join(str(e.get("rank") or "-") for e in layers)
        spatial = "/".join(str(e.get("spatial_rank") or "-") for e in layers)
        print(
            f"  {name}: theoretical {plan['theoretical_speedup']:.3f}x; d' {ranks}"
            + (f"; d'' {spatial}" if any(e.get("spatial_rank") for e in layers) else "")
        )
    models = {
        name: forms.accelerated_features(features, plan, args.seed) for name, plan in plans.items()
    }

    record = {
        "format": speed.SPEED_FORMAT,
        "command": command,
        "threads": args.threads,
        "lever_threads": args.lever_threads,
        "omp_num_threads": env_threads,
        "device": device_name(device),
        "machine": machine(device),
        "width": args.width,
        "speedup": args.speedup,
        "round_ranks_to": args.round_ranks,
        "quick": quick,
        "models": {
            speed.ORIGINAL_NAME: {
                "fingerprint": plan_fingerprint(None),
                "theoretical_speedup": 1.0,
            },
            **{
                n: {**bench_plans.plan_summary(p), "plan_file": plan_files[n]}
                for n, p in plans.items()
            },
        },
        "notes": NOTES,
    }
    families = [
        f
        for f in ([bench_plans.TABLE6_NAME] if bench_plans.TABLE6_NAME in plans else [])
        + list(args.methods)
        if f in plans
    ]
    matrix = None
    if not args.no_levers:
        print(
            f"\nlevers: VGG-16 features at {size[0]}x{size[1]}, batch 1, every model x "
            f"{', '.join(forms.MODES)} x {args.lever_threads} thread(s), interleaved",
            flush=True,
        )
        lever_models = {
            n: m
            for n, m in models.items()
            if n in families or any(n == f"{f}, ranks x{args.round_ranks}" for f in families)
        }
        matrix = speed.lever_matrix(
            features,
            lever_models,
            input_hw=size,
            threads=args.lever_threads,
            seconds=seconds * (1.25 if not quick else 1.0),
            seed=args.seed,
            progress=_say,
        )
        levers = speed.lever_rows(matrix, plans, families, args.round_ranks)
        record.update(lever_matrix=matrix, levers=levers)
        print("\n" + tables.matrix_table(matrix))
        print("\n" + tables.lever_table(levers, families))
        print(
            f"(largest relative output difference of a channels_last / fused form against its "
            f"contiguous model: {tables.largest_error(matrix):.1e})"
        )
        print(tables.paper_reference())
        x = torch.randn(1, 3, *size)
        profiles = {}
        for name in [speed.ORIGINAL_NAME] + [
            n for n in lever_models if n.endswith(f"x{args.round_ranks}")
        ]:
            model = features if name == speed.ORIGINAL_NAME else models[name]
            profiles[name] = speed.layer_profile(
                forms.model_form(model, "channels_last", x), x, threads=min(args.lever_threads)
            )
        record["layer_profile"] = profiles
        base = profiles[speed.ORIGINAL_NAME]
        ceiling = base["total_ms"] / (base["conv_ms"] / args.speedup + base["other_ms"])
        print(
            f"layer by layer (channels_last, {min(args.lever_threads)} "
            f"thread(s), one layer after another): "
            + "; ".join(
                f"{n}: conv {p['conv_ms']:.1f} ms + ReLU/max-pool {p['other_ms']:.1f} ms"
                for n, p in profiles.items()
            )
        )
        print(
            f"ReLU and max-pool are not factorized: with conv time cut exactly {args.speedup:g}x, "
            f"the original would run {ceiling:.2f}x faster (actual / theoretical at most "
            f"{ceiling / args.speedup:.2f} in this eager form)"
        )
        record["eager_ceiling"] = {"speedup": ceiling, "ratio": ceiling / args.speedup}

    grid_names = _grid_names(args, plans, files)
    grid_plans = {n: plans[n] for n in grid_names}
    rows = []
    detectors = None
    print(
        f"\ngrid: {', '.join(grid_names)} against the "
        f"original; channels_last; {args.threads} thread(s)"
        + (f" ({device_name(device)})" if device.type == "cuda" else ""),
        flush=True,
    )
    for case in cases:
        start = time.perf_counter()
        check = fvcore == "all" or (fvcore == "small" and case.hw[0] * case.hw[1] <= 224 * 224)
        reused = None
        if (
            case.part == "backbone"
            and case.batch == 1
            and case.hw == size
            and matrix is not None
            and device.type == "cpu"
            and str(args.threads) in matrix["timings"]
            and set(grid_names) <= set(matrix["timings"][str(args.threads)])
        ):
            reused = _rows_from_matrix(
                case, matrix, features, models, grid_plans, args.threads, check
            )
        if reused is not None:
            case_rows = reused
        elif case.part == "backbone":
            case_rows = []
            for dtype in (
                (torch.float32, torch.float16, torch.bfloat16)
                if device.type == "cuda"
                else (torch.float32,)
            ):
                case_rows += speed.backbone_case(
                    case,
                    features,
                    {n: models[n] for n in grid_names},
                    grid_plans,
                    threads=args.threads,
                    seconds=seconds,
                    device=device,
                    dtype=dtype,
                    check_fvcore=check and dtype == torch.float32,
                    seed=args.seed,
                )
        else:
            if detectors is None:
                detectors = bench_detector.build_detectors(
                    grid_plans,
                    plan_files,
                    width=args.width,
                    opts=args.detector_opts,
                    device=device,
                    seed=args.seed,
                )
            case_rows = bench_detector.detector_case(
                case,
                detectors,
                grid_plans,
                threads=args.threads,
                seconds=seconds,
                proposals=args.proposals,
                device=device,
                check_fvcore=check,
                seed=args.seed,
                min_repeats=2 if quick else 3,
            )
        rows += case_rows
        mismatched = [
            r["model"]
            for r in case_rows
            if r.get("fvcore_macs") is not None and r["fvcore_macs"] != r["macs"]
        ]
        _say(
            f"{case.label}: {len(case_rows)} rows, "
            f"{case_rows[0]['latency']['repeats']} timed rounds"
            + (" (reused from the lever comparison)" if reused is not None else "")
            + f", {time.perf_counter() - start:.0f}s"
            + (f"; fvcore DISAGREES for {mismatched}" if mismatched else "")
        )
    record["grid"] = rows
    print("\n" + tables.grid_table(rows))
    print(
        "theor. (conv): the paper's theoretical speedup, all conv layers; theor. (all MACs): also "
        "fc6/fc7 and the predictors of the detector; actual / theor. uses the latter; fvcore '=': "
        "the same count."
    )

    # The allocator lever last: it changes malloc for the rest of the process.
    # cases whose conv1 activation (batch x 64 x H x W floats) is over glibc's largest mmap
    # threshold (32 MB)
    large = [
        c
        for c in cases
        if c.part == "backbone"
        and c.batch * 64 * c.hw[0] * c.hw[1] * 4 > 32 << 20
        and c.batch * c.hw[0] * c.hw[1] <= 1000 * 1000
    ]  # not batch 8 at 600x1000 again: minutes
    if large and device.type == "cpu" and not args.no_levers and forms.keep_freed_memory():
        print(
            "\nallocator lever: the same cases again with glibc malloc keeping freed memory in its "
            "heap (mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=2^31-1: no page faults on reused "
            "activations)",
            flush=True,
        )
        kept = []
        for case in large:
            start = time.perf_counter()
            case_rows = speed.backbone_case(
                case,
                features,
                {n: models[n] for n in grid_names},
                grid_plans,
                threads=args.threads,
                seconds=seconds,
                check_fvcore=False,
                seed=args.seed,
            )
            for row in case_rows:
                row["variant"] = "malloc keeps freed memory"
            kept += case_rows
            _say(
                f"{case.label}: {case_rows[0]['latency']['repeats']} timed rounds, "
                f"{time.perf_counter() - start:.0f}s"
            )
        before = [r for r in rows if any(str(c) == r["case"] for c in large)]
        print("\n" + tables.grid_table(before + kept))
        record["allocator"] = {
            "setting": "mallopt(M_MMAP_MAX, 0), mallopt(M_TRIM_THRESHOLD, 2**31 - 1)",
            "rows": kept,
        }
    record["seconds"] = time.perf_counter() - started
    record["load_after"] = _load()
    print(f"load average after: {record['load_after']}")
    path = os.path.join(folder, "benchmark_speed.json")
    atomic_write_json(json_safe(record), path)
    markdown = _markdown(record, families)
    atomic_write_text(markdown, os.path.join(folder, "benchmark_speed.md"))
    print(f"\nwrote {path}, benchmark_speed.md and plans/ ({record['seconds']:.0f}s in all)")
    return 0


NOTES = [
    "Random He-initialised weights: speed does not depend on the values.",
    "The solver's plans: rank selection (eqs. 13-14, multiply-add budget) on eigenvalues of "
    "responses of the random-weight VGG-16 to generated images (no ImageNet weights here); ranks "
    "rounded: d' by the solver's round_ranks_to, asym3d's d'' by spatial_ranks(round_to=...), both "
    "at the same multiply-add budget.",
    "Latency: torch.inference_mode, warm-up, then interleaved rounds (one call of each model per "
    "round), median; actual speedup = original median / model median at the same thread count.",
    "Detector: Detectron2 Fast R-CNN (configs/vgg16_voc.yaml, accel_vgg16_voc.yaml with the plan), "
    "random precomputed proposals, box head shared between models, classifier set so that no box "
    "passes the score threshold (NMS left out).",
]


def _plans(args, features, size, quick):
    """Plan files first (a bad one fails before any work), then Table 6 and the solver's plans."""
    plans, files = {}, {}
    for item in args.plan:
        name, _, path = item.rpartition("=") if "=" in item else ("", "", item)
        plan = Plan.read(path)
        try:
            apply_plan(features, plan)
            if not isinstance(plan.get("theoretical_speedup"), (int, float)):
                plan["theoretical_speedup"] = _theoretical(features, plan, size)
        except (
            AccelDetError,
            ValueError,
            TypeError,
            KeyError,
            AttributeError,
        ) as error:  # malformed layer entries too
            detail = (
                error
                if isinstance(error, AccelDetError)
                else f"a malformed layer entry ({error!r})"
            )
            raise AccelDetError(
                f"plan {path} does not fit VGG-16 at width {args.width}: {detail}"
            ) from None
        plan["file"] = os.path.abspath(path)
        name = name or os.path.splitext(os.path.basename(path))[0]
        if name in files:
            raise AccelDetError(f"two --plan files are named {name!r}: name them, --plan NAME=PATH")
        plans[name] = plan
        files[name] = os.path.abspath(path)
    if not args.no_table6 and args.width == 1.0:
        plans[bench_plans.TABLE6_NAME] = bench_plans.table6_plan(features, size)
    images = make_task(args.num_images or (4 if quick else 8), size=size[0], seed=args.seed + 4000)[
        0
    ]
    start = time.perf_counter()
    with num_threads(max(args.lever_threads)):
        eigenvalues = bench_plans.sampled_eigenvalues(
            features,
            images,
            samples_per_image=args.samples_per_image or (50 if quick else 100),
            seed=args.seed,
        )
    solved = bench_plans.solver_plans(
        features,
        eigenvalues,
        size,
        speedup=args.speedup,
        methods=args.methods,
        round_to=args.round_ranks,
    )
    clash = sorted(set(solved) & set(plans))
    if clash:
        raise AccelDetError(
            f"--plan names {clash} are the solver's plans' names: choose others (--plan NAME=PATH)"
        )
    plans.update(solved)
    _say(f"solver plans from {len(images)} generated images: {time.perf_counter() - start:.0f}s")
    return plans, files


def _theoretical(features, plan, size) -> float:
    from accel_det.solver.complexity import whole_model_speedup
    from accel_det.solver.network import conv_specs

    layers = {
        name: {"structure": "original", **entry} for name, entry in plan["layers"].items()
    }  # as apply_plan reads them
    return whole_model_speedup(conv_specs(features, size), layers)


def _grid_names(args, plans, files):
    if args.grid_plans:
        by_path = {os.path.abspath(p): n for n, p in files.items()}
        names = [by_path.get(os.path.abspath(n), n) for n in args.grid_plans]
        unknown = [n for n in names if n not in plans]
        if unknown:
            raise AccelDetError(f"--grid-plans: unknown plan(s) {unknown}; known: {sorted(plans)}")
        return names
    rounded = [n for n in plans if n.endswith(f", ranks x{args.round_ranks}")]
    return rounded + [n for n in files if n not in rounded]


def _rows_from_matrix(case, matrix, features, models, plans, threads, check):
    """Grid rows of the backbone at the lever size, batch 1, from the lever comparison's
    channels_last timings at ``threads`` (the same measurement; not repeated)."""
    timings = matrix["timings"][str(threads)]
    all_models = {speed.ORIGINAL_NAME: features, **{n: models[n] for n in plans}}
    timed = {n: timings[n]["channels_last"] for n in all_models}
    counts = {n: macs.features_macs(m, case.hw) for n, m in all_models.items()}
    checked = (
        {n: macs.fvcore_macs(m, (torch.randn(1, 3, *case.hw),)) for n, m in all_models.items()}
        if check
        else {}
    )
    return speed.grid_rows(case, timed, counts, counts, checked, plans, torch.float32)


def _markdown(record, families) -> str:
    parts = [
        f"# Speed: theoretical vs measured ({record['device']})",
        "",
        f"`{record['command']}`; grid at {record['threads']} torch thread(s), "
        f"OMP_NUM_THREADS={record['omp_num_threads']}; {record['seconds']:.0f} s.",
        "",
    ]
    parts += [f"- {n}" for n in record["notes"]] + [""]
    if "levers" in record:
        parts += [
            "## Levers (backbone, batch 1)",
            "",
            tables.lever_table(record["levers"], families),
            "",
            tables.matrix_table(record["lever_matrix"]),
            "",
        ]
        if "eager_ceiling" in record:
            parts += [
                f"ReLU and max-pool (not factorized) bound the eager form at "
                f"{record['eager_ceiling']['speedup']:.2f}x (actual / theoretical "
                f"{record['eager_ceiling']['ratio']:.2f}).",
                "",
            ]
    parts += ["## Grid", "", tables.grid_table(record["grid"]), ""]
    if "allocator" in record:
        cases = {r["case"] for r in record["allocator"]["rows"]}
        parts += [
            "## Allocator lever",
            "",
            f"`{record['allocator']['setting']}` (glibc), then the same cases again:",
            "",
            tables.grid_table(
                [r for r in record["grid"] if r["case"] in cases] + record["allocator"]["rows"]
            ),
            "",
        ]
    return "\n".join(parts)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()


def _say(text: str) -> None:
    print(f"  {text}", flush=True)


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(run_tool(main, build_parser()))
