"""The runtime-axis benchmark's Markdown tables and its speed targets (printed, never asserted)."""

from __future__ import annotations

from typing import List, Mapping, Sequence

from ..utils.tables import markdown_table
from .runtimes import DESCRIPTIONS, INT8_FORMS, form_precision

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
    ("detector 4x at 2000 RoIs, int8 in its fastest runtime against the original's fastest fp32 "
     "form, 1 thread", "detector", "*", 1, "int8 speedup", 10.0),
    ("detector 4x at 2000 RoIs, int8 against the original's int8 in the same runtime, actual / "
     "theoretical (best runtime), 1 thread", "detector", "*", 1, "int8 ratio", 0.75),
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
    """Best form against best form (the original's fastest fp32 form, or within one precision:
    :func:`~accel_det.benchmarks.runtime_axis.best_by_precision`)."""
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
        if measure.startswith("int8"):
            found = list(int8_measures(rows, count, measure))
        elif measure == "eager":
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


def int8_measures(rows: Sequence[Mapping], count: int, measure: str) -> List[tuple]:
    """(value, model) per whole-detector subject at 2000 RoIs and ``count`` threads: its fastest
    int8 form against the original's fastest fp32 form (``int8 speedup``), or its best int8
    runtime's speedup over the original's int8 in that runtime, over the theoretical one
    (``int8 ratio``)."""
    cell = [
        r for r in rows
        if r["case"].startswith("detector") and "2000 RoIs" in r["case"] and r["threads"] == count
    ]  # fmt: skip
    for case in dict.fromkeys(r["case"] for r in cell):
        here = [r for r in cell if r["case"] == case]
        plain = [r["median_ms"] for r in here if r["model"] == "original"
                 and form_precision(r["form"]) == "fp32"]  # fmt: skip
        models = dict.fromkeys(r["model"] for r in here if "detector" in r["model"])
        for model in models:
            int8 = [r for r in here if r["model"] == model and r["form"] in INT8_FORMS]
            if not int8 or not plain:
                continue
            if measure == "int8 speedup":
                yield min(plain) / min(r["median_ms"] for r in int8), model
            elif all(r.get("ratio") is not None for r in int8):
                yield max(r["ratio"] for r in int8), model


def form_notes(forms: Sequence[str]) -> List[str]:
    return [f"- {f}: {DESCRIPTIONS[f]}" for f in forms if f in DESCRIPTIONS]


def theoretical(rows: Sequence[Mapping], model: str) -> str:
    return f"{next(r['theoretical'] for r in rows if r['model'] == model):.2f}x"
