"""The demo's timings: backbone and whole detector of every final model, interleaved, and the same
plans' structures on a full-width VGG-16 (where convs are compute-bound)."""

from __future__ import annotations

import copy
from typing import Dict, Mapping

import torch
from detectron2.data import DatasetMapper

from ...detection.loaders import detection_dataset_dicts
from ...models.vgg import vgg16_features
from ...nn.network import apply_plan
from ...plan import Plan, conv_entries
from ...utils.timing import machine, measure_many

FULL_WIDTH_INPUT = (224, 224)  # the paper's single view


def timing_input(cfg) -> dict:
    """The first test image as the detector takes it (``DatasetMapper``: resized, with its
    precomputed proposals if the detector takes them): what every latency of the demo is measured
    on."""
    dicts = detection_dataset_dicts(
        list(cfg.DATASETS.TEST),
        filter_empty=False,
        proposal_files=list(cfg.DATASETS.PROPOSAL_FILES_TEST) or None,
    )
    return DatasetMapper(cfg, is_train=False)(copy.deepcopy(dicts[0]))


def measure_detectors(models: Mapping[str, tuple], item: dict, options) -> Dict[str, dict]:
    """Latency of each final model's backbone and whole detector on ``item``
    (:func:`timing_input`; precomputed proposals given, so selective search is not included),
    interleaved across models. ``models``: name → (config, model, plan path or None)."""
    cfg0, model0, _ = next(iter(models.values()))
    inputs = [item]
    image = model0.preprocess_image(inputs).tensor
    settings = dict(
        warmup=options.latency_warmup,
        repeats=options.latency_repeats,
        threads=options.latency_threads,
    )
    backbone = measure_many(
        {n: (lambda m=m: m.backbone(image)) for n, (_, m, _) in models.items()}, **settings
    )
    detector = measure_many(
        {n: (lambda m=m: m(inputs)) for n, (_, m, _) in models.items()}, **settings
    )
    result = {
        n: {
            "backbone": backbone[n],
            "detector": detector[n],
            "threads": options.latency_threads,
            "input_hw": list(image.shape[-2:]),
            "proposals": len(inputs[0].get("proposals", ())),  # 0: the RPN's own
            "machine": machine(),
        }
        for n in models
    }
    if options.full_width_repeats:
        width = cfg0.MODEL.VGG.WIDTH
        full = {}
        for name, (_, _, plan_path) in models.items():
            plan = scale_plan(Plan.read(plan_path), 1.0 / width) if plan_path else None
            features = vgg16_features(1.0)[:-1]
            model = (apply_plan(features, plan) if plan else features).eval()
            # every model in channels_last, oneDNN's fast layout for both (tools/benchmark_speed.py)
            full[name] = model.to(memory_format=torch.channels_last)
        x = torch.randn(1, 3, *FULL_WIDTH_INPUT)
        timed = measure_many(
            {n: (lambda f=f: f(x)) for n, f in full.items()},
            warmup=1,
            repeats=options.full_width_repeats,
            threads=options.latency_threads,
        )
        for n in models:
            result[n]["backbone_full_width"] = dict(
                timed[n],
                input_hw=list(FULL_WIDTH_INPUT),
                note=f"VGG-16 at width 1 with the plan's ranks scaled by {1 / width:g}",
            )
    return result


def scale_plan(plan: Mapping, factor: float) -> dict:
    """The plan's structures for a VGG-16 ``factor`` times wider: channels and ranks d', d''
    scaled (rounded, at least 1). Used to time the same structures where convs are compute-bound."""
    scaled_plan = copy.deepcopy(dict(plan))
    for entry in conv_entries(scaled_plan).values():
        for key in ("in_channels", "out_channels", "rank", "spatial_rank"):
            if entry.get(key) and not (key == "in_channels" and entry[key] == 3):
                entry[key] = max(1, int(round(entry[key] * factor)))
    return scaled_plan
