#!/usr/bin/env python3
"""The mAP-vs-speedup report of several Detectron2 runs: a Markdown table and a PNG plot, by the
same code as the demo's report (``accel_det.workflows.report``).

Each run folder is a ``tools/train_net.py`` OUTPUT_DIR (``eval_results.json``, ``config.yaml``
whose ``MODEL.ACCEL.PLAN`` names the plan; optional ``eval_before_ft.json``, ``speed.json``) or a
demo stage (``result.json``). The run without a plan is the baseline. Latencies come from each
folder's ``speed.json`` or from a ``tools/benchmark_speed.py`` JSON (``--speed``), matched to the
runs by their plans' architecture (time the runs' plans with ``benchmark_speed.py --plan``):

    python tools/benchmark_speed.py --plan output/vgg16_3x_ft/model_final.json \\
        --plan output/vgg16_4x_ft/model_final.json --cases backbone:600x1000:1 detector:600x1000:1
    python tools/report.py output/vgg16_voc output/accel_vgg16_voc_3x output/accel_vgg16_voc \\
        --speed output/benchmark_speed/benchmark_speed.json --output output/report

A folder without ``eval_results.json`` is refused: ``tools/train_net.py`` removes the file of an
earlier run when a run starts, so a rerun that crashed is not reported with the earlier numbers.
"""

from __future__ import annotations

import argparse
import os
import sys

import bootstrap  # noqa: F401  (accel_det from this checkout, in its .venv)

from accel_det.benchmarks.speed import SPEED_FORMAT
from accel_det.errors import AccelDetError
from accel_det.utils.cli import POSITIVE_INT, add_common_arguments, run_tool
from accel_det.utils.io import atomic_write_json, check_writable_folder, load_json
from accel_det.workflows import report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN[=NAME]",
        help="run folders (train_net OUTPUT_DIR or demo stage); '=NAME' renames the row",
    )
    parser.add_argument(
        "--speed", metavar="JSON", help="a tools/benchmark_speed.py JSON to take latencies from"
    )
    parser.add_argument(
        "--speed-input",
        metavar="HxW",
        help="which timed input size to report (default: the largest timed at batch 1)",
    )
    parser.add_argument(
        "--speed-batch",
        type=POSITIVE_INT,
        default=1,
        help="which timed batch size to report (default 1)",
    )
    parser.add_argument(
        "--output",
        default="output/report",
        help="folder for report.md, mAP_vs_speedup.png, records.json",
    )
    parser.add_argument("--title", default="Fast R-CNN with accelerated VGG-16: AP50 vs speedup")
    return add_common_arguments(parser)


def main(args: argparse.Namespace) -> int:
    records = []
    unnamed = [item for item in args.runs if "=" not in item]
    defaults = dict(zip(unnamed, report.distinct_names(unnamed)))
    for item in args.runs:
        folder, _, name = item.partition("=")
        record = report.record_from_run(folder, name=name or None)
        if not name and record.get("output_dir"):  # named after its folder: tell them apart
            record["name"] = defaults[item]
        records.append(record)
    names = [r.get("name") for r in records]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise AccelDetError(
            f"two runs are named {twice!r}: name them apart with RUN=NAME (or give a folder once)"
        )
    notes = []
    if args.speed:
        speed = load_json(args.speed, "speed JSON")
        if not isinstance(speed, dict) or speed.get("format") != SPEED_FORMAT:
            raise AccelDetError(
                f"{args.speed} is not a tools/benchmark_speed.py JSON (format {SPEED_FORMAT})"
            )
        input_hw = None
        if args.speed_input:
            try:
                h, _, w = args.speed_input.partition("x")
                input_hw = [int(h), int(w or h)]
            except ValueError:
                raise AccelDetError(
                    f"--speed-input {args.speed_input!r}: expected HxW, e.g. 600x1000"
                ) from None
        try:
            missing = report.attach_speed(records, speed, input_hw=input_hw, batch=args.speed_batch)
        except AccelDetError as error:
            raise AccelDetError(f"{args.speed}: {error}") from None
        for line in missing:
            print(f"warning: {line}", file=sys.stderr)
        timed = next((r["latency"] for r in records if r.get("latency")), None)
        if timed:
            notes.append(
                f"Latency: `{speed.get('command', 'tools/benchmark_speed.py')}` on "
                f"{speed.get('device')}, {speed.get('threads')} thread(s), input "
                f"{timed['input_hw'][0]}x{timed['input_hw'][1]}, batch {timed['batch']}; random "
                f"weights with each run's architecture (speed does not depend on the weights); "
                f"actual speedup = baseline median / model median."
            )
    comparisons = add_intervals(records, notes)
    rows = report.report_rows(records)
    folder = check_writable_folder(args.output)
    png = os.path.join(folder, "mAP_vs_speedup.png")
    report.plot_map_vs_speedup(rows, png, title=args.title)
    notes.append(
        "Theoretical speedup (conv): multiply-adds of all conv layers (the paper's definition), "
        "from each run's plan."
    )
    if any(r.get("theoretical_speedup_detector") for r in records):
        notes.append(
            "Theoretical speedup (detector): all multiply-adds of one image at the plan's input "
            "size and RoIs per image (whole-detector plans of tools/compress_detector.py; – for a "
            "plan of the conv layers alone)."
        )
    path = os.path.join(folder, "report.md")
    report.write_report(
        path,
        rows,
        title=args.title,
        notes=notes,
        sections=["![AP50 vs speedup](mAP_vs_speedup.png)"],
    )
    atomic_write_json({"records": records, "rows": rows}, os.path.join(folder, "records.json"))
    print(report.results_table(rows))
    for comparison in comparisons:
        print(report.comparison_text(comparison))
    print(f"\nwrote {path}, {png} and records.json")
    return 0


def add_intervals(records, notes) -> list:
    """AP50 intervals and paired ΔAP50 against the baseline of the runs with per-image detections
    (:func:`report.add_intervals`), with a note saying how; returns the comparisons."""
    report.add_intervals(records)
    base = next(r["name"] for r in report.report_rows(records) if r["baseline"])
    comparisons = [
        dict(r["delta_ap50_interval"], model=r["name"], against=base)
        for r in records
        if r.get("delta_ap50_interval")
    ]
    if comparisons:
        notes.append(
            "AP50 [95 % interval]: bootstrap over test images (1000 resamples, seed 0) from each "
            "run's per-image detections (`eval_results.detections.npz`); ΔAP50 against the "
            "baseline is paired, both runs on the same resampled images."
        )
    return comparisons


if __name__ == "__main__":
    sys.exit(run_tool(main, build_parser()))
