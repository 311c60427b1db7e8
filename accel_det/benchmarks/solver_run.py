"""The solver benchmark of ``tools/benchmark_solver.py``: every method at several speedups on the
trained small VGG-16 (held-out error, top-1, time, memory), ranks rounded to multiples, the
solver's speed figures, MAC- vs latency-based rank selection (§3.4) and the small ResNet. Prints
each section's tables and writes ``benchmark_solver.json`` / ``.png``."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..errors import AccelDetError
from ..utils.io import atomic_write_json, check_writable_folder, json_safe
from . import plots, quality_report, resnet_quality, selection, smallnet
from . import quality as bench

SECTIONS = ("sweep", "rounding", "speed", "latency", "resnet")
QUICK_SECTIONS = ("sweep", "rounding", "speed")


@dataclass
class SolverBenchmarkOptions:
    """What ``tools/benchmark_solver.py`` runs (its options, one field each)."""

    output: str = "output/benchmark_solver"
    quick: bool = False
    speedups: Optional[Sequence[float]] = None
    methods: Optional[Sequence[str]] = None
    threads: int = 1  # 0: torch's default
    sections: Optional[Sequence[str]] = None  # default: all, --quick: QUICK_SECTIONS
    latency_cache: Optional[str] = None
    retrain: bool = False
    seed: int = 0
    verbose: bool = False
    command: str = ""


def sweep_config(options: SolverBenchmarkOptions) -> bench.SweepConfig:
    """The small VGG-16's sweep settings: quick or full, with the options' seed, speedups and
    methods."""
    config = bench.quick_config() if options.quick else bench.full_config()
    config.seed = options.seed
    if options.speedups:
        if any(s <= 1 for s in options.speedups):
            raise AccelDetError("--speedups must all be greater than 1")
        config.speedups = tuple(options.speedups)
    if options.methods:
        config.methods = tuple(options.methods)
    return config


def run(options: SolverBenchmarkOptions) -> dict:
    """Run the sections asked for, printing their tables; writes and returns the record."""
    if options.threads < 0:
        raise AccelDetError("--threads must be 0 (torch's default) or more")
    if options.threads:
        torch.set_num_threads(options.threads)
    if not options.verbose:  # one line per run here, not one per layer
        logging.getLogger("accel_det.solver").setLevel(logging.WARNING)
    config = sweep_config(options)
    sections = set(options.sections or (QUICK_SECTIONS if options.quick else SECTIONS))
    folder = check_writable_folder(options.output)
    if options.retrain:
        cached = os.path.join(folder, smallnet.net_cache_name(config))
        if os.path.exists(cached):
            os.remove(cached)
    started = time.perf_counter()
    record = {
        "command": options.command,
        "threads": torch.get_num_threads(),
        "config": json_safe(vars(config)),
        "machine": machine(),
    }
    print(
        f"solver benchmark: {'quick' if options.quick else 'full'} run, "
        f"{torch.get_num_threads()} torch thread(s), output {folder}"
    )
    prepared = None
    if sections & {"sweep", "rounding", "latency"}:
        prepared = network_section(config, folder, record)
    if "sweep" in sections:
        sweep_section(config, prepared, folder, record, options.command)
    if "rounding" in sections:
        print("\nranks rounded to multiples (rank selection, same multiply-add budget; thin "
              "layers get a smaller power of two)")  # fmt: skip
        rounding = bench.rounding_sweep(config, prepared, on_record=print_record)
        record["rounding"] = rounding
        print(quality_report.rounding_table(rounding, config.speedups))
    if "speed" in sections:
        record["speed"] = speed_section((8,) if options.quick else (8, 24))
    if "latency" in sections:
        cache = options.latency_cache or os.path.join(folder, "latency_cache.json")
        record["latency_selection"] = latency_section(config, prepared, cache)
    if "resnet" in sections:
        record["resnet"] = resnet_section(options, folder)
    record["seconds"] = time.perf_counter() - started
    write_record(record, folder, sections, options.quick)
    return record


def network_section(config, folder: str, record: dict) -> dict:
    """The small VGG-16 trained (or loaded from ``folder``) with its data; prints how."""
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
    return prepared


def sweep_section(config, prepared: dict, folder: str, record: dict, command: str) -> None:
    """Every method x speedup, with and without rank selection: tables, orders and the PNG."""
    sweep = bench.run_sweep(config, prepared, on_record=print_record)
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
    plots.plot_vgg_sweep(
        sweep,
        png,
        title=f"small VGG-16 (width {config.width}) on the generated task, "
        f"{torch.get_num_threads()} thread(s)\n{command}",
    )
    record["png"] = png


def speed_section(counts: Sequence[int]) -> dict:
    """One 512-channel solve, and compressing all of VGG-16 against its forward pass."""
    print("\nspeed figures")
    solve = bench.time_channel_solve()
    print(
        f"  one 512-channel layer, {solve['samples']} samples, rank {solve['rank']}, "
        f"{solve['iterations']} iterations (nonlinear_reconstruction): "
        f"{solve['seconds']:.1f}s, peak +{solve['peak_mb']:.0f} MB (paper: 2-5 minutes per "
        f"layer in MATLAB)"
    )
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
    return {"channel_solve": solve, "compress_vs_forward": whole}


def latency_section(config, prepared: dict, cache: str) -> dict:
    """MAC-based against latency-based rank selection (asym 4x) on this CPU."""
    print(
        "\nMAC-based vs latency-based rank selection (asym, "
        "4x; VGG-16 full width, 224x224, batch 1, this CPU)"
    )
    comparison = selection.latency_comparison(
        prepared["net"],
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
    return comparison


def resnet_section(options: SolverBenchmarkOptions, folder: str) -> dict:
    """The four methods on the trained small ResNet, with intervals; prints its table."""
    config = resnet_quality.ResNetSweepConfig(seed=options.seed)
    if options.quick:
        config.train_images, config.test_images, config.train_steps = 4000, 1000, 600
        config.calibration_images = 200
    if options.speedups:
        config.speedups = tuple(options.speedups)
    prepared = resnet_quality.prepare(config, cache_folder=folder)
    info = prepared["info"]
    print(
        f"\nsmall ResNet (torchvision BasicBlock x 2 per stage, widths {config.width}-"
        f"{8 * config.width}, batch norms folded before solving; {config.size}x{config.size}), "
        f"{'trained' if prepared['trained'] else 'loaded'}; training took "
        f"{info['train_seconds']:.0f}s, running train accuracy {100 * info['train_accuracy']:.1f}%"
    )
    sweep = resnet_quality.run_sweep(config, prepared, on_record=print_resnet_record)
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
    plots.plot_resnet_sweep(sweep, png, title=title + ", 95% bootstrap intervals")
    print(f"wrote {png}")
    return {"config": json_safe(vars(config)), "network": info, "png": png, **sweep}


def write_record(record: dict, folder: str, sections: set, quick: bool) -> str:
    """``benchmark_solver.json`` (with the sections in its name unless they are the default)."""
    default = set(QUICK_SECTIONS) if quick else set(SECTIONS)
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
    return path


def print_record(record: dict) -> None:
    """One line per run of the small VGG-16 sweep."""
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


def print_resnet_record(record: dict) -> None:
    """One line per run of the small ResNet sweep."""
    if "impossible" in record:
        print(f"  {record['method']:9s} {record['speedup']:g}x: impossible", flush=True)
    else:
        print(
            f"  {record['method']:9s} {record['speedup']:g}x: error {record['error']:.4f}  "
            f"top-1 {100 * record['accuracy']:.1f}%  {record['seconds']:.1f}s", flush=True
        )  # fmt: skip


def machine() -> dict:
    """The CPU and the torch version."""
    from ..utils.timing import device_name

    return {"cpu": device_name("cpu"), "torch": torch.__version__}
