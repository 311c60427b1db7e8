"""The demo's int8 rows: the baseline and the fastest whole-detector model exported at int8 (ONNX
Runtime's static QDQ quantization, calibrated on a seeded draw of training images with their
proposals), evaluated on the test set (AP50 with its interval, ΔAP50 paired against the same
model's float32 export and against the float32 baseline) and timed against the float32 exports
in ONNX Runtime and OpenVINO, interleaved."""

from __future__ import annotations

import logging
import os
from typing import Dict, List, Mapping, Sequence

from ...deploy.agreement import Bounds
from ...deploy.runtime import load_runtime
from ...errors import AccelDetError
from ...evaluation.ap import read_records, records_path
from ...evaluation.bootstrap import Interval, ap50_with_interval, paired_delta
from ...utils.timing import measure_many
from .deployed import FOLDER, export_detector, exported_ap50

logger = logging.getLogger("accel_det.demo")

# A small detector trained briefly scores less sharply than a large one: its int8 scores may move
# by a few hundredths where the classes are close. The AP50 rows say what that costs.
DEMO_BOUNDS = Bounds(min_top_class=0.9, max_score_difference=0.1, max_box_difference=4.0)
FORMS = (
    ("onnxruntime", "fp32"),
    ("onnxruntime", "int8"),
    ("openvino", "fp32"),
    ("openvino", "int8"),
)


def int8_names(records: Sequence[dict]) -> List[str]:
    """The baseline and the whole-detector model of the highest theoretical speedup."""
    detectors = [r for r in records[1:] if r.get("stage", {}).get("target") == "network"]
    names = [records[0]["name"]]
    if detectors:
        names.append(max(detectors, key=lambda r: r["theoretical_speedup_detector"])["name"])
    return names


def int8_quality(record: dict, baseline: dict, cfg, model) -> dict:
    """Export ``model`` at int8 and evaluate it: AP50 [interval], ΔAP50 against its float32
    export and against the float32 baseline (paired on the test images)."""
    folder = record["output_dir"]
    path = export_detector(cfg, model, folder, "int8", bounds=DEMO_BOUNDS)
    exported_ap50(cfg, path, folder)
    int8 = read_records(records_path(os.path.join(folder, FOLDER, "eval_results.int8.json")))
    fp32 = read_records(records_path(os.path.join(folder, FOLDER, "eval_results.json")))
    base = read_records(baseline["detections"])
    return {
        "path": path,
        "ap50": ap50_with_interval(int8).as_dict(),
        "delta_vs_fp32": paired_delta(int8, fp32).as_dict(),
        "delta_vs_baseline": paired_delta(int8, base).as_dict(),
    }


def int8_latency(paths: Mapping[str, Dict[str, str]], item: dict, options) -> Dict[str, dict]:
    """Median latency of every (runtime, precision) form of each model, interleaved."""
    image = item["image"].float().numpy()
    proposals = item["proposals"].proposal_boxes.tensor.float().numpy()
    calls = {}
    for name, by_precision in paths.items():
        for runtime, precision in FORMS:
            run = load_runtime(by_precision[precision], runtime, options.latency_threads)
            calls[f"{name}|{runtime} {precision}"] = lambda r=run: r(image, proposals)
    timed = measure_many(
        calls, warmup=options.latency_warmup, repeats=options.latency_repeats,
        threads=options.latency_threads,
    )  # fmt: skip
    result: Dict[str, dict] = {name: {} for name in paths}
    for key, summary in timed.items():
        name, form = key.split("|")
        result[name][form] = summary["median_ms"]
    return result


def measure_int8(
    records: Sequence[dict], models: Mapping[str, tuple], exported: Mapping[str, str], item, options
) -> None:
    """Set ``record["int8"]`` of the baseline and the fastest whole-detector model (or the line
    that says why an export was refused)."""
    paths = {}
    for name in int8_names(records):
        record = next(r for r in records if r["name"] == name)
        cfg, model, _ = models[name]
        try:
            record["int8"] = int8_quality(record, records[0], cfg, model)
        except AccelDetError as error:
            logger.warning("%s: no int8 row: %s", name, error)
            record["int8"] = {"refused": str(error)}
            continue
        paths[name] = {"fp32": exported[name], "int8": record["int8"]["path"]}
    if not paths:
        return
    latency = int8_latency(paths, item, options)
    base = latency.get(records[0]["name"])  # the baseline's fastest float32 form: the reference
    reference = min(base[f"{r} fp32"] for r in ("onnxruntime", "openvino")) if base else None
    for name, forms in latency.items():
        record = next(r for r in records if r["name"] == name)
        record["int8"]["latency_ms"] = forms
        if reference:
            record["int8"]["speedup_vs_baseline_fp32"] = {
                f: reference / ms for f, ms in forms.items()
            }


def int8_section(records: Sequence[dict]) -> str:
    """The int8 rows as Markdown (empty when no model has them)."""
    rows = [r for r in records if "int8" in r]
    if not rows:
        return ""
    lines = [
        "### int8 (ONNX Runtime static quantization, QDQ)",
        "",
        "Weights int8 per output channel, activations uint8, ranges from 16 training images and "
        "their proposals (seeded draw); the same ONNX file timed in ONNX Runtime and OpenVINO. "
        "ΔAP50 paired on the test images; speedups against the baseline's fastest float32 export.",
        "",
        "| model | AP50 int8 | Δ vs its float32 | Δ vs float32 baseline "
        "| ORT fp32 / int8 ms | OpenVINO fp32 / int8 ms | best int8 speedup |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        q = r["int8"]
        if "refused" in q:
            lines.append(f"| {r['name']} | refused: {q['refused']} | | | | | |")
            continue
        ms, speedup = q.get("latency_ms", {}), q.get("speedup_vs_baseline_fp32", {})
        best = max((v for k, v in speedup.items() if k.endswith("int8")), default=None)
        lines.append(
            f"| {r['name']} | {Interval.from_dict(q['ap50'])} "
            f"| {Interval.from_dict(q['delta_vs_fp32']).delta_text()} "
            f"| {Interval.from_dict(q['delta_vs_baseline']).delta_text()} "
            f"| {_pair(ms, 'onnxruntime')} | {_pair(ms, 'openvino')} "
            f"| {f'{best:.2f}×' if best else 'n/a'} |"
        )
    return "\n".join(lines)


def _pair(ms: Mapping[str, float], runtime: str) -> str:
    fp32, int8 = ms.get(f"{runtime} fp32"), ms.get(f"{runtime} int8")
    return f"{fp32:.0f} / {int8:.0f}" if fp32 and int8 else "n/a"
