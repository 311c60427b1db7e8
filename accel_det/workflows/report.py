"""The mAP-vs-speedup table (Markdown) and plot (PNG) from per-model result records.

A *record* is a plain dict (a ``result.json`` next to each model's outputs)::

    {"name": "asym3d 4x", "theoretical_speedup": 4.0,      # 1.0 for the baseline
     "ap50": 61.2, "ap50_before_ft": 48.0,                  # optional: after compression, before FT
     "latency": {"backbone": {"median_ms": ...}, "detector": {"median_ms": ...},   # any of PARTS
                 "backbone_full_width": {"median_ms": ...}, "threads": 1},
     "plan": "path/plan.json", "baseline": true}            # exactly one record is the baseline

:func:`report_rows` turns records into rows with actual speedups (baseline median / model median)
and ΔAP50; :func:`results_table` and :func:`plot_map_vs_speedup` render them. No detectron2 here.

Runs made with ``tools/train_net.py`` have no record: :func:`record_from_run` makes one from the
run's folder (``eval_results.json``, the plan named by ``config.yaml``'s ``MODEL.ACCEL.PLAN`` or a
``plan.json``), and :func:`attach_speed` adds latencies from a ``tools/benchmark_speed.py`` JSON,
matching each run's plan to the timed model with the same structures (:func:`plan_fingerprint`).
"""

from __future__ import annotations

import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import AccelDetError
from ..evaluation import Interval, ap50, bootstrap_ap50, interval_from_samples, read_records
from ..evaluation.ap import records_path
from ..evaluation.bootstrap import RESAMPLES, SEED, check_paired
from ..plan import Plan, linear_entries, plan_fingerprint
from ..utils.io import atomic_write_text, load_json, load_json_object
from ..utils.tables import markdown_table
from .map_plot import family, plot_map_vs_speedup  # noqa: F401  (the report's plot)

# latency entries a record may have (eager PyTorch, and ONNX Runtime when exported)
PARTS = (
    "backbone",
    "detector",
    "backbone_full_width",
    "detector_onnxruntime",
    "backbone_full_width_onnxruntime",
)
PART_LABELS = {
    "backbone": "backbone",
    "detector": "detector",
    "backbone_full_width": "full-width backbone",
    "detector_onnxruntime": "detector, ONNX Runtime",
    "backbone_full_width_onnxruntime": "full-width backbone, ONNX Runtime",
}


def load_records(paths: Sequence[str]) -> List[dict]:
    """Read result records (JSON files)."""
    missing = next((path for path in paths if not os.path.isfile(path)), None)
    if missing is not None:
        raise AccelDetError(f"cannot read result record {missing}: no such file")
    return [load_json(path, "result record") for path in paths]


def eval_ap50(results: Mapping) -> float:
    """AP50 of the first data set's ``bbox`` results in Detectron2's evaluation dict (as written to
    ``eval_results.json``: ``{dataset: {"bbox": {"AP50": ...}}}``, or ``{"bbox": ...}``)."""
    if isinstance(results, Mapping) and results and "bbox" not in results:
        results = results.get(next(iter(results)))
    if (
        not isinstance(results, Mapping)
        or not isinstance(results.get("bbox"), Mapping)
        or "AP50" not in results["bbox"]
    ):
        raise AccelDetError("the evaluation results hold no bbox AP50")
    return float(results["bbox"]["AP50"])


def _file_ap50(path: str) -> float:
    try:
        return eval_ap50(load_json(path, "evaluation"))
    except AccelDetError as error:
        raise AccelDetError(f"{path}: {error}") from None


def _plan_of_run(folder: str) -> Tuple[Optional[dict], Optional[str]]:
    """The plan of a run folder: ``MODEL.ACCEL.PLAN`` of its ``config.yaml`` (when the backbone is
    the accelerated one), else a ``plan.json`` in the folder; ``(None, None)`` for a plain model."""
    config = os.path.join(folder, "config.yaml")
    candidates = []
    if os.path.isfile(config):
        import yaml

        try:
            with open(config, encoding="utf-8") as f:
                cfg = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as error:
            raise AccelDetError(f"cannot read {config}: {error}") from None
        model = cfg.get("MODEL") or {}
        accelerated = "accel" in str((model.get("BACKBONE") or {}).get("NAME", ""))
        path = (model.get("ACCEL") or {}).get("PLAN") or ""
        if accelerated and path:
            candidates += [
                path,
                os.path.join(folder, path),
                os.path.join(folder, os.path.basename(path)),
            ]
        elif not accelerated:
            return None, None
    candidates.append(os.path.join(folder, "plan.json"))
    for path in candidates:
        path = os.path.expanduser(path)
        if os.path.isfile(path):
            return Plan.read(path), path
    if os.path.isfile(config):
        raise AccelDetError(
            f"{folder}: config.yaml names an accelerated backbone but its plan "
            f"({candidates[0]}) is not found"
        )
    return None, None


