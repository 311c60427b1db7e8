"""How much the demo's AP50 moves with the seed of training: the accelerated models fine-tuned
again with other seeds (and the baseline trained again with other seeds), everything else (data,
pre-training, the baseline, the compressed models) reused from the demo's output folder.

The spread over seeds is the part of a difference between two rows that a bootstrap over test
images does not see (it holds the models fixed): a comparison survives another machine only when
it is larger than both.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import statistics
from typing import Dict, List, Sequence

from ...errors import AccelDetError
from ...utils.io import atomic_write_json, atomic_write_text
from ...utils.tables import markdown_table
from ..report import add_intervals, interval
from .options import DemoOptions
from .stages import DemoRun

logger = logging.getLogger("accel_det.demo")


def trained_models(options: DemoOptions) -> List[dict]:
    """The demo's baseline and accelerated models with ``options``' seeds (stages reused when
    done; no latency, export or report), with AP50 intervals and paired ΔAP50."""
    run = DemoRun(options)
    run.make_data()
    baseline = run.train(run.pretrain())
    records = [baseline] + [run.accelerate(stage, baseline) for stage in run.stages()]
    add_intervals(records)
    return records


def baseline_model(options: DemoOptions) -> dict:
    """The demo's baseline trained with ``options``' training seed, with its AP50 interval."""
    run = DemoRun(options)
    run.make_data()
    record = run.train(run.pretrain())
    add_intervals([record])
    return record


def seed_spread(
    options: DemoOptions, finetune_seeds: Sequence[int], train_seeds: Sequence[int] = ()
) -> dict:
    """AP50 and ΔAP50 of every demo model for each fine-tuning seed (``options.seed`` first), and
    the baseline's AP50 for each training seed; writes ``seeds.json`` and ``seeds.md`` in
    ``options.output``."""
    if options.model != "vgg16":
        raise AccelDetError(f"--seed-spread is the VGG demo's; --model {options.model} has none")
    runs: Dict[str, Dict[int, dict]] = {}
    seeds = list(dict.fromkeys([options.seeds()["finetune"], *finetune_seeds]))
    for seed in seeds:
        logger.info("fine-tuning seed %d", seed)
        for record in trained_models(dataclasses.replace(options, finetune_seed=seed)):
            runs.setdefault(record["name"], {})[seed] = _summary(record)
    baselines = {options.seeds()["train"]: runs.get("baseline", {}).get(seeds[0])}
    for seed in train_seeds:
        logger.info("baseline training seed %d", seed)
        baselines[seed] = _summary(baseline_model(dataclasses.replace(options, train_seed=seed)))
    result = {
        "finetune_seeds": seeds,
        "train_seeds": list(baselines),
        "models": runs,
        "baselines": baselines,
        "options": options.record(),
    }
    os.makedirs(options.output, exist_ok=True)
    atomic_write_json(result, os.path.join(options.output, "seeds.json"))
    atomic_write_text(seeds_markdown(result), os.path.join(options.output, "seeds.md"))
    return result


def _summary(record: dict) -> dict:
    return {
        "ap50": record["ap50"],
        "ap50_interval": record.get("ap50_interval"),
        "delta_ap50_interval": record.get("delta_ap50_interval"),
        "output_dir": record.get("output_dir"),
    }


def _spread(values: Sequence[float]) -> str:
    if len(values) < 2:
        return "–"
    return f"{max(values) - min(values):.1f} (sd {statistics.stdev(values):.1f})"


def seeds_markdown(result: dict) -> str:
    """The spread as Markdown: per model, AP50 and paired ΔAP50 for each fine-tuning seed, their
    range and standard deviation, next to the bootstrap interval's width; then the baseline's
    AP50 per training seed."""
    seeds = result["finetune_seeds"]
    header = ["model"] + [f"AP50, seed {s}" for s in seeds] + ["AP50 range (sd)"]
    header += [f"ΔAP50, seed {s}" for s in seeds] + ["ΔAP50 range (sd)", "Δ interval width"]
    body = []
    for name, by_seed in result["models"].items():
        runs = [by_seed.get(s) for s in seeds]
        ap = [r["ap50"] for r in runs if r]
        deltas = [interval(r["delta_ap50_interval"]) if r else None for r in runs]
        values = [d.value for d in deltas if d is not None]
        widths = [d.high - d.low for d in deltas if d is not None]
        body.append(
            [name]
            + [f"{r['ap50']:.1f}" if r else "–" for r in runs]
            + [_spread(ap)]
            + [d.delta_text()[2:] if d is not None else "–" for d in deltas]
            + [_spread(values), f"{statistics.mean(widths):.1f}" if widths else "–"]
        )
    baselines = [
        [str(seed), str(interval(r["ap50_interval"])) if r["ap50_interval"] else f"{r['ap50']:.1f}"]
        for seed, r in result["baselines"].items()
        if r
    ]
    return "\n".join(
        [
            "# The demo's AP50 over training seeds",
            "",
            "Fine-tuning seeds (the baseline and the compressed models fixed):",
            "",
            markdown_table(header, body),
            "",
            "The baseline over training seeds (data and pre-training fixed):",
            "",
            markdown_table(["training seed", "baseline AP50 [95 % interval]"], baselines),
            "",
        ]
    )
