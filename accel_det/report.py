"""The mAP-vs-speedup table (Markdown) and plot (PNG) from per-model result records.

A *record* is a plain dict (a ``result.json`` next to each model's outputs)::

    {"name": "asym3d 4x", "theoretical_speedup": 4.0,           # 1.0 for the baseline
     "ap50": 61.2, "ap50_before_ft": 48.0,                       # optional: after compression, before FT
     "latency": {"backbone": {"median_ms": ...}, "detector": {"median_ms": ...},   # any of PARTS
                 "backbone_full_width": {"median_ms": ...}, "threads": 1},
     "plan": "path/plan.json", "baseline": true}                 # exactly one record is the baseline

:func:`report_rows` turns records into rows with actual speedups (baseline median / model median)
and ΔAP50; :func:`markdown_table` and :func:`plot_map_vs_speedup` render them. No detectron2 here.
"""

from __future__ import annotations

import json
import os
from typing import List, Mapping, Optional, Sequence

from .errors import AccelDetError
from .utils.io import atomic_path, atomic_write_text


PARTS = ("backbone", "detector", "backbone_full_width")  # latency entries a record may have
PART_LABELS = {"backbone": "backbone", "detector": "detector", "backbone_full_width": "full-width backbone"}


def load_records(paths: Sequence[str]) -> List[dict]:
    """Read result records (JSON files)."""
    records = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                records.append(json.load(f))
        except (OSError, ValueError) as error:
            raise AccelDetError(f"cannot read result record {path}: {error}") from None
    return records


def _baseline(records: Sequence[Mapping]) -> Mapping:
    marked = [r for r in records if r.get("baseline")]
    if len(marked) == 1:
        return marked[0]
    plain = [r for r in records if float(r.get("theoretical_speedup", 0)) == 1.0]
    if len(marked) > 1 or len(plain) != 1:
        raise AccelDetError("the records need exactly one baseline (\"baseline\": true, or theoretical_speedup 1.0)")
    return plain[0]


def _median(record: Mapping, part: str) -> Optional[float]:
    value = (record.get("latency") or {}).get(part) or {}
    return value.get("median_ms")


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
            "ap50": r.get("ap50"),
            "ap50_before_ft": r.get("ap50_before_ft"),
            "delta_ap50": None if r.get("ap50") is None or base.get("ap50") is None else r["ap50"] - base["ap50"],
        }
        for part in PARTS:
            ms, base_ms = _median(r, part), _median(base, part)
            row[f"{part}_ms"] = ms
            row[f"{part}_speedup"] = base_ms / ms if ms and base_ms else None
        rows.append(row)
    return sorted(rows, key=lambda row: (not row["baseline"], row["theoretical_speedup"]))


def _f(value, pattern: str, empty: str = "–") -> str:
    return empty if value is None else pattern.format(value)


def markdown_table(rows: Sequence[Mapping]) -> str:
    """The rows as a GitHub Markdown table (a latency column only when some row has it)."""
    show_before = any(r.get("ap50_before_ft") is not None for r in rows)
    parts = [p for p in PARTS if any(r.get(f"{p}_ms") is not None for r in rows)]
    header = ["model", "theoretical speedup (conv)"]
    header += [f"actual speedup ({PART_LABELS[p]})" for p in parts] + [f"{PART_LABELS[p]} ms" for p in parts]
    header += ["AP50 before FT"] if show_before else []
    header += ["AP50", "ΔAP50"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    for r in rows:
        cells = [r["name"], "1.00×" if r["baseline"] else _f(r["theoretical_speedup"], "{:.2f}×")]
        cells += [_f(r[f"{p}_speedup"], "{:.2f}×") for p in parts] + [_f(r[f"{p}_ms"], "{:.1f}") for p in parts]
        cells += [_f(r.get("ap50_before_ft"), "{:.1f}")] if show_before else []
        cells += [_f(r["ap50"], "{:.1f}"), "–" if r["baseline"] else _f(r["delta_ap50"], "{:+.1f}")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_map_vs_speedup(rows: Sequence[Mapping], path: str, title: str = "AP50 vs speedup") -> None:
    """PNG: AP50 against theoretical and actual (backbone, detector) speedup, one point per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get("ap50") is not None]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    series = [("theoretical_speedup", "theoretical (conv layers)", "o-"),
              ("backbone_speedup", "actual, backbone", "s--"),
              ("detector_speedup", "actual, whole detector", "^:"),
              ("backbone_full_width_speedup", "actual, same plans at full width", "d-.")]
    ordered = sorted(rows, key=lambda r: (not r["baseline"], r["theoretical_speedup"]))  # lines join models in this order
    for key, label, style in series:
        points = [(r[key] if not r["baseline"] else 1.0, r["ap50"]) for r in ordered if r.get(key) or r["baseline"]]
        if len(points) > 1:
            ax.plot([p[0] for p in points], [p[1] for p in points], style, label=label)
    before = sorted((r["theoretical_speedup"], r["ap50_before_ft"]) for r in rows
                    if r.get("ap50_before_ft") is not None and not r["baseline"])
    if before:
        ax.plot([p[0] for p in before], [p[1] for p in before], "x", color="gray", label="before fine-tuning (theoretical)")
    for r in rows:
        ax.annotate(r["name"], (r["theoretical_speedup"] if not r["baseline"] else 1.0, r["ap50"]),
                    textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("speedup over the baseline (×)")
    ax.set_ylabel("AP50 (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as temporary:
        fig.savefig(temporary, format="png")
    plt.close(fig)


def write_report(path: str, rows: Sequence[Mapping], *, title: str, notes: Sequence[str] = (),
                 sections: Sequence[str] = ()) -> None:
    """``path`` (Markdown): title, notes (bullets), the table, then free-form sections."""
    parts = [f"# {title}", ""]
    if notes:
        parts += [f"- {n}" for n in notes] + [""]
    parts += [markdown_table(rows), ""]
    for section in sections:
        parts += [section.rstrip(), ""]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_text("\n".join(parts), path)