def record_from_run(folder: str, *, name: Optional[str] = None) -> dict:
    """A result record for a run folder: its own ``result.json`` (the demo writes one) or, for a
    ``tools/train_net.py`` run, AP50 from ``eval_results.json`` (``eval_before_ft.json`` gives
    ``ap50_before_ft`` when present) and the theoretical speedup from its plan (1.0 without one).
    A ``speed.json`` in the folder (``{"latency": {...}}``) supplies latencies."""
    folder = os.path.abspath(folder)
    if not os.path.isdir(folder):
        raise AccelDetError(f"run folder {folder} does not exist")
    own = os.path.join(folder, "result.json")
    if os.path.isfile(own):
        record = load_json_object(own, "result record")
        plan_path = record.get("plan")
        plan = None
        if (
            plan_path
        ):  # an absolute path where the demo ran; also found next to the record once moved
            for path in (
                plan_path,
                os.path.join(folder, plan_path),
                os.path.join(folder, os.path.basename(plan_path)),
            ):
                if os.path.isfile(path):
                    plan = load_json(path, "plan")
                    break
    else:
        results = os.path.join(folder, "eval_results.json")
        if not os.path.isfile(results):
            raise AccelDetError(
                f"{folder} has neither result.json nor eval_results.json (run tools/train_net.py "
                "with evaluation first)"
            )
        plan, plan_path = _plan_of_run(folder)
        record = {
            "name": os.path.basename(folder.rstrip(os.sep)),
            "ap50": _file_ap50(results),
            "theoretical_speedup": float(plan.get("theoretical_speedup", 1.0)) if plan else 1.0,
            "theoretical_speedup_detector": detector_speedup(plan),
            "plan": plan_path,
            "output_dir": folder,
        }
        before = os.path.join(folder, "eval_before_ft.json")
        if os.path.isfile(before):
            record["ap50_before_ft"] = _file_ap50(before)
        if os.path.isfile(records_path(results)):
            record["detections"] = records_path(results)
    speed = os.path.join(folder, "speed.json")
    if os.path.isfile(speed) and not record.get("latency"):
        record["latency"] = dict(load_json_object(speed, "speed record").get("latency") or {})
    # a record that names a plan which cannot be read has no known architecture (not the original's)
    record["plan_fingerprint"] = (
        plan_fingerprint(plan) if plan is not None or not record.get("plan") else None
    )
    record["fc_layers"] = factored_fc_layers(plan)
    if name:
        record["name"] = name
    return record


def detector_speedup(plan: Optional[Mapping]) -> Optional[float]:
    """The whole detector's theoretical speedup a plan records (``tools/compress_detector.py``'s:
    all multiply-adds of one image at its input size and RoIs); None without one (the baseline,
    or a plan of the conv layers alone)."""
    if plan is None:
        return None
    value = plan.get("theoretical_speedup_detector", plan.get("theoretical_speedup_network"))
    return float(value) if value is not None else None


def factored_fc_layers(plan: Optional[Mapping]) -> List[str]:
    """The fc layers (fc6, fc7) a plan factors: its latency must have been measured with them."""
    if plan is None or not isinstance(plan.get("layers"), Mapping):
        return []
    return sorted(n for n, e in linear_entries(plan).items() if e.get("structure") == "channel")


def distinct_names(folders: Sequence[str]) -> List[str]:
    """A name per run folder that tells it from the others: the shortest ending of its path
    (``frcnn_4x/eval`` and ``frcnn_3x/eval``, not ``eval`` twice)."""
    parts = [os.path.abspath(f).rstrip(os.sep).split(os.sep) for f in folders]
    names = []
    for mine in parts:
        others = [p for p in parts if p is not mine]
        depth = 1
        while depth < len(mine) and any(p[-depth:] == mine[-depth:] for p in others):
            depth += 1
        names.append("/".join(mine[-depth:]))
    return names


