"""The runtime-axis benchmark's Markdown tables and its speed targets (printed, never asserted)."""

from __future__ import annotations

from typing import List, Mapping, Sequence

from ..utils.tables import markdown_table
from .runtimes import DESCRIPTIONS

# (what, case prefix, model family or "*", threads, measure, target)
TARGETS = (
    ("backbone asym 4x, best vs best, 1 thread", "backbone", "asym,", 1, "ratio", 0.90),
    ("backbone asym3d 4x, best vs best, 1 thread", "backbone", "asym3d,", 1, "ratio", 0.85),
    ("detector 4x at 2000 RoIs, eager channels_last, 1 thread", "detector", "*", 1, "eager", 2.5),
    ("detector 4x at 2000 RoIs, fastest runtime, 1 thread", "detector", "*", 1, "speedup", 3.0),
    ("ResNet-50 224x224, asym 2x (ranks x16), best vs best, 1 thread", "resnet50", "asym 2x", 1,
     "speedup", 1.8),
    ("ResNet-50 224x224, asym3d 2x (ranks x16), best vs best, 1 thread", "resnet50",
     "asym3d 2x", 1, "speedup", 1.8),
)  # fmt: skip


def form_tables(rows: Sequence[Mapping]) -> str:
    """Per case and thread count: models down, forms across; the original's median ms, each
    model's speedup over the original in that form and (actual / theoretical)."""
    parts = []
    for case, count in dict.fromkeys((r["case"], r["threads"]) for r in rows):
        cell = [r for r in rows if r["case"] == case and r["threads"] == count]
        forms = list(dict.fromkeys(r["form"] for r in cell))
        body = []
        for model in dict.fromkeys(r["model"] for r in cell):
            line = [
                model if model == "original" else f"{model} (theor. {theoretical(cell, model)})"
            ]
            for form in forms:
                row = next(r for r in cell if r["model"] == model and r["form"] == form)
                line.append(
                    f"{row['median_ms']:,.1f} ms"
                    if model == "original"
                    else f"{row['speedup']:.2f}x ({row['ratio']:.2f})"
                )
            body.append(line)
        parts.append(f"**{case}, {count} thread(s)**\n\n" + markdown_table([""] + forms, body))
    return "\n\n".join(parts)


def best_table(best: Sequence[Mapping]) -> str:
    """Best form against best form."""
    body = [
        [
            r["case"],
            str(r["threads"]),
            r["model"],
            f"{r['theoretical']:.2f}x",
            f"{r['original_ms']:,.1f} ms ({r['original_form']})",
            f"{r['median_ms']:,.1f} ms ({r['form']})",
            f"**{r['speedup']:.2f}x**",
            f"{r['ratio']:.2f}",
        ]
        for r in best
    ]
    header = ["case", "threads", "model", "theor.", "original, best", "model, best", "speedup"]
    return markdown_table(header + ["actual / theor."], body)


def stage_table(stages: Mapping[str, Mapping[str, Mapping]]) -> str:
    """Per detector (columns) the median ms of each stage (rows), with the total."""
    models = list(stages)
    names = list(next(iter(stages.values())))
    body = [[n] + [f"{stages[m][n]['median_ms']:,.1f}" for m in models] for n in names]
    body.append(
        ["**total**"] + [f"{sum(s['median_ms'] for s in stages[m].values()):,.1f}" for m in models]
    )
    return markdown_table(["stage (ms)"] + models, body)


def profile_table(profile: Sequence[Mapping], count: int = 5) -> str:
    """The ``count`` layers furthest below their FLOP ratio, per form: ms of the original layer
    and of its replacement, speedup (actual / theoretical)."""
    forms = [k for k in profile[0] if isinstance(profile[0][k], dict)] if profile else []
    body = []
    for row in profile[:count]:
        line = [row["layer"], f"{row['theoretical']:.2f}x"]
        for form in forms:
            t = row[form]
            line.append(
                f"{t['original_ms']:.1f} -> {t['model_ms']:.1f} ms: "
                f"{t['speedup']:.2f}x ({t['ratio']:.2f})"
            )
        body.append(line)
    return markdown_table(["layer", "theor."] + forms, body)


def target_lines(rows: Sequence[Mapping], best: Sequence[Mapping]) -> List[str]:
    """Each target with what was measured (``-`` where its case was not run)."""
    lines = []
    for what, part, family, count, measure, target in TARGETS:
        if measure == "eager":
            found = [
                (r["speedup"], r["model"])
                for r in rows
                if r["case"].startswith(part)
                and "2000 RoIs" in r["case"]
                and r["threads"] == count
                and r["form"] in ("channels_last", "eager")
                and r["model"] != "original"
                and "detector" in r["model"]
            ]
        else:
            found = [
                (r[measure], r["model"])
                for r in best
                if r["case"].startswith(part)
                and r["threads"] == count
                and (part != "detector" or ("2000 RoIs" in r["case"] and "detector" in r["model"]))
                and (family == "*" or r["model"].startswith(family))
            ]
        # the targets are for compress's default options; plans keeping more layers are shown
        kept = [v for v, m in found if "kept" in m]
        found = [v for v, m in found if "kept" not in m]
        if not found:
            lines.append(f"- {what}: target {target:g}, not measured")
            continue
        worst = min(found)
        verdict = "met" if worst >= target else "NOT met"
        extra = f" (keeping more layers: {min(kept):.2f})" if kept else ""
        lines.append(
            f"- {what}: target {target:g}, measured {worst:.2f} (worst case): {verdict}{extra}"
        )
    return lines


def form_notes(forms: Sequence[str]) -> List[str]:
    return [f"- {f}: {DESCRIPTIONS[f]}" for f in forms if f in DESCRIPTIONS]


def theoretical(rows: Sequence[Mapping], model: str) -> str:
    return f"{next(r['theoretical'] for r in rows if r['model'] == model):.2f}x"
