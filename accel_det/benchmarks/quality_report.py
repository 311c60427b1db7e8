"""The solver benchmark's tables and plot: held-out error and accuracy per method and speedup."""

from __future__ import annotations

import logging
from typing import Dict, List, Sequence, Tuple

from ..solver import METHODS
from ..utils.tables import text_table

logger = logging.getLogger(__name__)


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


def plot_sweep(sweep: dict, path: str, title: str = "") -> None:
    """PNG: held-out error and top-1 accuracy vs speedup, one colour per method; solid lines with
    rank selection, dashed without. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from ..utils.io import atomic_path

    colours = dict(zip(METHODS, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")))
    fig, (ax_error, ax_accuracy) = plt.subplots(1, 2, figsize=(13, 4.4))
    groups: Dict[Tuple[str, bool], List[dict]] = {}
    for record in sweep["records"]:
        if "impossible" not in record:
            groups.setdefault((record["method"], record["rank_selection"]), []).append(record)
    for (method, selection), records in groups.items():
        records = sorted(records, key=lambda r: r["speedup"])
        xs = [r["speedup"] for r in records]
        style = dict(
            color=colours.get(method),
            marker="o",
            linestyle="-" if selection or not METHODS[method].channel else "--",
            label=record_label(records[0]),
        )
        ax_error.plot(xs, [r["error"] for r in records], **style)
        ax_accuracy.plot(xs, [100 * r["accuracy"] for r in records], **style)
    ax_accuracy.axhline(
        100 * sweep["baseline"]["accuracy"], color="black", linewidth=0.8, label="original"
    )
    ax_error.set(
        xlabel="theoretical speedup (×)", ylabel="held-out relative output error", yscale="log"
    )
    ax_accuracy.set(xlabel="theoretical speedup (×)", ylabel="held-out top-1 accuracy (%)")
    for ax in (ax_error, ax_accuracy):
        ax.grid(True, alpha=0.3)
    ax_accuracy.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5), handlelength=3)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as temporary:
        fig.savefig(temporary, dpi=110, format="png")
    plt.close(fig)


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