def attach_speed(
    records: Sequence[dict],
    speed: Mapping,
    *,
    input_hw: Optional[Sequence[int]] = None,
    batch: int = 1,
) -> List[str]:
    """Set each record's ``latency`` (backbone and detector medians) from a
    ``tools/benchmark_speed.py`` JSON whose timed model has the same plan fingerprint (the original
    for a run without plan), at ``input_hw`` (default: the largest input timed at ``batch``), in
    float32 (a GPU grid also has float16 / bfloat16 rows). Returns a note per record left without
    latency (its plan was not timed in the grid); such a record's own latency is dropped, as it was
    measured elsewhere."""
    grid = [r for r in speed.get("grid") or [] if isinstance(r, Mapping) and r.get("input_hw")]
    rows = [r for r in grid if r.get("batch") == batch and r.get("dtype", "float32") == "float32"]
    if input_hw is None and rows:
        input_hw = max((r["input_hw"] for r in rows), key=lambda hw: hw[0] * hw[1])
    rows = [r for r in rows if list(r["input_hw"]) == list(input_hw or [])]
    if not rows:
        timed = sorted(
            {f"{r['input_hw'][0]}x{r['input_hw'][1]} batch {r.get('batch')}" for r in grid}
        )
        raise AccelDetError(
            f"the speed JSON has no timings at batch {batch}"
            + (f", input {input_hw[0]}x{input_hw[1]}" if input_hw else "")
            + f"; it has: {', '.join(timed) or 'none'}"
        )
    in_grid = {r.get("model") for r in rows}
    models: Dict[str, str] = {
        fp: name
        for name, model in (speed.get("models") or {}).items()
        for fp in [(model or {}).get("fingerprint")]
        if fp and name in in_grid
    }
    notes = []
    for record in records:
        name = models.get(record.get("plan_fingerprint"))
        fc = record.get("fc_layers")
        if name is not None and fc and not (speed["models"][name] or {}).get("fc_layers"):
            record.pop("latency", None)  # timed with plain fc layers: not this model's latency
            notes.append(
                f"{record.get('name')}: its plan factors {', '.join(fc)}, which the speed JSON's "
                "timing of it does not (tools/benchmark_speed.py times the conv layers' "
                "structures; tools/benchmark_runtimes.py --detector-plan the whole detector)"
            )
            continue
        if name is None:
            record.pop("latency", None)
            notes.append(
                f"{record.get('name')}: its plan was not timed in the speed JSON's grid (time it "
                f"with tools/benchmark_speed.py --plan {record.get('plan') or 'PLAN'})"
            )
            continue
        latency = {
            "threads": speed.get("threads"),
            "input_hw": list(input_hw),
            "batch": batch,
            "model": name,
        }
        for row in rows:
            if row["model"] == name and row["part"] in ("backbone", "detector"):
                latency[row["part"]] = dict(row["latency"], median_ms=row["median_ms"])
        record["latency"] = latency
    return notes


def _baseline(records: Sequence[Mapping]) -> Mapping:
    marked = [r for r in records if r.get("baseline")]
    if len(marked) == 1:
        return marked[0]
    plain = [r for r in records if float(r.get("theoretical_speedup", 0)) == 1.0]
    if len(marked) > 1 or len(plain) != 1:
        raise AccelDetError(
            'the records need exactly one baseline ("baseline": true, or theoretical_speedup 1.0)'
        )
    return plain[0]


def _median(record: Mapping, part: str) -> Optional[float]:
    value = (record.get("latency") or {}).get(part) or {}
    return value.get("median_ms")


