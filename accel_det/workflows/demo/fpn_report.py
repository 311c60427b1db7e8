"""The ResNet-FPN demo's report (:mod:`.fpn`): ``report.md`` with AP50 and paired ΔAP50, each with
its interval, before and after fine-tuning, the targets met or not, ``mAP_vs_speedup.png`` and
``results.json``."""

from __future__ import annotations

import os
from typing import Dict, List, Sequence, Tuple

from ...data.synthetic.voc import STAMP_FILE
from ...evaluation import Interval
from ...plan import Plan
from ...utils.io import atomic_write_json, load_json_object
from ..plots import plan_table
from ..report import add_intervals, plot_map_vs_speedup, report_rows, write_report
from .options import DemoOptions
from .report import comparison_section

# The demo's targets at 2x (printed, not asserted): (when, points, whether an interval holding 0
# also meets it). "Within p points": the paired interval's lower end is at least -p.
TARGET_SPEEDUP = 2.0
TARGETS = (("before", 1.5, True), ("after", 1.0, False))


def before_name(name: str) -> str:
    """``detector_2x`` → ``detector_before_ft_2x`` (a family of its own in the plot)."""
    head, _, tail = name.rpartition("_")
    return f"{head}_before_ft_{tail}"


def before_records(records: Sequence[dict]) -> List[dict]:
    """A record per accelerated model as it was before fine-tuning: its AP50 and detections then,
    its architecture's latency (fine-tuning changes weights only)."""
    keep = ("theoretical_speedup", "theoretical_speedup_detector", "plan", "latency", "stage")
    return [
        dict({k: r[k] for k in keep if k in r}, name=before_name(r["name"]),
             ap50=r["ap50_before_ft"], detections=r.get("detections_before_ft"),
             output_dir=r["output_dir"])
        for r in records[1:]
    ]  # fmt: skip


def pairs(records: Sequence[dict]) -> List[Tuple[str, str, str]]:
    """Every model before and after fine-tuning against the baseline, and after against before."""
    base = records[0]["name"]
    found = [(before_name(r["name"]), base, "compressed, before fine-tuning, against the baseline")
             for r in records[1:]]  # fmt: skip
    found += [(r["name"], base, "after fine-tuning against the baseline") for r in records[1:]]
    found += [(r["name"], before_name(r["name"]), "fine-tuning: after against before")
              for r in records[1:]]  # fmt: skip
    return found


def target_checks(records: Sequence[dict]) -> List[dict]:
    """The targets of :data:`TARGETS` for the whole-detector model at :data:`TARGET_SPEEDUP`:
    each with its paired ΔAP50 interval and whether it is met."""
    model = next((r for r in records[1:] if (r.get("stage") or {}).get("target") == "network"
                  and r["stage"]["speedup"] == TARGET_SPEEDUP), None)  # fmt: skip
    if model is None:
        return []
    by_name = {r["name"]: r for r in records}
    checks = []
    for when, points, zero in TARGETS:
        name = before_name(model["name"]) if when == "before" else model["name"]
        delta = Interval.from_dict(by_name[name].get("delta_ap50_interval"))
        rule = f"interval {'holds 0 or ' if zero else ''}lies above −{points:g} points"
        met = None if delta is None else (zero and delta.holds_zero) or delta.low >= -points
        checks.append({"model": name, "when": f"{when} fine-tuning", "rule": rule, "met": met,
                       "delta": None if delta is None else delta.as_dict()})  # fmt: skip
    return checks


def target_text(check: dict) -> str:
    """``detector_2x, after fine-tuning: Δ −0.4 [−1.1, +0.3]; target (...): met``."""
    delta = Interval.from_dict(check["delta"])
    verdict = {True: "met", False: "NOT met", None: "not measured"}[check["met"]]
    value = delta.delta_text() if delta else "no interval"
    return f"{check['model']}, {check['when']}: {value}; target ({check['rule']}): {verdict}"


