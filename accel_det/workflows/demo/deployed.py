"""The demo's models deployed: each final detector exported to ONNX (checked against PyTorch),
evaluated in ONNX Runtime with the same Detectron2 evaluator, and timed there; the same plans'
structures at full width timed in ONNX Runtime too. :func:`export_detector` and
:func:`exported_ap50` also make and evaluate the int8 (calibrated on a seeded draw of
``DATASETS.TRAIN``) and bf16 forms of a detector (:mod:`accel_det.deploy.precision`)."""

from __future__ import annotations

import os
from typing import Dict, Mapping, Optional

import numpy as np
import torch

from ...deploy.agreement import Bounds
from ...deploy.detector import detector_graph
from ...deploy.evaluate import evaluate_exported
from ...deploy.export import Graph, export_graph
from ...deploy.runtime import load_runtime, recorded_precision
from ...detection.trainer import save_results
from ...models.vgg import vgg16_features
from ...nn.network import apply_plan
from ...plan import Plan
from ...utils.timing import measure_many
from ..calibration import detector_calibration
from ..report import eval_ap50
from .latency import FULL_WIDTH_INPUT, scale_plan

FOLDER = "exported"
CALIBRATION_IMAGES = 16


def export_detector(
    cfg,
    model,
    folder: str,
    precision: str = "fp32",
    *,
    calibration_images: int = CALIBRATION_IMAGES,
    seed: int = 0,
    bounds: Optional[Bounds] = None,
) -> str:
    """``model`` as ``folder/exported/detector.onnx`` (``detector.int8.onnx``,
    ``detector.bf16.onnx``), checked against PyTorch; an int8 one calibrated on
    ``calibration_images`` images of ``DATASETS.TRAIN`` drawn with ``seed`` (and their
    proposals), and a reduced-precision one refused outside ``bounds`` of agreement with float32
    (:class:`~accel_det.deploy.agreement.Bounds`; default: the tool's)."""
    name = "detector.onnx" if precision == "fp32" else f"detector.{precision}.onnx"
    path = os.path.join(folder, FOLDER, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    calibration, drawn = None, None
    if precision == "int8":
        calibration, drawn = detector_calibration(cfg, calibration_images, seed=seed)
    export_graph(
        detector_graph(cfg, model), path, "onnx", overwrite=True, precision=precision,
        calibration=calibration, calibration_record=drawn, bounds=bounds,
    )  # fmt: skip
    return path


def exported_ap50(cfg, path: str, folder: str) -> float:
    """AP50 of the exported detector on the test set in the runtime and precision its record
    names (float32 and int8 ``.onnx``: ONNX Runtime; bf16: OpenVINO); results in
    ``eval_results.json`` next to it (``eval_results.int8.json``, ...)."""
    precision = recorded_precision(path)
    results = evaluate_exported(cfg, path)
    name = "eval_results.json" if precision == "fp32" else f"eval_results.{precision}.json"
    save_results(results, os.path.join(folder, FOLDER, name))
    return eval_ap50(results)


def deployed_latency(
    paths: Mapping[str, str], item: dict, plans: Mapping[str, str], width: float, options
) -> Dict[str, dict]:
    """ONNX Runtime latency of each exported detector on the demo's timing image and proposals,
    and of the plans' structures on a full-width VGG-16 (conv layers, 224×224), interleaved."""
    image = item["image"].to(torch.float32).numpy()
    proposals = item["proposals"].proposal_boxes.tensor.to(torch.float32).numpy()
    threads = options.latency_threads
    runtimes = {name: load_runtime(path, "onnxruntime", threads) for name, path in paths.items()}
    settings = dict(warmup=options.latency_warmup, repeats=options.latency_repeats, threads=threads)
    calls = {n: (lambda r=r: r(image, proposals)) for n, r in runtimes.items()}
    detector = measure_many(calls, **settings)
    result = {name: {"detector": detector[name]} for name in paths}
    if options.full_width_repeats:
        x = np.random.default_rng(0).standard_normal((1, 3, *FULL_WIDTH_INPUT)).astype(np.float32)
        full = {}
        for name, plan_path in plans.items():
            features = vgg16_features(1.0)[:-1]
            if plan_path:
                features = apply_plan(features, scale_plan(Plan.read(plan_path), 1.0 / width))
            path = os.path.join(os.path.dirname(paths[name]), "full_width_backbone.onnx")
            graph = Graph(features.eval(), [(torch.from_numpy(x),)], ["images"], ["features"])
            export_graph(graph, path, "onnx", overwrite=True)
            full[name] = load_runtime(path, "onnxruntime", threads)
        calls = {n: (lambda r=r: r(x)) for n, r in full.items()}
        timed = measure_many(calls, warmup=1, repeats=options.full_width_repeats, threads=threads)
        for name in plans:
            result[name]["backbone_full_width"] = timed[name]
    return result
