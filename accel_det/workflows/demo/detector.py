"""The demo's detector at work: loading a trained Fast R-CNN, the training images as its backbone
sees them, and compressing its backbone with the solver."""

from __future__ import annotations

import copy
import logging
import os
import time
from typing import List

import numpy as np
import torch
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.modeling import build_model

from ...detection.checkpoint import load_detector_weights
from ...detection.trainer import Trainer, by_dataset, save_results
from ...solver import compress
from ...utils.io import atomic_torch_save
from ..report import eval_ap50

logger = logging.getLogger("accel_det.demo")


def load_model(cfg, weights: str) -> torch.nn.Module:
    """``build_model(cfg)`` in eval mode with ``weights`` checked and loaded."""
    model = build_model(cfg)
    load_detector_weights(model, weights)
    return model.eval()


def detector_batches(
    cfg, model, dataset: str, num_images: int, seed: int, batch_size: int = 16
) -> List[torch.Tensor]:
    """``num_images`` training images (drawn with ``seed``) exactly as the detector's backbone sees
    them at test time (Detectron2's test-time resize, ``INPUT.FORMAT``, ``(x - MODEL.PIXEL_MEAN) /
    MODEL.PIXEL_STD``), centre-cropped to a square of the short side so that they stack into
    N×3×S×S batches of ``batch_size`` (the solver samples responses at random positions)."""
    dicts = DatasetCatalog.get(dataset)
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(dicts), size=min(num_images, len(dicts)), replace=False))
    mapper = DatasetMapper(cfg, is_train=False)
    images = []
    with torch.no_grad():
        for index in chosen:
            record = copy.deepcopy(dicts[index])
            record.pop("annotations", None)
            x = model.preprocess_image([mapper(record)]).tensor.cpu()
            side = min(x.shape[-2:])
            top, left = (x.shape[-2] - side) // 2, (x.shape[-1] - side) // 2
            images.append(x[..., top : top + side, left : left + side])
    side = min(x.shape[-1] for x in images)
    images = [x[..., :side, :side] for x in images]
    return [torch.cat(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]


def compress_backbone(
    model,
    batches,
    speedup: float,
    options,
    plan_path: str,
    weights_path: str,
    accel_cfg,
    weights: str,
) -> dict:
    """Compress the backbone of the trained detector ``model`` with the solver, save the plan and
    the accelerated detector (heads unchanged), and evaluate it before fine-tuning."""
    start = time.perf_counter()
    result = compress(
        model.backbone.features,
        batches,
        speedup=speedup,
        method=options.method,
        samples_per_image=options.samples_per_image,
        seed=options.seed,
        progress=options.progress,
        input_hw=tuple(batches[0].shape[-2:]),
    )  # MACs counted at the solver's input size
    seconds = time.perf_counter() - start
    plan = result.plan
    plan["source"] = {
        "detector": os.path.abspath(weights),
        "images": (
            f"{sum(len(b) for b in batches)} training images of synthetic_voc_trainval, "
            f"preprocessed as the detector's input (test-time resize, INPUT.FORMAT, "
            f"PIXEL_MEAN/STD), centre-cropped square"
        ),
    }
    plan.write(plan_path)

    state = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    state.update({f"backbone.features.{k}": v for k, v in result.model.state_dict().items()})
    atomic_torch_save(
        {"model": state, "__author__": "accel-det demo (compressed, not fine-tuned)"}, weights_path
    )

    accel_cfg = accel_cfg.clone()
    accel_cfg.MODEL.WEIGHTS = weights_path
    accel_cfg.freeze()
    accelerated = load_model(accel_cfg, weights_path)
    results = Trainer.test(accel_cfg, accelerated)
    save_results(
        by_dataset(accel_cfg, results),
        os.path.join(os.path.dirname(plan_path), "eval_before_ft.json"),
    )
    ap50 = eval_ap50(results)
    logger.info("%gx: compressed in %.0fs, AP50 before fine-tuning %.1f", speedup, seconds, ap50)
    return {
        "theoretical_speedup": plan["theoretical_speedup"],
        "ap50": ap50,
        "seconds": seconds,
        "plan": plan_path,
        "weights": weights_path,
    }
