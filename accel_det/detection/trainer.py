"""Detectron2's ``DefaultTrainer`` for accel-det models: VOC evaluation, checked inputs and
weights."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Mapping

import torch
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator
from detectron2.modeling import build_model

from ..errors import AccelDetError
from ..utils.io import atomic_write_json, json_safe
from .accel_heads import check_plan_parts
from .backbone import load_plan
from .checkpoint import (
    REMOTE_PREFIXES,
    AtomicCheckpointer,
    check_weights_fit,
    checkpoint_to_load,
    read_checkpoint_state,
    weights_file,
    weights_not_found,
)
from .checks import check_dataset_files
from .datasets import check_dataset_layout, dataset_images
from .evaluator import VOCDetectionEvaluator, save_records
from .loaders import build_test_loader, build_train_loader
from .proposals import check_proposal_file

logger = logging.getLogger(__name__)


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` with a VOC/COCO evaluator by data set type (VOC: one that keeps the
    per-image detections and gives AP50's bootstrap interval, :class:`VOCDetectionEvaluator`),
    the weights it loads (``MODEL.WEIGHTS``, or on ``--resume`` the last checkpoint) checked
    against the model
    (:func:`check_weights_fit`) first and read as data, checkpoints written atomically
    (:class:`AtomicCheckpointer`), and data loaders that read proposal files as data
    (:mod:`.loaders`)."""

    @classmethod
    def build_train_loader(cls, cfg):
        return build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_test_loader(cfg, dataset_name)

    def build_hooks(self):
        # DefaultTrainer.__init__ makes its checkpointer just before it builds the hooks (the
        # periodic checkpointer takes it): swap in the atomic one here, with the same state
        old = self.checkpointer
        self.checkpointer = AtomicCheckpointer(
            old.model, old.save_dir, save_to_disk=old.save_to_disk, **old.checkpointables
        )
        return super().build_hooks()

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", "")
        if evaluator_type == "pascal_voc":
            return VOCDetectionEvaluator(dataset_name)
        if evaluator_type == "coco":
            return COCOEvaluator(
                dataset_name, output_dir=output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
            )
        raise AccelDetError(
            f"no evaluator for data set {dataset_name!r} (evaluator_type {evaluator_type!r})"
        )

    def resume_or_load(self, resume=True):
        path = checkpoint_to_load(self.checkpointer, self.cfg.MODEL.WEIGHTS, resume)
        check_weights_fit(_unwrap(self.model), path)
        super().resume_or_load(resume=resume)


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def check_inputs(cfg, train: bool = True, resume: bool = False) -> None:
    """Fail early, with one clear message, on a missing plan or weights file, a data set folder
    without the VOC layout, an image that does not decode, a test annotation the evaluator cannot
    read (:mod:`.checks`) or a proposal file that misses images or was made for other images
    (before Detectron2 starts and fails deep inside). Proposal files and ``.pkl`` weights are read
    here with the restricted unpickler, so that a pickle that would run code is refused before
    anything starts (the data loaders and the checkpointer read them as data again:
    :mod:`.loaders`, :class:`AtomicCheckpointer`). The model is built (without memory: on the meta
    device) to check that the plan fits the config and that the weights the run will load
    (``MODEL.WEIGHTS``, or with ``resume`` the last checkpoint of ``OUTPUT_DIR``) fit the model:
    completely when it is only evaluated (not ``train``)."""
    plan = None
    if cfg.MODEL.BACKBONE.NAME.startswith("build_accel_") or cfg.MODEL.ACCEL.PLAN:
        plan = load_plan(cfg.MODEL.ACCEL.PLAN, cfg.MODEL.BACKBONE.NAME)
    if plan is not None:
        check_plan_parts(cfg, plan)
    weights = cfg.MODEL.WEIGHTS
    if weights and not weights.startswith(REMOTE_PREFIXES):
        local = weights_file(weights)  # the file Detectron2 will read
        if not os.path.isfile(local):
            raise weights_not_found(weights)
        if local.endswith(".pkl"):  # refused before Detectron2 starts (its loader reads it too)
            read_checkpoint_state(local)
    check_model_weights(cfg, complete=not train, resume=resume)
    check_data(cfg, train)


def check_model_weights(cfg, complete: bool = False, resume: bool = False) -> None:
    """Build ``cfg``'s model on the meta device (shapes only: the plan checked against the config)
    and check that the weights a run loads fit it (:func:`check_weights_fit`): ``MODEL.WEIGHTS``,
    or with ``resume`` the last checkpoint of ``OUTPUT_DIR`` when there is one."""
    meta = cfg.clone()
    meta.defrost()
    meta.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        model = build_model(meta)
    checkpointer = AtomicCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
    check_weights_fit(model, checkpoint_to_load(checkpointer, cfg.MODEL.WEIGHTS, resume), complete)


def check_data(cfg, train: bool = True) -> None:
    """The data part of :func:`check_inputs`: the VOC layout of every data set of
    ``DATASETS.TRAIN`` (when ``train``) and ``DATASETS.TEST``, its images and test annotations,
    and proposal files that cover them (read as data, before Detectron2 unpickles them)."""
    splits = [("TRAIN", cfg.DATASETS.TRAIN, cfg.DATASETS.PROPOSAL_FILES_TRAIN)] if train else []
    splits.append(("TEST", cfg.DATASETS.TEST, cfg.DATASETS.PROPOSAL_FILES_TEST))
    for which, names, proposal_files in splits:
        for name in names:
            check_dataset_layout(name)
            check_dataset_files(name, evaluated=which == "TEST")
        if cfg.MODEL.LOAD_PROPOSALS:
            if len(proposal_files) != len(names):
                raise AccelDetError(
                    f"MODEL.LOAD_PROPOSALS is on, but DATASETS.PROPOSAL_FILES_{which} has "
                    f"{len(proposal_files)} files for {len(names)} data sets in DATASETS.{which}"
                )
            for name, path in zip(names, proposal_files):
                images = dataset_images(name)
                check_proposal_file(path, [i for i, _ in images], name, images)


def by_dataset(cfg, results: Mapping) -> Mapping:
    """Evaluation results keyed by data set name (Detectron2 drops the key when there is one)."""
    if results and "bbox" in results and len(cfg.DATASETS.TEST) == 1:
        return OrderedDict([(cfg.DATASETS.TEST[0], results)])
    return results


def save_results(results: Mapping, path: str, replace: bool = True) -> None:
    """Write Detectron2's evaluation results as JSON (numbers made plain floats), and the per-image
    detections of a VOC evaluation next to it (:func:`save_records`); without ``replace``, refused
    if ``path`` exists by then (another run wrote it meanwhile)."""
    atomic_write_json(json_safe(results), path, replace)
    save_records(results, path)