def add_intervals(
    records: Sequence[dict],
    pairs: Sequence[Tuple[str, str]] = (),
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> List[dict]:
    """Set ``ap50_interval`` (95 %, bootstrap over test images) and ``delta_ap50_interval``
    (against the baseline, paired: the same resampled images) of every record whose per-image
    detections (``"detections"``: an ``.npz`` next to its ``eval_results.json``) are readable;
    returns the paired comparison of each ``(model, against)`` name pair of ``pairs``, as
    ``{"model", "against", "value", "low", "high", ...}``."""
    loaded = {}
    for record in records:
        path = record.get("detections")
        if path and os.path.isfile(path):
            detections = read_records(path)
            samples = bootstrap_ap50(detections, resamples, seed)
            loaded[record.get("name")] = (detections, float(ap50(detections)), samples)

    def compare(a: str, b: str) -> Optional[dict]:
        if a not in loaded or b not in loaded:
            return None
        (da, va, sa), (db, vb, sb) = loaded[a], loaded[b]
        check_paired(da, db)
        interval = interval_from_samples(va - vb, sa - sb)
        return dict(interval.as_dict(), images=da.num_images)

    for record in records:
        if record.get("name") in loaded:
            detections, value, samples = loaded[record["name"]]
            interval = interval_from_samples(value, samples)
            record["ap50_interval"] = dict(interval.as_dict(), images=detections.num_images)
    base = _baseline(records)
    for record in records:
        if record is not base:
            record["delta_ap50_interval"] = compare(record.get("name"), base.get("name"))
    found = [(a, b, compare(a, b)) for a, b in pairs]
    return [dict(c, model=a, against=b) for a, b, c in found if c is not None]


def interval(value: Optional[Mapping]) -> Optional[Interval]:
    """An :class:`Interval` from its dict (``as_dict``) in a record or row; None for none."""
    return Interval.from_dict(value)


def comparison_text(comparison: Mapping) -> str:
    """``detector_4x against asym3d_4x: Δ +1.9 [+0.4, +3.3] (higher)``, or ``(no measurable
    difference)`` where the interval holds 0."""
    delta = interval(comparison)
    verdict = (
        "no measurable difference"
        if delta.holds_zero
        else ("higher" if delta.value > 0 else "lower")
    )
    return (
        f"{comparison['model']} against {comparison['against']}: {delta.delta_text()} ({verdict})"
    )


def report_rows(records: Sequence[Mapping]) -> List[dict]:
    """Rows sorted by theoretical speedup: name, theoretical speedup, actual speedups of the
    backbone and of the whole detector, their median latencies, AP50 (before/after FT), ΔAP50."""
    base = _baseline(records)
    rows = []
    for r in records:
        row = {
            "name": r.get("name", "?"),
            "baseline": r is base,
            "theoretical_speedup": float(r.get("theoretical_speedup", 1.0)),
            "theoretical_speedup_detector": r.get("theoretical_speedup_detector"),
            "ap50": r.get("ap50"),
            "ap50_before_ft": r.get("ap50_before_ft"),
            "ap50_onnxruntime": r.get("ap50_onnxruntime"),
            "ap50_interval": r.get("ap50_interval"),
            "delta_ap50_interval": r.get("delta_ap50_interval"),
            "delta_ap50": None
            if r.get("ap50") is None or base.get("ap50") is None
            else r["ap50"] - base["ap50"],
        }
        for part in PARTS:
            ms, base_ms = _median(r, part), _median(base, part)
            row[f"{part}_ms"] = ms
            row[f"{part}_speedup"] = base_ms / ms if ms and base_ms else None
        rows.append(row)
    return sorted(rows, key=sort_key)


def sort_key(row: Mapping):
    """Baseline first, then by theoretical speedup (of the whole detector when known)."""
    return (
        not row["baseline"],
        row.get("theoretical_speedup_detector") or row["theoretical_speedup"],
    )


def _f(value, pattern: str, empty: str = "–") -> str:
    return empty if value is None else pattern.format(value)


def results_table(rows: Sequence[Mapping]) -> str:
    """The rows as a GitHub Markdown table (a latency column only when some row has it)."""
    show_before = any(r.get("ap50_before_ft") is not None for r in rows)
    parts = [p for p in PARTS if any(r.get(f"{p}_ms") is not None for r in rows)]
    show_detector = any(r.get("theoretical_speedup_detector") for r in rows)
    header = ["model", "theoretical speedup (conv)"]
    header += ["theoretical speedup (detector)"] if show_detector else []
    header += [f"actual speedup ({PART_LABELS[p]})" for p in parts] + [
        f"{PART_LABELS[p]} ms" for p in parts
    ]
    header += ["AP50 before FT"] if show_before else []
    if any(r.get("ap50_interval") for r in rows):
        header += ["AP50 [95 % interval]", "ΔAP50 [95 %, paired]"]
    else:
        header += ["AP50", "ΔAP50"]
    show_exported = any(r.get("ap50_onnxruntime") is not None for r in rows)
    header += ["AP50 (ONNX Runtime)"] if show_exported else []
    body = []
    for r in rows:
        cells = [r["name"], "1.00×" if r["baseline"] else _f(r["theoretical_speedup"], "{:.2f}×")]
        detector = 1.0 if r["baseline"] else r.get("theoretical_speedup_detector")
        cells += [_f(detector, "{:.2f}×")] if show_detector else []
        cells += [_f(r[f"{p}_speedup"], "{:.2f}×") for p in parts] + [
            _f(r[f"{p}_ms"], "{:.1f}") for p in parts
        ]
        cells += [_f(r.get("ap50_before_ft"), "{:.1f}")] if show_before else []
        cells += [_ap50_cell(r), "–" if r["baseline"] else _delta_cell(r)]
        cells += [_f(r.get("ap50_onnxruntime"), "{:.1f}")] if show_exported else []
        body.append(cells)
    return markdown_table(header, body)


def _ap50_cell(row: Mapping) -> str:
    bounds = interval(row.get("ap50_interval"))
    return str(bounds) if bounds is not None else _f(row["ap50"], "{:.1f}")


def _delta_cell(row: Mapping) -> str:
    bounds = interval(row.get("delta_ap50_interval"))
    if bounds is None:
        return _f(row["delta_ap50"], "{:+.1f}")
    return bounds.delta_text()[len("Δ ") :]


def write_report(
    path: str,
    rows: Sequence[Mapping],
    *,
    title: str,
    notes: Sequence[str] = (),
    sections: Sequence[str] = (),
) -> None:
    """``path`` (Markdown): title, notes (bullets), the table, then free-form sections."""
    parts = [f"# {title}", ""]
    if notes:
        parts += [f"- {n}" for n in notes] + [""]
    parts += [results_table(rows), ""]
    for section in sections:
        parts += [section.rstrip(), ""]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_text("\n".join(parts), path)
