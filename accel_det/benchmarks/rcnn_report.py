"""The R-CNN speed benchmark's record as Markdown tables and a PNG of the whole model's stages."""

from __future__ import annotations

from typing import List, Mapping, Sequence

from .rcnn_forms import DESCRIPTIONS, STAGES

PARTS = {"backbone": "Backbone + FPN", "model": "Whole model"}


def markdown(record: Mapping) -> str:
    """Per part and thread count, each form's median against the original's, the best forms,
    the stage breakdown and the target line."""
    options = record["options"]
    hw = options["input_hw"]
    lines = [
        f"R-CNN speed: {record['config']['file']} at {hw[0]}x{hw[1]} (backbone input "
        f"{record['backbone_input_hw'][0]}x{record['backbone_input_hw'][1]}), "
        f"{record['machine']['device']}, load average "
        f"{' '.join(f'{v:.2f}' for v in record['machine']['load_average'])}; median of "
        f"{options['repeats']} rounds, ms (speedup over the original in the same form). "
        "Random weights, timing only.",
        "",
    ]
    models = list(dict.fromkeys(r["model"] for r in record["rows"]))
    lines += macs_table(record.get("macs", {}), models) + [""]
    for part in PARTS:
        for threads in sorted({r["threads"] for r in record["rows"]}):
            lines += part_table(record, part, threads, models) + [""]
    for threads in sorted({r["threads"] for r in record["rows"]}):
        lines += stage_table(record["rows"], threads) + [""]
    lines.append(target_line(record["target"]))
    if record.get("unavailable"):
        lines += ["", *(f"- unavailable: {k}: {v}" for k, v in record["unavailable"].items())]
    lines += ["", *(f"- {form}: {text}" for form, text in DESCRIPTIONS.items())]
    return "\n".join(lines) + "\n"


def macs_table(macs: Mapping, models: Sequence[str]) -> List[str]:
    """GMACs of each model by part, and the theoretical speedups (ratios of multiply-adds)."""
    if not macs:
        return []
    parts = ("backbone", "proposal_generator", "roi_heads", "total")
    lines = [
        "**Multiply-adds (convs and fc layers of one inference), GMACs (theoretical speedup)**",
        "",
        "| part | " + " | ".join(models) + " |",
        "|---|" + "---:|" * len(models),
    ]
    for part in parts:
        base = macs["original"][part]
        values = [
            f"{macs[m][part] / 1e9:.1f}"
            + (f" ({base / macs[m][part]:.2f}x)" if m != "original" and macs[m][part] else "")
            for m in models
        ]
        lines.append(f"| {part} | " + " | ".join(values) + " |")
    return lines


def part_table(record: Mapping, part: str, threads: int, models: Sequence[str]) -> List[str]:
    rows = [r for r in record["rows"] if r["part"] == part and r["threads"] == threads]
    if not rows:
        return []
    lines = [
        f"**{PARTS[part]}, {threads} thread(s)**",
        "",
        "| form | " + " | ".join(models) + " |",
        "|---|" + "---:|" * len(models),
    ]
    for form in dict.fromkeys(r["form"] for r in rows):
        cells = {r["model"]: r["median_ms"] for r in rows if r["form"] == form}
        base = cells.get("original")
        values = [
            cell(cells.get(m), base if m != "original" else None) if m in cells else "n/a"
            for m in models
        ]
        lines.append(f"| {form} | " + " | ".join(values) + " |")
    best = {b["model"]: b for b in record["best"] if b["part"] == part and b["threads"] == threads}
    values = [
        f"{best[m]['median_ms']:.0f} ({best[m]['form']}"
        + (f", **{best[m]['speedup']:.2f}x**)" if m != "original" else ")")
        for m in models
        if m in best
    ]
    lines.append("| **best form** | " + " | ".join(values) + " |")
    values = [
        f"{best[m]['fastest_ms']:.0f}"
        + (f" ({best[m]['speedup_fastest']:.2f}x)" if m != "original" else "")
        for m in models
        if m in best and "fastest_ms" in best[m]
    ]
    if values:
        lines.append("| fastest round, any form | " + " | ".join(values) + " |")
    return lines


def cell(value: float, base) -> str:
    return f"{value:.0f}" + (f" ({base / value:.2f}x)" if base else "")


def stage_table(rows: Sequence[Mapping], threads: int) -> List[str]:
    staged = [r for r in rows if r["threads"] == threads and r.get("stages_ms")]
    if not staged:
        return []
    lines = [
        f"**Whole model by stage, {threads} thread(s), ms**",
        "",
        "| model | form | " + " | ".join(STAGES) + " | total |",
        "|---|---|" + "---:|" * (len(STAGES) + 1),
    ]
    for r in staged:
        values = [f"{r['stages_ms'][s]:.0f}" for s in (*STAGES, "total")]
        lines.append(f"| {r['model']} | {r['form']} | " + " | ".join(values) + " |")
    return lines


def target_line(target: Mapping) -> str:
    measured = target["measured"]
    shown = "not measured" if measured is None else f"{measured:.2f}x"
    verdict = "met" if target["met"] else "NOT met"
    return (
        f"Target: whole model, {target['model']} plan, {target['threads']} thread, best form "
        f"against the original's best form >= {target['speedup']}x: measured {shown}, {verdict}."
    )


def plot_stages(rows: Sequence[Mapping], path: str) -> None:
    """Stacked horizontal bars: the whole model's stages (median ms) per model, eager form, one
    panel per thread count; written to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    staged = [r for r in rows if r.get("stages_ms") and r["form"] == "eager"]
    thread_counts = sorted({r["threads"] for r in staged}) or [1]
    figure, axes = plt.subplots(
        len(thread_counts), 1, figsize=(9, 1.2 + 1.1 * max(3, len(staged))), squeeze=False
    )
    for ax, threads in zip(axes[:, 0], thread_counts):
        cells = [r for r in staged if r["threads"] == threads]
        for i, r in enumerate(cells):
            left = 0.0
            for j, stage in enumerate(STAGES):
                width = r["stages_ms"][stage]
                ax.barh(i, width, left=left, color=f"C{j}", label=stage if i == 0 else None)
                left += width
        ax.set_yticks(range(len(cells)))
        ax.set_yticklabels([r["model"] for r in cells])
        ax.invert_yaxis()
        ax.set_xlabel("ms (median)")
        ax.set_title(f"whole model, eager, {threads} thread(s)", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=7, ncol=len(STAGES), loc="lower right")
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)
