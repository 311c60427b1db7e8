"""The demo's report: ``report.md`` (the AP50-vs-speedup table, how it was made, per-layer
plans, time), ``mAP_vs_speedup.png`` and ``results.json``."""

from __future__ import annotations

import os
from typing import Dict, List, Sequence, Tuple

from ...data.synthetic.voc import STAMP_FILE
from ...detection.proposals import proposal_stats
from ...plan import Plan
from ...utils.io import atomic_write_json, load_json_object
from ..plots import plan_table
from ..report import add_intervals, comparison_text, plot_map_vs_speedup, report_rows, write_report
from .int8 import int8_section
from .latency import FULL_WIDTH_INPUT
from .options import DemoOptions


def mean_rois(records: Sequence[dict]) -> int:
    """RoIs per image the whole-detector plans were made for."""
    for record in records[1:]:
        plan = Plan.read(record["plan"])
        if plan.get("rois_per_image"):
            return int(plan["rois_per_image"])
    return 0


def comparisons(records: Sequence[dict]) -> List[Tuple[str, str, str]]:
    """The demo's paired comparisons, ``(model, against, what)``: each whole-detector model
    against the conv-only model of the same nominal speedup, and each conv-only model against the
    cheapest-looking whole-detector model that is at least as cheap as a whole detector (the same
    whole-detector cost or less); the data-driven fc6/fc7 against truncated SVD at the same ranks;
    every accelerated model against the baseline."""
    by_name = {r["name"]: r for r in records}
    conv = [r for r in records[1:] if (r.get("stage") or {}).get("target") == "conv"]
    whole = [r for r in records[1:] if (r.get("stage") or {}).get("target") == "network"]
    pairs = []
    for w in whole:
        same = next((c for c in conv if c["stage"]["speedup"] == w["stage"]["speedup"]), None)
        if same is not None:
            pairs.append((w["name"], same["name"], "whole detector against conv layers only, "
                          "same nominal speedup"))  # fmt: skip
    for c in conv:
        cost = c.get("theoretical_speedup_detector") or 0
        cheaper = [w for w in whole if (w.get("theoretical_speedup_detector") or 0) >= cost]
        if cheaper:
            w = min(cheaper, key=lambda r: r["theoretical_speedup_detector"])
            pairs.append((w["name"], c["name"], "whole detector against conv layers only, at the "
                          "same whole-detector cost or less"))  # fmt: skip
    if "fc_asym" in by_name and "fc_svd" in by_name:
        pairs.append(("fc_asym", "fc_svd", "data-driven fc6/fc7 against truncated SVD, same ranks"))
    base = records[0]["name"]
    pairs += [(r["name"], base, "accelerated against the baseline") for r in records[1:]]
    first = {}
    for a, b, what in pairs:  # a pair made twice is stated once, under its first reason
        first.setdefault((a, b), what)
    return [(a, b, what) for (a, b), what in first.items()]


def comparison_section(records: Sequence[dict], found: Sequence[dict], pairs) -> str:
    """The comparisons as Markdown: one line each, the paired ΔAP50 and its 95 % interval, "no
    measurable difference" where the interval holds 0."""
    what = {(a, b): text for a, b, text in pairs}
    lines, last = [], None
    for c in found:
        heading = what[(c["model"], c["against"])]
        if heading != last:
            lines += ["", f"*{heading}*:", ""]
            last = heading
        speed = _costs(records, c["model"], c["against"])
        lines.append(f"- {comparison_text(c)}{speed}")
    images = found[0]["images"] if found else 0
    resamples = found[0]["resamples"] if found else 0
    return (
        "### Comparisons (paired on the same test images)\n\n"
        f"ΔAP50 = AP50 of the first model minus the second's on the {images} test images, with "
        f"the 95 % percentile interval of a paired bootstrap over test images ({resamples} "
        "resamples, seed 0): both models are scored on the same resampled images. An interval "
        "that holds 0 is reported as no measurable difference on this test set.\n"
        + "\n".join(lines)
    )


