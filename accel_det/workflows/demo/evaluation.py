"""The demo's detectors: loading a trained Fast R-CNN, evaluating one."""

from __future__ import annotations

import logging

import torch
from detectron2.modeling import build_model

from ...detection.checkpoint import load_detector_weights
from ...detection.trainer import Trainer, by_dataset, save_results
from ..report import eval_ap50

logger = logging.getLogger("accel_det.demo")


def load_model(cfg, weights: str) -> torch.nn.Module:
    """``build_model(cfg)`` in eval mode with ``weights`` checked and loaded."""
    model = build_model(cfg)
    load_detector_weights(model, weights, complete=True)
    return model.eval()


def evaluate(cfg, weights: str, path: str) -> float:
    """AP50 of ``cfg``'s model with ``weights`` on its test set; results written to ``path``."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = weights
    cfg.freeze()
    results = Trainer.test(cfg, load_model(cfg, weights))
    save_results(by_dataset(cfg, results), path)
    return eval_ap50(results)
