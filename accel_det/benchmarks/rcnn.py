"""Speed of a Detectron2 R-CNN (R50-FPN Faster R-CNN by default) accelerated as a whole (backbone,
RPN head, box head under one budget) to 2× and 3×: ``run(RcnnBenchOptions(...))``, what
tools/benchmark_rcnn.py runs.

Timed, at the test size (800×1333 by default): the backbone + FPN in every form and the whole
model (pre-processing to detections) in every form (:mod:`.rcnn_forms`), the original and one
model per plan (:mod:`.rcnn_models`: random weights with realistic batch-norm statistics; plans
from sampled eigenvalues; timing only), with one thread and with all threads. Calls are
interleaved round by round (``accel_det.utils.timing``'s rule), each number is the median of
``repeats`` rounds; a model's speedup is the original's best form over its best form (each
model in its own fastest form), medians of one run. The whole model's eager forms are split into
stages (pre-processing, backbone, FPN, RPN, RoI heads, post-processing).

Writes the JSON record at ``output``, and next to it ``.md`` (the tables) and ``.png`` (stage
bars); exported backbones go to ``<output stem>_exports/``.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Sequence, Tuple

import torch

from ..deploy.backbone import backbone_graph
from ..deploy.export import export_graph, relative_difference
from ..deploy.runtime import load_runtime, one_line
from ..errors import AccelDetError
from ..utils.io import atomic_path, atomic_write_json, atomic_write_text
from ..utils.timing import machine, num_threads
from ..workflows.detector_compression.backbone import padded
from .plans import plan_summary
from .rcnn_forms import (
    BACKBONE_FORMS,
    MODEL_FORMS,
    STAGES,
    backbone_call,
    model_call,
)
from .rcnn_models import accelerated_detector, detector_plans, inference_macs, random_detector
from .rcnn_report import markdown, plot_stages

logger = logging.getLogger(__name__)
QUICK_HW = (320, 427)
TARGET = {"part": "model", "threads": 1, "model": "2x", "speedup": 1.8}


@dataclass
class RcnnBenchOptions:
    output: str  # the JSON record; .md and .png next to it
    config_file: str = "faster_rcnn_R_50_FPN.yaml"
    opts: List[str] = field(default_factory=list)
    input_hw: Tuple[int, int] = (800, 1333)
    speedups: Tuple[float, ...] = (2.0, 3.0)
    method: str = "asym"
    threads: Tuple[int, ...] = (1, 0)  # 0: all cores
    repeats: int = 5
    warmup: int = 1
    seed: int = 0
    quick: bool = False  # QUICK_HW, one repeat, no warm-up

    def resolved(self) -> "RcnnBenchOptions":
        """The options ``quick`` stands for applied."""
        if not self.quick:
            return self
        return RcnnBenchOptions(**{**asdict(self), "input_hw": QUICK_HW, "repeats": 1, "warmup": 0})


def output_paths(output: str) -> Dict[str, str]:
    """The record, its Markdown tables and PNG, and the folder of exported backbones."""
    stem = output[:-5] if output.endswith(".json") else output
    return {
        "json": output,
        "md": stem + ".md",
        "png": stem + ".png",
        "exports": stem + "_exports",
    }


def check_options(options: RcnnBenchOptions) -> None:
    """Refuse bad options in one line before anything is built or written."""
    if not options.output.endswith(".json"):
        raise AccelDetError(f"--output must end with .json, got {options.output}")
    folder = os.path.dirname(os.path.abspath(options.output))
    if not os.path.isdir(folder):
        raise AccelDetError(f"output folder {folder} does not exist")
    if options.repeats < 1 or options.warmup < 0:
        raise AccelDetError("--repeats must be >= 1 and --warmup >= 0")
    if any(not s > 1 for s in options.speedups):
        raise AccelDetError(f"every --speedups value must be > 1, got {list(options.speedups)}")
    if any(t < 0 for t in options.threads) or not options.threads:
        raise AccelDetError(f"--threads must be >= 0 (0: all cores), got {list(options.threads)}")


def run(options: RcnnBenchOptions) -> dict:
    """Build, export and time (see the module's docstring); returns the record it writes."""
    check_options(options)
    options = options.resolved()
    paths = output_paths(options.output)
    os.makedirs(paths["exports"], exist_ok=True)
    started = time.time()
    cfg, original = random_detector(options.config_file, options.opts, options.seed)
    backbone_hw = padded(options.input_hw, original.backbone)
    logger.info("plans for %s at %s", options.speedups, backbone_hw)
    solved = detector_plans(
        original, options.speedups, backbone_hw, method=options.method, seed=options.seed
    )
    plans = solved.plans
    models = {"original": original}
    models.update({name: accelerated_detector(original, solved, name) for name in plans})
    image = test_image(options.input_hw, options.seed)
    with torch.no_grad():
        normalized = original.preprocess_image([{"image": image}]).tensor
    exports = {name: export_backbone(name, m, normalized, paths) for name, m in models.items()}
    rows, unavailable = [], {}
    for threads in options.threads:
        rows += time_threads(models, exports, image, normalized, threads, options, unavailable)
    record = {
        "benchmark": "rcnn",
        "options": asdict(options),
        "config": {"file": options.config_file, "opts": list(options.opts)},
        "backbone_input_hw": list(backbone_hw),
        "machine": {**machine(), "load_average": list(os.getloadavg())},
        "plans": {name: plan_summary(plan) for name, plan in plans.items()},
        "macs": {name: inference_macs(m, image) for name, m in models.items()},
        "exports": exports,
        "unavailable": unavailable,
        "rows": rows,
        "best": best_forms(rows),
        "seconds": time.time() - started,
        "note": "random weights (timing only): plans from eigenvalues sampled on random images",
    }
    record["target"] = target_check(record["best"])
    write_outputs(record, paths)
    return record


def test_image(input_hw: Tuple[int, int], seed: int) -> torch.Tensor:
    """A random 3×H×W image of 0-255 pixel values, already at its test size."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, *input_hw), generator=generator).float()


def export_backbone(name: str, model, normalized: torch.Tensor, paths: Dict[str, str]) -> dict:
    """Export ``model.backbone`` to ONNX (checked in ONNX Runtime by ``export_graph``) and check
    the same file in OpenVINO; returns the path and both largest relative differences."""
    path = os.path.join(paths["exports"], f"backbone_{name}.onnx")
    sample = [(normalized,)]
    graph = backbone_graph(model.backbone, normalized.shape[-2:], samples=sample)
    logger.info("exporting the %s backbone to %s", name, path)
    result = export_graph(graph, path, "onnx", overwrite=True)
    with torch.no_grad():
        expected = graph.module(normalized)
    got = load_runtime(path, "openvino", 0)(normalized)
    openvino = max(relative_difference(g, e.numpy()) for g, e in zip(got, expected))
    return {"path": path, "onnxruntime": result.max_difference, "openvino": openvino}


def time_threads(models, exports, image, normalized, threads, options, unavailable) -> List[dict]:
    """Every (part, model, form) timed at ``threads`` (0: all cores), interleaved round by
    round; one row each."""
    count = threads or os.cpu_count() or 1
    calls, timers = {}, {}
    with num_threads(count):
        for name, model in models.items():
            onnx_path = exports[name]["path"]
            for form in BACKBONE_FORMS:
                calls[("backbone", name, form)] = backbone_call(
                    form, model.backbone, normalized, threads=count, onnx_path=onnx_path
                )
            for form in MODEL_FORMS:
                try:
                    call, timer = model_call(form, model, image, threads=count, onnx_path=onnx_path)
                except Exception as error:  # detectron2's tracing raises many types
                    unavailable[f"model {name} {form}"] = one_line(error)
                    logger.warning("model %s in %s: unavailable (%s)", name, form, one_line(error))
                    continue
                calls[("model", name, form)], timers[("model", name, form)] = call, timer
        seconds, stages = time_rounds(calls, timers, options.warmup, options.repeats)
    return [
        row(key, seconds[key], stages.get(key), count, models[key[1]]) for key in calls
    ]  # fmt: skip


def time_rounds(calls, timers, warmup: int, repeats: int):
    """Seconds of each call per timed round, and its stage timer's seconds per round."""
    seconds = {key: [] for key in calls}
    stages = {key: [] for key, timer in timers.items() if timer is not None}
    with torch.inference_mode():
        for round in range(warmup + repeats):
            logger.info("round %d of %d", round + 1, warmup + repeats)
            for key, call in calls.items():
                start = time.perf_counter()
                call()
                elapsed = time.perf_counter() - start
                if round >= warmup:
                    seconds[key].append(elapsed)
                    if key in stages:
                        stages[key].append(dict(timers[key].last))
    return seconds, stages


def row(key, seconds: Sequence[float], stages, threads: int, model) -> dict:
    part, name, form = key
    result = {
        "part": part,
        "model": name,
        "form": form,
        "threads": threads,
        "median_ms": 1000 * statistics.median(seconds),
        "min_ms": 1000 * min(seconds),
        "times_ms": [1000 * s for s in seconds],
    }
    if stages:
        result["stages_ms"] = {
            s: 1000 * statistics.median(r[s] for r in stages) for s in (*STAGES, "total")
        }
    return result


def best_forms(rows: Sequence[dict]) -> List[dict]:
    """Per part, thread count and model: its fastest form (by median), and its speedup, the
    original's best median over its best median; also ``speedup_fastest``, the same ratio of the
    fastest rounds (each model's fastest round in any form), which a loaded machine disturbs
    less."""
    best, fastest = {}, {}
    for r in rows:
        key = (r["part"], r["threads"], r["model"])
        if key not in best or r["median_ms"] < best[key]["median_ms"]:
            best[key] = {"part": r["part"], "threads": r["threads"], "model": r["model"],
                         "form": r["form"], "median_ms": r["median_ms"]}  # fmt: skip
        fastest[key] = min(fastest.get(key, float("inf")), r["min_ms"])
    for (part, threads, model), entry in best.items():
        entry["speedup"] = best[(part, threads, "original")]["median_ms"] / entry["median_ms"]
        entry["fastest_ms"] = fastest[(part, threads, model)]
        entry["speedup_fastest"] = fastest[(part, threads, "original")] / entry["fastest_ms"]
    return list(best.values())


def target_check(best: Sequence[dict]) -> dict:
    """The target: the whole model at the 2× plan, one thread, best form against best form."""
    entry = next(
        (b for b in best if all(b[k] == TARGET[k] for k in ("part", "threads", "model"))), None
    )
    measured = entry["speedup"] if entry else None
    return {**TARGET, "measured": measured, "met": measured is not None and measured >= 1.8}


def write_outputs(record: dict, paths: Dict[str, str]) -> None:
    """The tables (``.md``, also printed), the stage bars (``.png``), then the record."""
    text = markdown(record)
    atomic_write_text(text, paths["md"])
    with atomic_path(paths["png"]) as temporary:
        plot_stages(record["rows"], temporary)
    atomic_write_json(record, paths["json"])
    print(text)
