"""Time every subject in every form at each thread count, and compare best form with best form.

Each (subject, form) pair is one call of :func:`accel_det.utils.timing.measure_for`: all pairs of
one case and thread count interleaved, so a slow spell of a shared machine touches all alike.
Speedups are ratios of medians: a subject against the original in the same form and thread count
(one runtime), and the subject's fastest form against the original's fastest form (best against
best, the deployed comparison).
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import torch

from ..utils.timing import measure_for
from .runtimes import (
    EXPORTED,
    INT8_FORMS,
    build_call,
    export_onnx,
    form_precision,
    int8_path,
    quantize_for_timing,
)
from .subjects import Subject


def time_case(
    case: str,
    subjects: Sequence[Subject],
    inputs: tuple,
    *,
    forms: Sequence[str],
    threads: Sequence[int],
    folder: str,
    seconds: float = 20.0,
    device: torch.device = torch.device("cpu"),
    dynamic_shapes=None,
    names=None,
    min_repeats: int = 3,
    progress: Optional[Callable[[str], None]] = None,
) -> List[dict]:
    """Rows ``{case, model, form, threads, median_ms, ...}`` of every subject in every form at
    every thread count (the exported forms use one ONNX file per subject, made once in
    ``folder``)."""
    paths: Dict[str, str] = {}
    if any(f in EXPORTED for f in forms):
        for subject in subjects:
            paths[subject.name] = export_onnx(
                subject.module,
                inputs,
                os.path.join(folder, f"{file_stem(subject.name)}.onnx"),
                dynamic_shapes=dynamic_shapes,
                names=names,
            )
            if any(f in INT8_FORMS for f in forms):
                path = paths[subject.name]
                quantize_for_timing(path, inputs, int8_path(path))

    def call(subject, form, count):
        onnx_path = paths.get(subject.name, "")
        return build_call(
            form, subject.module, inputs, threads=count, onnx_path=onnx_path, device=device
        )

    # torch forms do not depend on the runtimes' thread count: built once
    built = {
        key(s, f): call(s, f, threads[0]) for s in subjects for f in forms if f not in EXPORTED
    }
    rows = []
    for count in threads:
        calls = {
            key(s, f): built[key(s, f)] if f not in EXPORTED else call(s, f, count)
            for s in subjects
            for f in forms
        }
        timed = measure_for(
            calls,
            threads=count,
            seconds=seconds,
            warmup=2,
            min_repeats=min_repeats,
            max_repeats=15,
            device=device,
        )
        del calls
        for subject in subjects:
            for form in forms:
                latency = timed[key(subject, form)]
                rows.append(
                    {
                        "case": case,
                        "model": subject.name,
                        "form": form,
                        "precision": form_precision(form),
                        "threads": count,
                        "median_ms": latency["median_ms"],
                        "min_ms": latency["min_ms"],
                        "repeats": latency["repeats"],
                        "macs": subject.macs,
                        "theoretical": subject.theoretical,
                    }
                )
        if progress:
            progress(f"{case}, {count} thread(s): {rows[-1]['repeats']} timed rounds")
    return add_speedups(rows)


def key(subject: Subject, form: str) -> str:
    return f"{subject.name}|{form}"


def add_speedups(rows: List[dict], original: str = "original") -> List[dict]:
    """Each row's speedup over the original in the same case, form and thread count, and that
    speedup over the theoretical one (``ratio``)."""
    base = {
        (r["case"], r["form"], r["threads"]): r["median_ms"] for r in rows if r["model"] == original
    }
    for row in rows:
        reference = base.get((row["case"], row["form"], row["threads"]))
        row["speedup"] = reference / row["median_ms"] if reference else None
        row["ratio"] = row["speedup"] / row["theoretical"] if reference else None
    return rows


def precision_of(row: Mapping) -> str:
    return row.get("precision") or form_precision(row["form"])


def best_against_best(
    rows: Sequence[Mapping], original: str = "original", precision: Optional[str] = None
) -> List[dict]:
    """Per case and thread count, each subject's fastest form against the original's fastest
    float32 form: the speedup a user gets who deploys each in its best runtime and precision.
    ``precision``: only forms of that precision, on both sides (each precision against the
    original in the same precision)."""
    best: Dict[tuple, Mapping] = {}
    reference: Dict[tuple, Mapping] = {}
    for row in rows:
        if precision is not None and precision_of(row) != precision:
            continue
        key = (row["case"], row["threads"], row["model"])
        if key not in best or row["median_ms"] < best[key]["median_ms"]:
            best[key] = row
        plain = precision is not None or precision_of(row) == "fp32"
        if row["model"] == original and plain:
            if key not in reference or row["median_ms"] < reference[key]["median_ms"]:
                reference[key] = row
    result = []
    for (case, count, model), row in best.items():
        base = reference.get((case, count, original))
        if model == original or base is None:
            continue
        speedup = base["median_ms"] / row["median_ms"]
        result.append(
            {
                "case": case,
                "threads": count,
                "model": model,
                "theoretical": row["theoretical"],
                "original_form": base["form"],
                "original_ms": base["median_ms"],
                "form": row["form"],
                "precision": precision_of(row),
                "median_ms": row["median_ms"],
                "speedup": speedup,
                "ratio": speedup / row["theoretical"],
            }
        )
    return result


def best_by_precision(rows: Sequence[Mapping], original: str = "original") -> List[dict]:
    """:func:`best_against_best` within each precision timed (the original's fastest form of
    that precision the reference)."""
    precisions = dict.fromkeys(precision_of(r) for r in rows)
    return [row for p in precisions for row in best_against_best(rows, original, p)]


def file_stem(name: str) -> str:
    """A subject's, case's or plan's name as a file stem: every character that is not a letter or
    digit becomes ``_`` (:func:`accel_det.benchmarks.plans.slug` collapses runs instead; each
    benchmark keeps its own file names)."""
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").lower()