def notes(records: Sequence[dict], options: DemoOptions, cfg, data_dir: str) -> List[str]:
    stamp = load_json_object(os.path.join(data_dir, STAMP_FILE), "synthetic data stamp")
    lat = records[0].get("latency") or {}
    machine = lat.get("machine") or {}
    pre = records[0].get("pretrain")
    start = "from random weights" if not pre else (
        f"from the ResNet pre-trained as a classifier of object and background crops (the VGG "
        f"demo's stand-in for ImageNet: {pre['iterations']} iterations of 32 crops, held-out "
        f"crop accuracy {pre['held_out_accuracy']:.1%})"
    )  # fmt: skip
    r = cfg.MODEL.RESNETS
    return [
        "**The data is synthetic** (shapes on cluttered backgrounds, `accel_det.data.synthetic."
        "voc`), **not PASCAL VOC**: the numbers show the pipeline working end to end.",
        f"Data: {stamp['num_trainval']} trainval / {stamp['num_test']} test images, "
        f"{len(stamp['classes'])} classes, height {stamp['image_size']} px (the VGG demo's set).",
        f"Detector: Faster R-CNN (Detectron2, `{options.config}`), ResNet-{r.DEPTH} ({r.NORM} "
        f"batch norms) with FPN levels {', '.join(cfg.MODEL.FPN.IN_FEATURES)} of "
        f"{cfg.MODEL.FPN.OUT_CHANNELS} channels, box head fcs of {cfg.MODEL.ROI_BOX_HEAD.FC_DIM}, "
        f"trained {start} for {records[0]['iterations']} iterations of "
        f"{cfg.SOLVER.IMS_PER_BATCH} images; batch norms folded into the convs for compression "
        "and timing.",
        f"Compression (`compress_detector`, what `tools/compress_detector.py` runs, its default "
        f"target): {options.method}, rank selection under one budget, on {options.compress_images} "
        f"training images, {options.samples_per_image} sampled responses per image and layer; "
        f"then fine-tuned for {records[1]['iterations'] if len(records) > 1 else 0} iterations "
        f"(`{options.accel_config}`). Rows `*_before_ft_*`: the compressed models before "
        "fine-tuning.",
        "AP50: VOC07 11-point (`PascalVOCDetectionEvaluator`), its 95 % interval from a bootstrap "
        "over test images (1000 resamples, seed 0); ΔAP50 paired against the baseline on the "
        f"same resampled images. Seeds: data and compression {options.seed}, baseline training "
        f"{options.seeds()['train']}, fine-tuning {options.seeds()['finetune']}.",
        f"Latency: eager PyTorch, `torch.inference_mode`, {lat.get('threads')} thread(s), "
        f"{options.latency_warmup} warm-up + {options.latency_repeats} timed runs per model, "
        f"interleaved, median; the whole detector (RPN included) on a "
        f"{'×'.join(map(str, lat.get('input_hw', [])))} test image; "
        f"{machine.get('processor')}, {machine.get('cpu_count')} CPUs. The baseline is timed with "
        "its batch norms folded (its features differ from the trained one's by at most "
        f"{records[0].get('folded_max_difference', float('nan')):.1e} of their largest value).",
        "Theoretical speedup (conv): multiply-adds of the plan's conv layers (backbone, FPN, RPN "
        "head conv); (detector): of the whole detector at the test size and the RPN's test "
        "proposal count (what the budget counts); actual: baseline median time / model median "
        "time.",
    ]


def write_fpn_report(
    out: str,
    records: Sequence[dict],
    options: DemoOptions,
    cfg,
    timings: Dict[str, float],
    data_dir: str,
) -> dict:
    """report.md, mAP_vs_speedup.png and results.json in ``out``; returns the summary."""
    compared = pairs(records)
    everything = list(records) + before_records(records)
    found = add_intervals(everything, [(a, b) for a, b, _ in compared])
    rows = report_rows(everything)
    png = os.path.join(out, "mAP_vs_speedup.png")
    plot_map_vs_speedup(rows, png, title="Faster R-CNN, ResNet-18-FPN, SYNTHETIC data")
    checks = target_checks(everything)
    sections = ["![AP50 vs speedup](mAP_vs_speedup.png)"]
    if found:
        sections.append(comparison_section(everything, found, compared))
    if checks:
        sections.append(f"### Targets at {TARGET_SPEEDUP:g}× (printed, not asserted)\n\n"
                        + "\n".join(f"- {target_text(c)}" for c in checks))  # fmt: skip
    sections += [f"### Plan of {r['name']}\n\n```\n{plan_table(Plan.read(r['plan']))}\n```"
                 for r in records[1:]]  # fmt: skip
    work = [
        f"- pre-training on crops: {(records[0].get('pretrain') or {}).get('seconds', 0):.0f} s",
        f"- baseline training and evaluation: {records[0].get('train_seconds', 0):.0f} s",
    ]
    work += [
        f"- {r['name']}: compression and evaluation {r.get('compress_seconds', 0):.0f} s, "
        f"fine-tuning and evaluation {r.get('train_seconds', 0):.0f} s"
        for r in records[1:]
    ]
    sections.append(
        "### Time\n\nThis run, wall clock per stage (a stage finished earlier is reused):\n\n"
        + "\n".join(f"- {k}: {v:.0f} s" for k, v in timings.items())
        + "\n\nCompute time of each stage when it ran:\n\n" + "\n".join(work)
    )  # fmt: skip
    report_path = os.path.join(out, "report.md")
    write_report(report_path, rows, notes=notes(records, options, cfg, data_dir),
                 title="accel-det demo: Faster R-CNN ResNet-18-FPN, AP50 vs speedup (synthetic "
                 "data)", sections=sections)  # fmt: skip
    what = {(a, b): w for a, b, w in compared}
    summary = {
        "rows": rows,
        "comparisons": [dict(c, what=what[(c["model"], c["against"])]) for c in found],
        "targets": checks,
        "records": list(records),
        "timings": timings,
        "report": report_path,
        "plot": png,
        "synthetic_data": True,
        "options": options.record(),
    }
    atomic_write_json(summary, os.path.join(out, "results.json"))
    return summary
