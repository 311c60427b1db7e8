"""The benchmarks' PNGs: the runtime benchmark's speedups per form, and the solver benchmark's
held-out error and accuracy against speedup (small VGG-16 and small ResNet). Written atomically."""

from __future__ import annotations

from typing import Dict, List, Tuple

from ..solver import METHODS
from ..utils.io import atomic_path
from .quality_report import record_label


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def write_png(figure, path: str, dpi: int, title: str = "") -> None:
    """``figure`` (with ``title`` over it) as a PNG at ``path``, written atomically; closed."""
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=dpi, format="png")
    pyplot().close(figure)


def plot_runtime_speedups(rows, path: str, threads: int = 1) -> None:
    """Write a PNG of the runtime benchmark: per case (one panel each, at ``threads``), each
    model's measured speedup over the original in every form (bars) and its theoretical speedup
    (a dashed mark). Written atomically."""
    plt = pyplot()
    rows = [r for r in rows if r["threads"] == threads and r["model"] != "original"]
    cases = list(dict.fromkeys(r["case"] for r in rows))
    if not cases:
        return
    colors = {f: f"C{i}" for i, f in enumerate(dict.fromkeys(r["form"] for r in rows))}
    figure, axes = plt.subplots(len(cases), 1, figsize=(11, 3.2 * len(cases)), squeeze=False)
    for ax, case in zip(axes[:, 0], cases):
        cell = [r for r in rows if r["case"] == case]
        models = list(dict.fromkeys(r["model"] for r in cell))
        forms = list(dict.fromkeys(r["form"] for r in cell))
        width = 0.8 / len(forms)
        for j, form in enumerate(forms):
            values = [
                next((r["speedup"] for r in cell if r["model"] == m and r["form"] == form), 0)
                for m in models
            ]
            ax.bar([i + (j - (len(forms) - 1) / 2) * width for i in range(len(models))], values,
                   width, label=form, color=colors[form])  # fmt: skip
        for i, model in enumerate(models):
            theory = next(r["theoretical"] for r in cell if r["model"] == model)
            ax.plot([i - 0.45, i + 0.45], [theory, theory], "k--", linewidth=1)
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels([m.replace(", ", "\n") for m in models], fontsize=8)
        ax.set_ylabel("speedup over the original")
        ax.set_title(f"{case}, {threads} thread(s); dashed: theoretical", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncol=len(forms), loc="lower right")
    write_png(figure, path, 100)


def plot_vgg_sweep(sweep: dict, path: str, title: str = "") -> None:
    """PNG: held-out error and top-1 accuracy vs speedup, one colour per method; solid lines with
    rank selection, dashed without. Written atomically."""
    plt = pyplot()
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
    write_png(fig, path, 110, title)


def plot_resnet_sweep(sweep: dict, path: str, title: str = "") -> None:
    """PNG: held-out logit error and top-1 accuracy vs speedup per method, with the 95 % bootstrap
    intervals as error bars. Written atomically."""
    plt = pyplot()
    fig, (ax_error, ax_accuracy) = plt.subplots(1, 2, figsize=(12, 4.2))
    for method in dict.fromkeys(r["method"] for r in sweep["records"]):
        rows = sorted((r for r in sweep["records"] if r["method"] == method and "error" in r),
                      key=lambda r: r["speedup"])  # fmt: skip
        xs = [r["speedup"] for r in rows]
        for ax, key, scale in ((ax_error, "error", 1), (ax_accuracy, "accuracy", 100)):
            values = [scale * r[key] for r in rows]
            low = [v - scale * r[f"{key}_interval"][0] for v, r in zip(values, rows)]
            high = [scale * r[f"{key}_interval"][1] - v for v, r in zip(values, rows)]
            bars = [low, high]
            ax.errorbar(xs, values, yerr=bars, marker="o", capsize=3, label=method)
    ax_accuracy.axhline(100 * sweep["baseline"]["accuracy"], color="black", linewidth=0.8,
                        label="original")  # fmt: skip
    ax_error.set(xlabel="theoretical speedup (×)", ylabel="held-out relative logit error")
    ax_accuracy.set(xlabel="theoretical speedup (×)", ylabel="held-out top-1 accuracy (%)")
    for ax in (ax_error, ax_accuracy):
        ax.grid(True, alpha=0.3)
    ax_accuracy.legend(fontsize=8)
    write_png(fig, path, 110, title)
