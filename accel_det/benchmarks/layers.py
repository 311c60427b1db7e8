"""Per-layer profiles of the backbone (:func:`layer_profile`: which layers are furthest from their
FLOP ratio; :func:`leaf_time_profile`: conv against ReLU / max-pool time) and the per-stage
breakdown of the detector (Fast R-CNN's Fig. 2).

A layer's time in eager PyTorch is the median of its convs run alone on their own inputs
(:func:`accel_det.utils.timing.time_chain`); in ONNX Runtime it is the kernel time its profiler
records for each Conv node (the k-th Conv node executed is the k-th ``nn.Conv2d`` of the module,
the graph being a chain).
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import tempfile
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from ..nn.chain import conv_names
from ..nn.factorized import FactorizedConv2d
from ..utils.timing import measure_many, time_chain
from .forms import conv_leaves
from .macs import layer_macs


def eager_conv_ms(features: nn.Sequential, x: torch.Tensor, threads: int = 1) -> Dict[int, float]:
    """Median milliseconds of each conv layer's convs (channels_last), by layer index."""
    model = copy.deepcopy(features).to(memory_format=torch.channels_last)
    leaves = conv_leaves(model)
    seconds = time_chain(
        [m for _, m in leaves], x.contiguous(memory_format=torch.channels_last), threads=threads
    )
    result: Dict[int, float] = {}
    for (index, module), t in zip(leaves, seconds):
        if isinstance(module, nn.Conv2d):
            result[index] = result.get(index, 0.0) + 1e3 * t
    return result


def onnxruntime_conv_ms(
    path: str, features: nn.Sequential, x: torch.Tensor, threads: int = 1, runs: int = 5
) -> Dict[int, float]:
    """Median milliseconds of each conv layer's Conv nodes in ONNX Runtime's profile of ``runs``
    calls of the exported ``features`` (at ``path``), by layer index."""
    import onnxruntime as ort

    owners = [index for index, module in conv_leaves(features) if isinstance(module, nn.Conv2d)]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as folder:
        options.profile_file_prefix = os.path.join(folder, "profile")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x.numpy()}
        for _ in range(runs + 1):
            session.run(None, feed)
        with open(session.end_profiling()) as handle:
            events = json.load(handle)
    per_run: List[List[float]] = []
    for event in events:
        args = event.get("args", {})
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        if args.get("op_name") not in ("Conv", "FusedConv"):
            continue
        if not per_run or len(per_run[-1]) == len(owners):
            per_run.append([])
        per_run[-1].append(event["dur"] / 1e3)
    runs_done = [r for r in per_run[1:] if len(r) == len(owners)]  # the first run warms up
    result: Dict[int, float] = {}
    for position, index in enumerate(owners):
        value = statistics.median(r[position] for r in runs_done) if runs_done else float("nan")
        result[index] = result.get(index, 0.0) + value
    return result


def layer_profile(
    original: nn.Sequential,
    model: nn.Sequential,
    x: torch.Tensor,
    timings: Mapping[str, tuple],
) -> List[dict]:
    """Per conv layer of ``original``: multiply-adds of it and of ``model``'s replacement, their
    theoretical ratio, and per form in ``timings`` (``form -> (original ms, model ms)`` by layer
    index) the measured ratio and measured / theoretical; worst first (by the lowest ratio over
    the forms)."""
    names = {index: name for name, index in conv_names(original).items()}
    macs0 = layer_macs(original, (x,))
    macs1 = layer_macs(model, (x,))
    rows = []
    for index, name in names.items():
        before = macs0.get(str(index), 0)
        after = sum(v for k, v in macs1.items() if k == str(index) or k.startswith(f"{index}."))
        row = {"layer": name, "macs": before, "macs_model": after, "theoretical": before / after}
        for form, (times0, times1) in timings.items():
            speedup = times0[index] / times1[index]
            row[form] = {
                "original_ms": times0[index],
                "model_ms": times1[index],
                "speedup": speedup,
                "ratio": speedup / row["theoretical"],
            }
        rows.append(row)
    forms = list(timings)
    return sorted(rows, key=lambda r: min(r[f]["ratio"] for f in forms) if forms else 0.0)


def leaf_time_profile(
    model: nn.Sequential, x: torch.Tensor, *, threads: Optional[int] = 1, repeats: int = 5
) -> dict:
    """Median milliseconds of each leaf module (each conv of a factorized layer on its own) on its
    own input, summed into conv and non-conv time (ReLU, max-pool): the speed benchmark's split.
    The factorization leaves the non-conv time as it is, which bounds the actual speedup at r
    times fewer conv multiply-adds: T / (T_conv / r + T_other)."""
    leaves: List[Tuple[str, nn.Module]] = []
    for index, module in enumerate(model):
        if isinstance(module, FactorizedConv2d):
            leaves += [(f"{index}.{name}", child) for name, child in module.named_children()]
        else:
            leaves.append((str(index), module))
    seconds = time_chain([m for _, m in leaves], x, threads=threads, repeats=repeats)
    medians = {name: 1e3 * t for (name, _), t in zip(leaves, seconds)}
    conv = sum(medians[name] for name, module in leaves if isinstance(module, nn.Conv2d))
    other = sum(medians.values()) - conv
    return {"conv_ms": conv, "other_ms": other, "total_ms": conv + other, "layers": medians}


def detector_stages(
    graph: nn.Module, image: torch.Tensor, proposals: torch.Tensor, *, threads: int, repeats: int
) -> Dict[str, dict]:
    """Median latency of each stage of a :class:`~accel_det.deploy.detector.DetectorGraph`
    (backbone in channels_last): backbone (with normalisation), RoI pooling, fc6, fc7, the box
    predictor, and post-processing (class probabilities, box deltas applied, then Detectron2's
    score threshold, per-class NMS and top-k), each on its own input."""
    from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference

    graph = copy.deepcopy(graph)
    graph.backbone.to(memory_format=torch.channels_last)
    head = graph.box_head
    size = tuple(image.shape[1:])
    with torch.inference_mode():
        x = ((image - graph.pixel_mean) / graph.pixel_std).unsqueeze(0)
        feature = graph.backbone(x)[graph.in_feature]
        rois = torch.cat([torch.zeros_like(proposals[:, :1]), proposals], dim=1)
        pooled = graph.pooler(feature, rois)
        y6 = head.relu6(head.fc6(head.flatten(pooled)))
        y7 = head.relu7(head.fc7(y6))
        logits, deltas = graph.box_predictor(y7)

    def post():
        scores = torch.softmax(logits, dim=-1)
        boxes = graph.box_predictor.box2box_transform.apply_deltas(deltas, proposals)
        return fast_rcnn_inference([boxes], [scores], [size], 0.05, 0.5, 100)

    calls = {
        "backbone": lambda: graph.backbone(((image - graph.pixel_mean) / graph.pixel_std)[None]),
        "RoI pooling": lambda: graph.pooler(feature, rois),
        "fc6": lambda: head.relu6(head.fc6(head.flatten(pooled))),
        "fc7": lambda: head.relu7(head.fc7(y6)),
        "predictor": lambda: graph.box_predictor(y7),
        "post-processing": post,
    }
    return measure_many(calls, warmup=1, repeats=repeats, threads=threads)
