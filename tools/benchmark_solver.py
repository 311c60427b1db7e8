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
import logging
import os
import sys
import time

import bootstrap  # noqa: F401  (accel_det from this checkout, in its .venv)

import torch

from accel_det.errors import AccelDetError
from accel_det.solver import METHODS
from accel_det.utils.cli import POSITIVE_INT, SEED, SPEEDUP, add_common_arguments, run_tool
from accel_det.utils.io import atomic_write_json, check_writable_folder, json_safe
from accel_det.workflows.bench import quality as bench
from accel_det.workflows.bench import quality_report, resnet_quality, selection, smallnet

SECTIONS = ("sweep", "rounding", "speed", "latency", "resnet")


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
    if args.threads < 0:
        raise AccelDetError("--threads must be 0 (torch's default) or more")
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.verbose:  # one line per run here, not one per layer
        logging.getLogger("accel_det.solver").setLevel(logging.WARNING)
    config = bench.quick_config() if args.quick else bench.full_config()
    config.seed = args.seed
    if args.speedups:
        if any(s <= 1 for s in args.speedups):
            raise AccelDetError("--speedups must all be greater than 1")
        config.speedups = tuple(args.speedups)
    if args.methods:
        config.methods = tuple(args.methods)
    sections = set(args.sections or (("sweep", "rounding", "speed") if args.quick else SECTIONS))
    folder = check_writable_folder(args.output)
    if args.retrain:
        cached = os.path.join(folder, smallnet.net_cache_name(config))
        if os.path.exists(cached):
            os.remove(cached)
    started = time.perf_counter()
    command = " ".join(["python", os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    record = {
        "command": command,
        "threads": torch.get_num_threads(),
        "config": json_safe(vars(config)),
        "machine": _machine(),
    }
    print(
        f"solver benchmark: {'quick' if args.quick else 'full'} run, {torch.get_num_threads()} "
        f"torch thread(s), output {folder}"
    )

    prepared = net = None
    if sections & {"sweep", "rounding", "latency"}:
        prepared = bench.prepare(config, cache_folder=folder)
        net = prepared["net"]
        how = (
            "trained"
            if prepared["trained"]
            else "loaded from " + os.path.basename(prepared["net_file"])
        )
        print(
            f"network: VGG-16 layout at width {config.width} ({config.size}x{config.size} inputs), "
            f"{how}; training took {net.train_seconds:.0f}s, final running train accuracy "
            f"{100 * net.train_accuracy:.1f}%"
        )
        record["network"] = {
            "trained_now": prepared["trained"],
            "train_seconds": net.train_seconds,
            "history": net.history,
        }
    if "sweep" in sections:
        sweep = bench.run_sweep(config, prepared, on_record=_print_record)
        record["sweep"] = sweep
        print(
            f"\nheld-out: {config.test_images} images; calibration: {config.calibration_images} "
            f"images x {config.samples_per_image} samples; error = ||F'(x) - F(x)|| / ||F(x)|| of "
            f"the conv features\n"
        )
        print(quality_report.sweep_table(sweep, config.speedups, "quality"))
        print()
        print(quality_report.sweep_table(sweep, config.speedups, "cost"))
        orders = {}
        for speedup in config.speedups:
            order = bench.method_order(sweep["records"], speedup, True, "error")
            orders[f"{speedup:g}"] = order
            print(
                f"order at {speedup:g}x (rank selection, best "
                f"first, by held-out error): {' < '.join(order)}"
            )
        record["method_order"] = orders
        png = os.path.join(folder, "benchmark_solver.png")
        quality_report.plot_sweep(
            sweep,
            png,
            title=f"small VGG-16 (width {config.width}) on the generated task, "
            f"{torch.get_num_threads()} thread(s)\n{command}",
        )
        record["png"] = png

    if "rounding" in sections:
        print("\nranks rounded to multiples (rank selection, same multiply-add budget; thin "
              "layers get a smaller power of two)")  # fmt: skip
        rounding = bench.rounding_sweep(config, prepared, on_record=_print_record)
        record["rounding"] = rounding
        print(quality_report.rounding_table(rounding, config.speedups))

    if "speed" in sections:
        print("\nspeed figures")
        solve = bench.time_channel_solve()
        print(
            f"  one 512-channel layer, {solve['samples']} samples, rank {solve['rank']}, "
            f"{solve['iterations']} iterations (nonlinear_reconstruction): "
            f"{solve['seconds']:.1f}s, peak +{solve['peak_mb']:.0f} MB (paper: 2-5 minutes per "
            f"layer in MATLAB)"
        )
        counts = (8,) if args.quick else (8, 24)
        whole = bench.time_compress_vs_forward(counts)
        for run in whole["runs"]:
            print(
                f"  compress all 12 layers of VGG-16 (asym3d 4x, {run['images']} images at "
                f"224x224, random weights): {run['compress_seconds']:.1f}s = {run['ratio']:.1f}x "
                f"one plain forward pass of the features over the same images "
                f"({run['forward_seconds']:.1f}s); peak +{run['peak_mb']:.0f} MB"
            )
        if "marginal_ratio" in whole:
            print(
                f"  marginal cost per extra image ({counts[0]} -> {counts[-1]} images): "
                f"{whole['marginal_ratio']:.1f}x its forward pass"
            )
        record["speed"] = {"channel_solve": solve, "compress_vs_forward": whole}

    if "latency" in sections:
        print(
            "\nMAC-based vs latency-based rank selection (asym, "
            "4x; VGG-16 full width, 224x224, batch 1, this CPU)"
        )
        cache = args.latency_cache or os.path.join(folder, "latency_cache.json")
        comparison = selection.latency_comparison(
            net,
            prepared["test"],
            prepared["calibration"][0],
            threads_count=torch.get_num_threads(),
            cache=cache,
            schedule=config.schedule,
            seed=config.seed,
        )
        table = comparison["table"]
        print(
            f"  latency table: {table['key']}; {table['measured_layers']} layer shapes measured "
            f"now ({table['seconds']:.0f}s), cache {cache}"
        )
        print(selection.latency_table_text(comparison))
        record["latency_selection"] = comparison

    if "resnet" in sections:
        record["resnet"] = resnet_section(args, folder)

    record["seconds"] = time.perf_counter() - started
    default = {"sweep", "rounding", "speed"} if args.quick else set(SECTIONS)
    name = (
        "benchmark_solver"
        if sections == default
        else "benchmark_solver_" + "_".join(s for s in SECTIONS if s in sections)
    )
    path = os.path.join(folder, name + ".json")
    atomic_write_json(json_safe(record), path)
    print(
        f"\nwrote {path}"
        + (f" and {record['png']}" if "png" in record else "")
        + f" ({record['seconds']:.0f}s in all)"
    )
    return 0


def resnet_section(args: argparse.Namespace, folder: str) -> dict:
    """The four methods on the trained small ResNet, with intervals; prints its table."""
    config = resnet_quality.ResNetSweepConfig(seed=args.seed)
    if args.quick:
        config.train_images, config.test_images, config.train_steps = 4000, 1000, 600
        config.calibration_images = 200
    if args.speedups:
        config.speedups = tuple(args.speedups)
    prepared = resnet_quality.prepare(config, cache_folder=folder)
    info = prepared["info"]
    print(
        f"\nsmall ResNet (torchvision BasicBlock x 2 per stage, widths {config.width}-"
        f"{8 * config.width}, batch norms folded before solving; {config.size}x{config.size}), "
        f"{'trained' if prepared['trained'] else 'loaded'}; training took "
        f"{info['train_seconds']:.0f}s, running train accuracy {100 * info['train_accuracy']:.1f}%"
    )

    def show(record):
        if "impossible" in record:
            print(f"  {record['method']:9s} {record['speedup']:g}x: impossible", flush=True)
        else:
            print(
                f"  {record['method']:9s} {record['speedup']:g}x: error {record['error']:.4f}  "
                f"top-1 {100 * record['accuracy']:.1f}%  {record['seconds']:.1f}s", flush=True
            )  # fmt: skip

    sweep = resnet_quality.run_sweep(config, prepared, on_record=show)
    print(
        f"\nheld-out: {config.test_images} images; calibration: {config.calibration_images} "
        f"images x {config.samples_per_image} samples; error = ||F'(x) - F(x)|| / ||F(x)|| of "
        f"the logits; 95% percentile bootstrap over the test images ({config.bootstrap} "
        f"resamples); ranks as the paper's (not rounded), the stem kept\n"
    )
    print(resnet_quality.sweep_table(sweep, config.speedups))
    for line in resnet_quality.order_lines(sweep, config.speedups):
        print(line)
    png = os.path.join(folder, "benchmark_solver_resnet.png")
    title = f"small ResNet (widths {config.width}-{8 * config.width}) on the generated task"
    resnet_quality.plot_sweep(sweep, png, title=title + ", 95% bootstrap intervals")
    print(f"wrote {png}")
    return {"config": json_safe(vars(config)), "network": info, "png": png, **sweep}


def _print_record(record: dict) -> None:
    name = (
        f"{record['method']:9s} "
        f"{'rank sel.' if record['rank_selection'] else 'uniform  '} {record['speedup']:g}x"
    )
    if "impossible" in record:
        print(f"  {name}: impossible ({record['impossible']})", flush=True)
    else:
        print(
            f"  {name}: error {record['error']:.4f}  top-1 {100 * record['accuracy']:.1f}%  "
            f"{record['seconds']:.1f}s  +{record['peak_mb']:.0f} MB",
            flush=True,
        )


def _machine() -> dict:
    from accel_det.utils.timing import device_name

    return {"cpu": device_name("cpu"), "torch": torch.__version__}


if __name__ == "__main__":
    sys.exit(run_tool(main, build_parser()))