def _costs(records: Sequence[dict], a: str, b: str) -> str:
    by_name = {r["name"]: r for r in records}
    ta = by_name[a].get("theoretical_speedup_detector") or 1.0
    tb = by_name[b].get("theoretical_speedup_detector") or 1.0
    return f"; theoretical whole-detector speedups {ta:.2f}× and {tb:.2f}×"


def write_demo_report(
    out: str,
    records: Sequence[dict],
    options: DemoOptions,
    cfg,
    timings: Dict[str, float],
    data_dir: str,
) -> dict:
    """report.md, mAP_vs_speedup.png and results.json in ``out``; returns the summary."""
    pairs = comparisons(records)
    found = add_intervals(records, [(a, b) for a, b, _ in pairs])
    rows = report_rows(records)
    png = os.path.join(out, "mAP_vs_speedup.png")
    plot_map_vs_speedup(
        rows, png, title="Fast R-CNN, narrow VGG-16, SYNTHETIC data: AP50 vs speedup"
    )
    lat = records[0]["latency"]
    pre = records[0].get("pretrain") or {"iterations": 0, "held_out_accuracy": float("nan")}
    stamp = load_json_object(os.path.join(data_dir, STAMP_FILE), "synthetic data stamp")
    mean_boxes = proposal_stats(os.path.join(data_dir, "proposals", "selective_search_test.pkl"))[
        "mean_boxes"
    ]
    notes = [
        "**The data is synthetic** (shapes on cluttered backgrounds, made by "
        "`accel_det.data.synthetic.voc`), **not PASCAL VOC**: these numbers show the pipeline "
        "working end to end, not the paper's VOC results (Table 9: 66.9 mAP baseline; 66.9 / 66.1 "
        "/ 65.2 at 3× / 4× / 5×).",
        f"Data: {stamp['num_trainval']} trainval / {stamp['num_test']} test images, "
        f"{len(stamp['classes'])} classes ({', '.join(stamp['classes'])}), height "
        f"{stamp['image_size']} px, at most {stamp['max_objects']} objects per image; "
        f"selective-search proposals (OpenCV, fast mode; {mean_boxes:.0f} boxes per test image on "
        f"average).",
        f"Detector: Fast R-CNN (Detectron2, `{options.config}`), VGG-16 at width "
        f"{cfg.MODEL.VGG.WIDTH:g} (conv1_1 {max(1, round(64 * cfg.MODEL.VGG.WIDTH))} … conv5_3 "
        f"{max(1, round(512 * cfg.MODEL.VGG.WIDTH))} filters), fc6/fc7 "
        f"{cfg.MODEL.ROI_BOX_HEAD.FC_DIM}, conv1_x/conv2_x frozen (FREEZE_AT "
        f"{cfg.MODEL.BACKBONE.FREEZE_AT}), trained for {records[0]['iterations']} iterations of "
        f"{cfg.SOLVER.IMS_PER_BATCH} images.",
        f"Pre-training (the demo's stand-in for ImageNet, which is not available here): the convs "
        f"trained as a classifier of object and background crops of the training images "
        f"({pre['iterations']} iterations of 32 crops, batch norms folded afterwards; held-out "
        f"crop accuracy {pre['held_out_accuracy']:.1%}), converted like ImageNet weights "
        f"(`vgg16_to_detectron2`).",
        f"Compression (`accel_det.workflows.detector_compression.compress_detector`, what "
        f"`tools/compress_detector.py` runs): {options.method}, rank selection, conv1_1 kept, on "
        f"{options.compress_images} training images preprocessed as the detector's input, "
        f"{options.samples_per_image} sampled conv responses and {options.fc_samples_per_image} "
        f"RoIs (fc6/fc7 responses) per image; then fine-tuned for "
        f"{records[1]['iterations'] if len(records) > 1 else 0} iterations "
        f"(`{options.accel_config}`). Rows `{options.method}_*`: the conv layers alone, at the "
        "paper's conv-layer speedup; `detector_*`: conv layers and fc6/fc7 under one budget for "
        f"the whole detector at the test size and {mean_rois(records)} RoIs per image (the mean "
        "number of test proposals); `fc_svd` / `fc_asym`: fc6/fc7 alone at Fast R-CNN's ranks "
        "(1024 and 256 of 4096, scaled to the demo's fc width), by Girshick's truncated SVD of "
        "the weights and by the data-driven asymmetric solver.",
        "AP50: `PascalVOCDetectionEvaluator`'s metric (VOC07 11-point, difficult boxes ignored; "
        "`accel_det.detection.evaluator`, which also keeps each image's detections), with its 95 % "
        "interval from a bootstrap over test images (1000 resamples, seed 0); ΔAP50 against the "
        "baseline is paired: both models on the same resampled images (`accel_det.evaluation`). "
        f"Seeds: data, pre-training and compression {options.seed}, baseline training "
        f"{options.seeds()['train']}, fine-tuning {options.seeds()['finetune']}.",
        f"Latency: `torch.inference_mode`, {lat['threads']} thread(s), {options.latency_warmup} "
        f"warm-up + {options.latency_repeats} timed runs per model, interleaved across models, "
        f"median; input {lat['input_hw'][0]}×{lat['input_hw'][1]}, {lat['proposals']} proposals "
        f"(selective search itself not timed); {lat['machine']['processor']}, "
        f"{lat['machine']['cpu_count']} CPUs, torch {lat['machine']['torch']}.",
        "Theoretical speedup (conv): multiply-adds of all conv layers (the paper's definition); "
        "(detector): all multiply-adds of the detector for one test image (convs, fc6, fc7, box "
        "predictor); actual speedup: baseline median time / model median time.",
        f"Full-width column: the same structures on a VGG-16 of width 1 (every channel count and "
        f"rank d', d'' scaled by {1 / cfg.MODEL.VGG.WIDTH:g}; random weights, timing only), one "
        f"{FULL_WIDTH_INPUT[0]}×{FULL_WIDTH_INPUT[1]} view in channels_last, same thread count, "
        f"{options.full_width_repeats} timed runs each. At the demo's width the convs have 8-64 "
        f"channels and are bound by memory traffic and per-layer overhead, not by multiply-adds, "
        f"so splitting each into three thinner convs gains little there; the paper's actual "
        f"speedups are for the full width.",
    ]
    sections = ["![AP50 vs speedup](mAP_vs_speedup.png)"]
    if found:
        sections.append(comparison_section(records, found, pairs))
    if int8_section(records):
        sections.append(int8_section(records))
    sections += [
        f"### Plan of {r['name']}\n\n```\n{plan_table(Plan.read(r['plan']))}\n```"
        for r in records[1:]
    ]
    work = [
        f"- pre-training on crops: {pre.get('seconds', 0):.0f} s",
        f"- baseline training and evaluation: {records[0].get('train_seconds', 0):.0f} s",
    ]
    work += [
        f"- {r['name']}: compression {r.get('compress_seconds', 0):.0f} s, fine-tuning and "
        f"evaluation {r.get('train_seconds', 0):.0f} s"
        for r in records[1:]
    ]
    sections.append(
        "### Time\n\nThis run, wall clock per stage (a stage finished by an earlier run with the "
        "same settings is reused and counts only its check):\n\n"
        + "\n".join(f"- {k}: {v:.0f} s" for k, v in timings.items())
        + "\n\nCompute time of each stage when it ran:\n\n"
        + "\n".join(work)
    )
    sections.append(
        "### Reproduce a stage\n\n```\n"
        f"tools/train_net.py --config {records[0]['config']}\n"
        + "\n".join(
            f"tools/train_net.py --config {r['config']} --eval-only MODEL.WEIGHTS {r['weights']}"
            for r in records[1:]
        )
        + "\n```"
    )
    report_path = os.path.join(out, "report.md")
    write_report(
        report_path,
        rows,
        title="accel-det demo: Fast R-CNN AP50 vs speedup (synthetic data)",
        notes=notes,
        sections=sections,
    )
    summary = {
        "rows": rows,
        "comparisons": [
            dict(c, what=w)
            for c in found
            for a, b, w in pairs
            if (a, b) == (c["model"], c["against"])
        ],  # fmt: skip
        "records": list(records),
        "timings": timings,
        "report": report_path,
        "plot": png,
        "synthetic_data": True,
        "options": options.record(),
    }
    atomic_write_json(summary, os.path.join(out, "results.json"))
    return summary
