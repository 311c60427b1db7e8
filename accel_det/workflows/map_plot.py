"""The AP50-vs-speedup plot of the report (:mod:`.report`): AP50 with its interval against the
whole detector's measured speedup, one line per family of models."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Tuple

from ..evaluation import Interval
from ..utils.io import atomic_path


def family(row: Mapping) -> str:
    """The group a model belongs to in the plot: its name up to a last ``_<speedup>x``
    (``detector_4x`` → ``detector``); any other name (``fc_svd``, the baseline) its own."""
    head, _, tail = row["name"].rpartition("_")
    if row["baseline"] or not head or not tail.endswith("x"):
        return "baseline" if row["baseline"] else row["name"]
    try:
        float(tail[:-1])
    except ValueError:
        return row["name"]
    return head


def plot_map_vs_speedup(rows: Sequence[Mapping], path: str, title: str = "AP50 vs speedup") -> None:
    """PNG: AP50 (error bar: its 95 % interval) against the measured speedup of the whole
    detector (ONNX Runtime where measured, else eager PyTorch; the theoretical one where neither
    is), one line per family in order of speedup (``asym3d_2x``, ``_3x``, ``_4x``; a family of one
    model is a point), the baseline at 1×, and each model's theoretical speedup as an open marker
    at the same AP50, joined to its measured one by a thin dotted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get("ap50") is not None]
    part = next(
        (
            p
            for p in ("detector_onnxruntime", "detector")
            if any(r.get(f"{p}_speedup") for r in rows)
        ),
        None,
    )
    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    markers = iter("osD^vP*X")
    families = list(dict.fromkeys(family(r) for r in rows))
    for index, name in enumerate(families):
        members = sorted((r for r in rows if family(r) == name), key=lambda r: _x(r, part))
        marker = "*" if name == "baseline" else next(markers)
        xs, ys = [_x(r, part) for r in members], [r["ap50"] for r in members]
        errors = [_error(r) for r in members]
        color = "black" if name == "baseline" else f"C{index}"
        ax.errorbar(xs, ys, yerr=list(zip(*errors)) if all(errors) else None, color=color,
                    linestyle="-" if len(members) > 1 else "none", marker=marker,
                    markersize=11 if marker == "*" else 7, capsize=3, linewidth=1.5,
                    label=name if name != "baseline" else "baseline (1×)")  # fmt: skip
        for r, x, y in zip(members, xs, ys):
            theory = None if r["baseline"] else r.get("theoretical_speedup_detector")
            if theory:
                ax.plot([x, theory], [y, y], ":", color=color, linewidth=0.8)
                ax.plot([theory], [y], marker=marker, color=color, markerfacecolor="none",
                        markersize=7, linestyle="none")  # fmt: skip
            label = r["name"][len(name) + 1 :] if len(members) > 1 else r["name"]
            offset = (6, 6) if members.index(r) % 2 == 0 else (6, -14)
            ax.annotate(label, (x, y), textcoords="offset points", xytext=offset, fontsize=10,
                        color=color)  # fmt: skip
    ax.plot([], [], "o", color="gray", markerfacecolor="none", label="theoretical speedup (open)")
    measured = {"detector_onnxruntime": "measured, ONNX Runtime", "detector": "measured, eager"}
    ax.set_xlabel(
        f"speedup of the whole detector over the baseline (×; {measured.get(part, 'theoretical')})",
        fontsize=11,
    )
    ax.set_ylabel("AP50 (%), bar: 95 % bootstrap interval over test images", fontsize=11)
    ax.set_title(title, fontsize=12)
    ax.tick_params(labelsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="best")
    fig.tight_layout()
    with atomic_path(path) as temporary:
        fig.savefig(temporary, format="png")
    plt.close(fig)


def _x(row: Mapping, part: Optional[str]) -> float:
    """A row's measured whole-detector speedup (``part``), else its theoretical one."""
    if row["baseline"]:
        return 1.0
    measured = row.get(f"{part}_speedup") if part else None
    return measured or row.get("theoretical_speedup_detector") or row["theoretical_speedup"]


def _error(row: Mapping) -> Optional[Tuple[float, float]]:
    """(below, above) of a row's AP50 interval, for an error bar."""
    bounds = Interval.from_dict(row.get("ap50_interval"))
    if bounds is None:
        return None
    return (max(0.0, row["ap50"] - bounds.low), max(0.0, bounds.high - row["ap50"]))
