"""Detectron2's ``DefaultTrainer`` for accel-det models: VOC evaluation, checked inputs and
weights."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Mapping

from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator

from ..errors import AccelDetError
from ..utils.io import atomic_write_json, json_safe
from .backbone import load_plan
from .checkpoint import REMOTE_PREFIXES, check_weights_fit
from .datasets import check_dataset_layout, dataset_image_ids
from .proposals import check_proposal_file

logger = logging.getLogger(__name__)


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` with a VOC/COCO evaluator by data set type, and ``MODEL.WEIGHTS`` checked
    against the model (:func:`check_weights_fit`) before Detectron2 loads it."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", "")
        if evaluator_type == "pascal_voc":
            return PascalVOCDetectionEvaluator(dataset_name)
        if evaluator_type == "coco":
            return COCOEvaluator(
                dataset_name, output_dir=output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
            )
        raise AccelDetError(
            f"no evaluator for data set {dataset_name!r} (evaluator_type {evaluator_type!r})"
        )

    def resume_or_load(self, resume=True):
        if not (resume and self.checkpointer.has_checkpoint()):
            check_weights_fit(_unwrap(self.model), self.cfg.MODEL.WEIGHTS)
        super().resume_or_load(resume=resume)


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def check_inputs(cfg, train: bool = True) -> None:
    """Fail early, with one clear message, on a missing plan or weights file, a data set folder
    without the VOC layout or a proposal file that misses images (before Detectron2 starts and
    fails deep inside). Whether the weights fit the model is checked when they are loaded."""
    if cfg.MODEL.BACKBONE.NAME == "build_accel_vgg16_backbone":
        load_plan(cfg.MODEL.ACCEL.PLAN)
    weights = cfg.MODEL.WEIGHTS
    if (
        weights
        and not weights.startswith(REMOTE_PREFIXES)
        and not os.path.isfile(os.path.expanduser(weights))
    ):
        raise AccelDetError(f"MODEL.WEIGHTS file not found: {weights}")
    splits = [("TRAIN", cfg.DATASETS.TRAIN, cfg.DATASETS.PROPOSAL_FILES_TRAIN)] if train else []
    splits.append(("TEST", cfg.DATASETS.TEST, cfg.DATASETS.PROPOSAL_FILES_TEST))
    for which, names, proposal_files in splits:
        for name in names:
            check_dataset_layout(name)
        if cfg.MODEL.LOAD_PROPOSALS:
            if len(proposal_files) != len(names):
                raise AccelDetError(
                    f"MODEL.LOAD_PROPOSALS is on, but DATASETS.PROPOSAL_FILES_{which} has "
                    f"{len(proposal_files)} files for {len(names)} data sets in DATASETS.{which}"
                )
            for name, path in zip(names, proposal_files):
                check_proposal_file(path, dataset_image_ids(name), name)


def by_dataset(cfg, results: Mapping) -> Mapping:
    """Evaluation results keyed by data set name (Detectron2 drops the key when there is one)."""
    if results and "bbox" in results and len(cfg.DATASETS.TEST) == 1:
        return OrderedDict([(cfg.DATASETS.TEST[0], results)])
    return results


def save_results(results: Mapping, path: str) -> None:
    """Write Detectron2's evaluation results as JSON (numbers made plain floats)."""
    atomic_write_json(json_safe(results), path)
