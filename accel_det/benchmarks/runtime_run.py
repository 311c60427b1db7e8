"""The runtime-axis speed benchmark from start to end: backbone at each input size, torchvision
ResNets (original against the solver's 2x and 3x plans), the whole detector at each RoI count,
each in every form at each thread count; best against best; the per-layer profile of the layers
furthest from their FLOP ratio; the detector's stages. Writes ``benchmark_runtimes.json`` and
``benchmark_runtimes.md`` (and the plans, the ONNX files) to the output folder."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import List, Sequence, Tuple

import torch
from torch import nn

from ..deploy.detector import DetectorGraph, sample_inputs
from ..deploy.export import dynamic_dim
from ..plan import Plan
from ..solver.options import SolverOptions
from ..utils.io import atomic_write_json, atomic_write_text, json_safe
from ..utils.timing import device_name, machine
from . import runtime_tables as tables
from .fast_rcnn import random_detector
from .layers import detector_stages, eager_conv_ms, layer_profile, onnxruntime_conv_ms
from .macs import features_macs
from .plans import plan_summary
from .plots import plot_runtime_speedups
from .runtime_axis import best_against_best, best_by_precision, file_stem, time_case
from .runtimes import forms_for
from .subjects import (
    Subject,
    backbone_eigenvalues,
    backbone_subjects,
    detector_plan,
    resnet_subjects,
)

FORMAT = "accel-det-runtimes/1"
logger = logging.getLogger(__name__)


@dataclasses.dataclass
class RuntimeBenchmarkOptions:
    output: str = "output/benchmark_runtimes"
    width: float = 1.0
    speedup: float = 4.0
    round_ranks: int = 16
    backbone_sizes: Sequence[Tuple[int, int]] = ((224, 224), (600, 1000))
    detector_size: Tuple[int, int] = (600, 1000)
    rois: Sequence[int] = (2000, 300)
    threads: Sequence[int] = (1, 0)  # 0: all cores
    forms: Sequence[str] = ()
    detector_forms: Sequence[str] = (
        "channels_last",
        "torchscript",
        "onnxruntime",
        "openvino",
        "openvino bf16",
        "onnxruntime int8",
        "openvino int8",
    )
    device: str = "cpu"
    seconds: float = 20.0
    unrounded: bool = True  # also the plans as solved, at the first backbone size
    skip: Sequence[str] = ("conv1_1",)  # compress's default
    also_keep: Sequence[str] = ("conv1_2",)  # plans that keep these layers too
    plans: Sequence[Tuple[str, str]] = ()  # (name, path) of backbone plans made elsewhere
    detector_plans: Sequence[Tuple[str, str]] = ()  # (name, path) of whole-detector plans
    detector: bool = True
    resnets: Sequence[str] = ("resnet50",)  # torchvision ResNets timed whole (logits)
    resnet_size: Tuple[int, int] = (224, 224)
    resnet_speedups: Sequence[float] = (2.0, 3.0)
    profile: bool = True
    seed: int = 0
    command: str = ""


def thread_counts(requested: Sequence[int]) -> List[int]:
    """The thread counts, 0 read as all cores (duplicates dropped)."""
    counts = [int(t) or (os.cpu_count() or 1) for t in requested]
    return sorted(set(counts), key=counts.index)


def run(options: RuntimeBenchmarkOptions, progress=print) -> dict:
    """Run the benchmark, print its tables, write its record; returns the record."""
    started = time.perf_counter()
    device = torch.device(options.device)
    forms = forms_for(device, options.forms)
    detector_forms = (
        forms if device.type == "cuda" else [f for f in options.detector_forms if f in forms]
    )
    threads = thread_counts(options.threads) if device.type == "cpu" else [1]
    folder = options.output
    exported = os.path.join(folder, "onnx")
    os.makedirs(exported, exist_ok=True)
    rows, profiles, stages, plans = [], {}, {}, {}
    eigenvalues = (
        backbone_eigenvalues(options.width, seed=options.seed) if options.backbone_sizes else None
    )
    given = {name: Plan.read(path) for name, path in options.plans}
    for number, size in enumerate(options.backbone_sizes):
        subjects = backbone_subjects(
            options.width,
            tuple(size),
            speedup=options.speedup,
            round_to=options.round_ranks,
            unrounded=options.unrounded and number == 0,
            skip=options.skip,
            also_keep=options.also_keep,
            extra_plans=given,
            eigenvalues=eigenvalues,
            seed=options.seed,
        )
        case = f"backbone {size[0]}x{size[1]}"
        for subject in subjects[1:]:
            plans[f"{case}: {subject.name}"] = subject.plan
        x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(options.seed))
        dims = ({2: dynamic_dim("height", 32), 3: dynamic_dim("width", 32)},)
        progress(f"{case}: {', '.join(s.name for s in subjects)} in {', '.join(forms)}")
        where = os.path.join(exported, file_stem(case))
        os.makedirs(where, exist_ok=True)
        rows += time_case(
            case, subjects, (x,), forms=forms, threads=threads, folder=where,
            seconds=options.seconds, device=device, dynamic_shapes=dims,
            names=(["images"], ["features"]), progress=progress,
        )  # fmt: skip
        if options.profile and device.type == "cpu":
            profiles[case] = backbone_profile(subjects, x, where, threads[0])
    for arch in options.resnets:
        resnet_rows, resnet_plans = resnet_benchmark(arch, options, forms, threads, exported,
                                                     device, progress)  # fmt: skip
        rows += resnet_rows
        plans.update(resnet_plans)
    if options.detector:
        detector_rows, stages, detector_plans = detector_benchmark(
            options, detector_forms, threads, exported, device, progress
        )
        rows += detector_rows
        plans.update(detector_plans)
    best = best_against_best(rows)
    record = {
        "best_by_precision": best_by_precision(rows),
        "format": FORMAT,
        "command": options.command,
        "device": device_name(device),
        "machine": machine(device),
        "options": dataclasses.asdict(options),
        "threads": threads,
        "rows": rows,
        "best": best,
        "profiles": profiles,
        "stages": stages,
        "plans": {
            name: {
                **plan_summary(plan),
                "theoretical_speedup_network": plan.get("theoretical_speedup_network"),
            }
            for name, plan in plans.items()
        },
        "seconds": time.perf_counter() - started,
    }
    # the float32 targets read float32 forms only; the int8 ones read the rows
    fp32 = [b for b in record["best_by_precision"] if b["precision"] == "fp32"]
    record["targets"] = tables.target_lines(rows, fp32)
    markdown = report(record, forms)
    progress("\n" + markdown)
    atomic_write_json(json_safe(record), os.path.join(folder, "benchmark_runtimes.json"))
    atomic_write_text(markdown, os.path.join(folder, "benchmark_runtimes.md"))
    plot_runtime_speedups(rows, os.path.join(folder, "benchmark_runtimes.png"), threads[0])
    os.makedirs(os.path.join(folder, "plans"), exist_ok=True)
    for name, plan in plans.items():
        atomic_write_json(json_safe(plan), os.path.join(folder, "plans", file_stem(name) + ".json"))
    return record


def backbone_profile(subjects: Sequence[Subject], x, folder: str, threads: int) -> dict:
    """Per accelerated subject, its conv layers worst first against their FLOP ratio, in eager
    channels_last and in ONNX Runtime."""
    original = subjects[0]
    path0 = os.path.join(folder, f"{file_stem(original.name)}.onnx")
    times0 = {"channels_last": eager_conv_ms(original.module, x, threads)}
    if os.path.isfile(path0):
        times0["onnxruntime"] = onnxruntime_conv_ms(path0, original.module, x, threads)
    result = {}
    for subject in subjects[1:]:
        path = os.path.join(folder, f"{file_stem(subject.name)}.onnx")
        timings = {
            "channels_last": (times0["channels_last"], eager_conv_ms(subject.module, x, threads))
        }
        if "onnxruntime" in times0 and os.path.isfile(path):
            ort = onnxruntime_conv_ms(path, subject.module, x, threads)
            timings["onnxruntime"] = (times0["onnxruntime"], ort)
        result[subject.name] = layer_profile(original.module, subject.module, x, timings)
    return result


def resnet_benchmark(arch, options, forms, threads, folder, device, progress):
    """A torchvision ResNet (batch norms folded) against the solver's plans at each of
    ``options.resnet_speedups``, whole (images -> logits), in every form at each thread count."""
    size = tuple(options.resnet_size)
    subjects = resnet_subjects(arch, size, speedups=options.resnet_speedups,
                               round_to=options.round_ranks, seed=options.seed)  # fmt: skip
    case = f"{arch} {size[0]}x{size[1]}"
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(options.seed))
    progress(f"{case}: {', '.join(s.name for s in subjects)} in {', '.join(forms)}")
    where = os.path.join(folder, file_stem(case))
    os.makedirs(where, exist_ok=True)
    rows = time_case(
        case, subjects, (x,), forms=forms, threads=threads, folder=where, seconds=options.seconds,
        device=device, names=(["images"], ["logits"]), progress=progress,
    )  # fmt: skip
    return rows, {f"{case}: {s.name}": s.plan for s in subjects[1:]}


def detector_benchmark(options, forms, threads, folder, device, progress):
    """The detectors (original; the whole detector at the speedup; plans given) timed at each RoI
    count, and their stages at one thread."""
    size, top = tuple(options.detector_size), max(options.rois)
    opts = ["MODEL.VGG.WIDTH", options.width]
    _, original = random_detector("vgg16_voc.yaml", opts, options.seed)
    generator = torch.Generator().manual_seed(options.seed)
    images = torch.stack([sample_inputs(*size, 1, generator)[0] for _ in range(4)])
    images = (images - original.pixel_mean) / original.pixel_std
    solver = SolverOptions(
        speedup=options.speedup, method="asym3d", skip=tuple(options.skip),
        round_ranks_to=options.round_ranks, seed=options.seed,
    )  # fmt: skip
    plans = {
        f"detector {options.speedup:g}x (asym3d + fc asym)": detector_plan(
            original, size, top, solver, images
        ),
    }
    subjects = [Subject("original", DetectorGraph(original).eval(), 0)]
    files = {name: path for name, path in options.detector_plans}
    plans.update({name: Plan.read(path) for name, path in files.items()})
    for name, plan in plans.items():
        path = files.get(name) or os.path.join(folder, file_stem(name) + ".plan.json")
        if name not in files:
            atomic_write_json(json_safe(Plan(plan)), path)
        _, model = random_detector(
            "accel_vgg16_voc.yaml", opts + ["MODEL.ACCEL.PLAN", path], options.seed
        )
        subjects.append(Subject(name, DetectorGraph(model).eval(), 0, plan=plan))
    # multiply-adds: the backbone's at the test size, the box head's and predictor's per RoI
    conv = {s.name: features_macs(s.module.backbone.features, size) for s in subjects}
    fc = {
        s.name: sum(m.weight.numel() for m in s.module.modules() if isinstance(m, nn.Linear))
        for s in subjects
    }
    rows, stages = [], {}
    for rois in options.rois:
        image, proposals = sample_inputs(*size, rois, torch.Generator().manual_seed(rois))
        case = f"detector {size[0]}x{size[1]}, {rois} RoIs"
        for subject in subjects:
            subject.macs = conv[subject.name] + rois * fc[subject.name]
            subject.theoretical = (conv["original"] + rois * fc["original"]) / subject.macs
        progress(f"{case}: {', '.join(s.name for s in subjects)} in {', '.join(forms)}")
        dims = (
            {1: dynamic_dim("height", 32), 2: dynamic_dim("width", 32)},
            {0: dynamic_dim("proposals", 1, 1 << 20)},
        )
        rows += time_case(
            case, subjects, (image, proposals), forms=forms, threads=threads, folder=folder,
            seconds=options.seconds, device=device, dynamic_shapes=dims,
            names=(["image", "proposals"], ["scores", "boxes"]), min_repeats=3, progress=progress,
        )  # fmt: skip
        if device.type == "cpu":
            stages[case] = {
                s.name: detector_stages(s.module, image, proposals, threads=threads[0], repeats=3)
                for s in subjects
            }
    return rows, stages, plans


def report(record: dict, forms: Sequence[str]) -> str:
    """The Markdown report: targets, best against best, every form, profile, stages, notes."""
    parts = [
        f"# Speed in the deployed runtimes ({record['device']})",
        "",
        f"`{record['command']}`; {record['seconds']:.0f} s.",
        "",
        "## Targets",
        "",
        *record["targets"],
        "",
        "## Best form against best form",
        "",
        "Each model's fastest form, any precision, against the original's fastest float32 form.",
        "",
        tables.best_table(record["best"]),
        "",
        "## Best form against best form within each precision",
        "",
        tables.best_table(record["best_by_precision"]),
        "",
        "## Every form (speedup over the original in the same form; actual / theoretical)",
        "",
        tables.form_tables(record["rows"]),
        "",
    ]
    for case, models in record["profiles"].items():
        for model, profile in models.items():
            parts += [
                f"## Layers furthest from their FLOP ratio: {case}, {model}",
                "",
                tables.profile_table(profile),
                "",
            ]
    for case, stages in record["stages"].items():
        parts += [
            f"## Detector stages, {case}, eager channels_last",
            "",
            tables.stage_table(stages),
            "",
        ]
    parts += ["## Plans", ""]
    for name, plan in record["plans"].items():
        ranks = ", ".join(f"{n} {r}" for n, r in plan["ranks"].items())
        parts.append(f"- {name}: d' {ranks}" + (
            f"; d'' {', '.join(f'{n} {r}' for n, r in plan['spatial_ranks'].items())}"
            if plan["spatial_ranks"] else ""
        ))  # fmt: skip
    parts += ["", "## Forms", "", *tables.form_notes(forms), ""]
    parts += [
        "Random He-initialised weights (speed does not depend on them); plans from the "
        "eigenvalues of the random-weight network's responses to generated images; batch 1; "
        "median of interleaved rounds (every model and form of one case and thread count in "
        "each round). The detector graph is image + proposals -> class probabilities + boxes "
        "(Detectron2's score threshold and NMS outside it, in the post-processing stage).",
        "",
    ]
    return "\n".join(parts)
