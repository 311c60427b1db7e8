"""The speed benchmark's tables (Markdown) and the paper's reference numbers."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from ..utils.tables import markdown_table
from .subjects import ORIGINAL_NAME


def _g(macs: Optional[int]) -> str:
    return "-" if macs is None else f"{macs / 1e9:.1f}"


def grid_table(rows: Sequence[Mapping]) -> str:
    """The grid as a Markdown table."""
    header = [
        "case",
        "model",
        "GMACs (ours)",
        "fvcore",
        "theor. (conv)",
        "theor. (all MACs)",
        "median ms",
        "actual speedup",
        "actual / theor.",
    ]
    body = []
    for r in rows:
        if r.get("fvcore_macs") is None:
            agree = "-"
        elif r["fvcore_macs"] == r["macs"]:
            agree = "="
        else:
            agree = f"{_g(r['fvcore_macs'])} ({100 * (r['fvcore_macs'] / r['macs'] - 1):+.2f}%)"
        base = r["model"] == ORIGINAL_NAME
        body.append(
            [
                f"{r['part']} {r['input_hw'][0]}x{r['input_hw'][1]} b{r['batch']}"
                + (f" {r['dtype']}" if r["dtype"] != "float32" else "")
                + (f" ({r['variant']})" if r.get("variant") else ""),
                r["model"],
                _g(r["macs"]),
                agree,
                "1.00x" if base else f"{r['theoretical_speedup_conv']:.2f}x",
                "1.00x" if base else f"{r['theoretical_speedup_all']:.2f}x",
                f"{r['median_ms']:.1f}",
                "1.00x" if base else f"{r['actual_speedup']:.2f}x",
                "-" if base else f"{r['ratio']:.2f}",
            ]
        )
    return markdown_table(header, body, align="ll" + "r" * (len(header) - 2))


def lever_table(rows: Sequence[Mapping], families: Sequence[str]) -> str:
    """The levers as a Markdown table: actual speedup (actual / theoretical) per family."""
    header = ["lever"] + [f"{f}: actual (actual / theor.)" for f in families]
    body = []
    for row in rows:
        cells = [row["lever"]]
        for family in families:
            cell = row["cells"].get(family)
            cells.append(
                "-"
                if cell is None
                else f"{cell['actual_speedup']:.2f}x ({cell['ratio']:.2f})"
                + (f", {cell['threads']}t" if row["threads"] is None else "")
            )
        body.append(cells)
    return markdown_table(header, body)


def matrix_table(matrix: Mapping) -> str:
    """Median ms of every model × mode × thread count (the raw numbers behind the levers)."""
    modes = matrix["modes"]
    tables = []
    for count, table in matrix["timings"].items():
        header = [f"{count} thread(s): median ms"] + list(modes)
        body = [
            [name] + [f"{timings[m]['median_ms']:.1f}" if m in timings else "-" for m in modes]
            for name, timings in table.items()
        ]
        tables.append(markdown_table(header, body))
    return "\n\n".join(tables)


def paper_reference() -> str:
    """Table 8 / Fig. 7 at 4x for comparison."""
    return (
        "paper (Table 8, VGG-16 4x, 224x224 single view): CPU 3.8x actual (ratio 0.95, one thread, "
        "C++ with SSE), GPU (K40, Caffe) 2.9-3.0x (ratio 0.73-0.75)"
    )


def largest_error(matrix: Mapping) -> float:
    """The largest relative output difference of any timed form against its contiguous model."""
    values = [v for modes in matrix.get("output_check", {}).values() for v in modes.values()]
    return max(values) if values else 0.0


def speed_markdown(record: Mapping, families: Sequence[str]) -> str:
    """``benchmark_speed.md``: the command, the notes, the levers, the grid and the allocator
    lever of a speed benchmark's record."""
    parts = [
        f"# Speed: theoretical vs measured ({record['device']})",
        "",
        f"`{record['command']}`; grid at {record['threads']} torch thread(s), "
        f"OMP_NUM_THREADS={record['omp_num_threads']}; {record['seconds']:.0f} s.",
        "",
    ]
    parts += [f"- {n}" for n in record["notes"]] + [""]
    if "levers" in record:
        parts += [
            "## Levers (backbone, batch 1)",
            "",
            lever_table(record["levers"], families),
            "",
            matrix_table(record["lever_matrix"]),
            "",
        ]
        if "eager_ceiling" in record:
            parts += [
                f"ReLU and max-pool (not factorized) bound the eager form at "
                f"{record['eager_ceiling']['speedup']:.2f}x (actual / theoretical "
                f"{record['eager_ceiling']['ratio']:.2f}).",
                "",
            ]
    parts += ["## Grid", "", grid_table(record["grid"]), ""]
    if "allocator" in record:
        cases = {r["case"] for r in record["allocator"]["rows"]}
        parts += [
            "## Allocator lever",
            "",
            f"`{record['allocator']['setting']}` (glibc), then the same cases again:",
            "",
            grid_table(
                [r for r in record["grid"] if r["case"] in cases] + record["allocator"]["rows"]
            ),
            "",
        ]
    return "\n".join(parts)
