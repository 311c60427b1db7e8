"""The solver benchmark's tables: held-out error and accuracy per method and speedup (its PNGs:
:mod:`accel_det.benchmarks.plots`)."""

from __future__ import annotations

from typing import Dict, Sequence

from ..solver import METHODS
from ..utils.tables import text_table


def record_label(record: dict) -> str:
    if not METHODS[record["method"]].channel:  # no ranks to select
        return record["method"]
    return f"{record['method']} ({'rank sel.' if record['rank_selection'] else 'uniform'})"


def sweep_table(sweep: dict, speedups: Sequence[float], field: str = "quality") -> str:
    """A fixed-width table: rows method × rank selection, one column per speedup. ``field``:
    "quality" (held-out error / top-1 accuracy) or "cost" (compression seconds / peak MB)."""
    rows: Dict[str, Dict[float, str]] = {}
    for record in sweep["records"]:
        cells = rows.setdefault(record_label(record), {})
        if "impossible" in record:
            cells[record["speedup"]] = "impossible"
        elif field == "quality":
            cells[record["speedup"]] = f"{record['error']:.3f} / {100 * record['accuracy']:.1f}%"
        else:
            cells[record["speedup"]] = f"{record['seconds']:.1f}s / {record['peak_mb']:.0f}MB"
    what = "held-out error / top-1" if field == "quality" else "seconds / peak RSS"
    header = [f"method ({what})"] + [f"{s:g}x" for s in speedups]
    body = [[label] + [cells.get(s, "-") for s in speedups] for label, cells in rows.items()]
    if field == "quality":
        base = sweep["baseline"]
        body.insert(
            0,
            ["original"] + [f"{base['error']:.3f} / {100 * base['accuracy']:.1f}%"] * len(speedups),
        )
    return text_table(header, body)


def rounding_table(rounding: dict, speedups: Sequence[float]) -> str:
    """Held-out error / top-1 per method and rank multiple, one column per speedup."""
    rows: Dict[str, Dict[float, str]] = {}
    for record in rounding["records"]:
        label = f"{record['method']}, ranks x{record['round_ranks_to']}"
        cells = rows.setdefault(label, {})
        if "impossible" in record:
            cells[record["speedup"]] = "impossible"
        else:
            cells[record["speedup"]] = (
                f"{record['error']:.3f} / {100 * record['accuracy']:.1f}% "
                f"({record['theoretical_speedup']:.2f}x)"
            )
    header = ["method, rank multiple (held-out error / top-1, theoretical)"]
    header += [f"{s:g}x" for s in speedups]
    body = [[label] + [cells.get(s, "-") for s in speedups] for label, cells in rows.items()]
    return text_table(header, body)
