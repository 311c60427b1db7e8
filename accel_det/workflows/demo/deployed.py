"""The demo's models deployed: each final detector exported to ONNX (checked against PyTorch),
evaluated in ONNX Runtime with the same Detectron2 evaluator, and timed there; the same plans'
structures at full width timed in ONNX Runtime too."""

from __future__ import annotations

import os
from typing import Dict, Mapping

import numpy as np
import torch

from ...deploy.detector import detector_graph
from ...deploy.evaluate import evaluate_exported
from ...deploy.export import Graph, export_graph
from ...deploy.runtime import load_runtime
from ...detection.trainer import save_results
from ...models.vgg import vgg16_features
from ...nn.network import apply_plan
from ...plan import Plan
from ...utils.timing import measure_many
from ..report import eval_ap50
from .latency import FULL_WIDTH_INPUT, scale_plan

FOLDER = "exported"


def export_detector(cfg, model, folder: str) -> str:
    """``model`` as ``folder/exported/detector.onnx``, checked against PyTorch."""
    path = os.path.join(folder, FOLDER, "detector.onnx")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    export_graph(detector_graph(cfg, model), path, "onnx", overwrite=True)
    return path


def exported_ap50(cfg, path: str, folder: str) -> float:
    """AP50 of the exported detector in ONNX Runtime on the test set (``eval_results.json`` next
    to it)."""
    results = evaluate_exported(cfg, path, "onnxruntime")
    save_results(results, os.path.join(folder, FOLDER, "eval_results.json"))
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
