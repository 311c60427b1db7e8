"""Per-layer views of a compression plan: a printed table and a PNG (original vs kept ranks,
error)."""

from __future__ import annotations

from typing import List, Mapping, Optional

from ..utils.io import atomic_path
from ..utils.tables import text_table


def _fmt(value, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def plan_rows(plan: Mapping) -> List[List[str]]:
    """One row of strings per conv layer of ``plan``."""
    rows = []
    for name, e in plan["layers"].items():
        macs, original = e.get("macs"), e.get("original_macs")
        rows.append(
            [
                name,
                e.get("structure", "original"),
                str(e.get("out_channels", "")),
                _fmt(e.get("rank"), "{}"),
                _fmt(e.get("spatial_rank"), "{}"),
                _fmt(macs / 1e6 if macs is not None else None, "{:.1f}"),
                _fmt(original / macs if macs and original else None, "{:.2f}x"),
                _fmt(e.get("pca_energy"), "{:.4f}"),
                _fmt(e.get("error"), "{:.4f}"),
                _fmt(e.get("seconds"), "{:.1f}"),
            ]
        )
    return rows


def plan_table(plan: Mapping) -> str:
    """The plan as a fixed-width text table, with the whole-model line at the bottom."""
    header = [
        "layer",
        "structure",
        "d",
        "d'",
        "d''",
        "MMACs",
        "speedup",
        "PCA energy",
        "error",
        "seconds",
    ]
    rows = plan_rows(plan)
    total = [
        "total",
        plan.get("method", ""),
        "",
        "",
        "",
        _fmt(plan.get("approximated_macs", 0) / 1e6, "{:.1f}"),
        _fmt(plan.get("theoretical_speedup"), "{:.2f}x"),
        "",
        "",
        _fmt(sum(e.get("seconds") or 0 for e in plan["layers"].values()), "{:.1f}"),
    ]
    return text_table(header, rows, align="ll" + "r" * (len(header) - 2), footer=[total])


def plot_plan(plan: Mapping, path: str, title: Optional[str] = None) -> None:
    """Write a PNG: per layer, original channels d vs kept ranks d' (and d''), and the relative
    reconstruction error with the PCA energy kept. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(plan["layers"])
    layers = [plan["layers"][n] for n in names]
    x = np.arange(len(names))
    d = [e.get("out_channels") or 0 for e in layers]
    rank = [
        e.get("rank") or (e.get("out_channels") if e.get("structure") == "original" else 0) or 0
        for e in layers
    ]
    spatial = [e.get("spatial_rank") or 0 for e in layers]
    error = [np.nan if e.get("error") is None else e["error"] for e in layers]
    energy = [e.get("pca_energy") if e.get("rank") else np.nan for e in layers]

    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(max(8, 0.7 * len(names) + 2), 7), sharex=True
    )
    width = 0.28
    top.bar(x - width, d, width, label="original d", color="#bbbbbb")
    top.bar(x, rank, width, label="kept rank d'", color="#1f77b4")
    if any(spatial):
        top.bar(x + width, spatial, width, label="spatial rank d''", color="#ff7f0e")
    top.set_ylabel("channels")
    top.legend(loc="upper left", fontsize=8)
    top.grid(axis="y", alpha=0.3)

    bottom.plot(x, error, "o-", color="#d62728", label="relative error")
    bottom.set_ylabel("relative error ||r(y) - r(y')|| / ||r(y)||")
    bottom.grid(alpha=0.3)
    twin = bottom.twinx()
    twin.plot(x, energy, "s--", color="#2ca02c", label="PCA energy kept")
    twin.set_ylabel("PCA energy kept")
    lines = bottom.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    bottom.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=8)
    bottom.set_xticks(x)
    bottom.set_xticklabels(names, rotation=45, ha="right")

    speedup = plan.get("theoretical_speedup")
    figure.suptitle(
        title
        or (
            f"{plan.get('method', '')}: target {plan.get('speedup', 0):g}x, theoretical "
            f"{speedup:.2f}x, rank selection {'yes' if plan.get('rank_selection') else 'no'}"
            if speedup
            else plan.get("method", "")
        )
    )
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    plt.close(figure)
