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
                str(e.get("out_channels", e.get("out_features", ""))),
                _fmt(e.get("rank"), "{}"),
                _fmt(e.get("spatial_rank"), "{}"),
                _fmt(macs / 1e6 if macs is not None else None, "{:.1f}"),
                _fmt(original / macs if macs and original else None, "{:.2f}x"),
                _fmt(e.get("pca_energy"), "{:.4f}"),
                _fmt(e.get("error"), "{:.4f}"),
                _fmt(e.get("heldout_error"), "{:.4f}"),
                _fmt(e.get("seconds"), "{:.1f}"),
            ]
        )
    return rows


def plan_table(plan: Mapping) -> str:
    """The plan as a fixed-width text table, with the conv layers' line (the paper's theoretical
    speedup) and, for a plan with fc layers, the whole network's line at the bottom."""
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
        "held-out",
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
        _fmt((plan.get("heldout") or {}).get("output_error"), "{:.4f}"),
        _fmt(sum(e.get("seconds") or 0 for e in plan["layers"].values()), "{:.1f}"),
    ]
    footer = [total]
    if plan.get("theoretical_speedup_network"):  # fc layers and the fixed rest included
        macs = plan["approximated_macs_network"] / 1e6
        speedup = plan["theoretical_speedup_network"]
        footer.append(
            ["network", "conv + fc + rest", "", "", "", f"{macs:.1f}", f"{speedup:.2f}x"] + [""] * 4
        )
    return text_table(header, rows, align="ll" + "r" * (len(header) - 2), footer=footer)


def plot_title(plan: Mapping) -> str:
    """Method, target and theoretical speedups of a plan, in one line."""
    parts = [str(plan.get("method", ""))]
    if plan.get("speedup"):
        parts.append(f"target {plan['speedup']:g}x ({plan.get('speedup_target', 'conv')})")
    if plan.get("theoretical_speedup"):
        parts.append(f"theoretical {plan['theoretical_speedup']:.2f}x (conv)")
    if plan.get("theoretical_speedup_network"):
        parts.append(f"{plan['theoretical_speedup_network']:.2f}x (whole network)")
    parts.append(f"rank selection {'yes' if plan.get('rank_selection') else 'no'}")
    return ", ".join(parts)


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
    d = [e.get("out_channels", e.get("out_features")) or 0 for e in layers]
    rank = [
        e.get("rank") or (width if e.get("structure") == "original" else 0) or 0
        for e, width in zip(layers, d)
    ]
    spatial = [e.get("spatial_rank") or 0 for e in layers]
    error = [np.nan if e.get("error") is None else e["error"] for e in layers]
    heldout = [np.nan if e.get("heldout_error") is None else e["heldout_error"] for e in layers]
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

    bottom.plot(x, error, "o-", color="#d62728", label="relative error (samples solved on)")
    if not all(np.isnan(heldout)):
        bottom.plot(x, heldout, "x--", color="#9467bd", label="relative error (held-out images)")
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

    figure.suptitle(title or plot_title(plan))
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    plt.close(figure)
