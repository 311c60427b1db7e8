"""The fine-tuning run of ``tools/finetune_imagenet.py``: start the processes, load the model and
the images, check the labels against the model, and fine-tune (:func:`.finetune.finetune`)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import List, Optional

from tqdm.contrib.logging import logging_redirect_tqdm

from ...data import (
    eval_transform,
    labeled_images,
    preprocessing_record,
    read_class_list,
    train_transform,
)
from ...errors import AccelDetError
from ...models.vgg import load_vgg16, weights_file
from ...utils.dist import init_distributed, shutdown
from ...utils.io import sha256_file
from .finetune import FinetuneConfig, finetune
from .training import check_output

logger = logging.getLogger("accel_det.finetune_imagenet")


@dataclass
class FinetuneOptions:
    """What ``tools/finetune_imagenet.py`` fine-tunes on which images, and where it writes."""

    weights: str
    train: str
    output: str
    config: FinetuneConfig = field(default_factory=FinetuneConfig)
    plan: Optional[str] = None
    train_labels: Optional[str] = None
    val: Optional[str] = None
    val_labels: Optional[str] = None
    classes: Optional[str] = None
    device: str = "auto"
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    stop_after: Optional[int] = None  # test hook: interrupt after this iteration
    command: List[str] = field(default_factory=list)


def load_datasets(options: FinetuneOptions, num_classes: int):
    """The training and (if any) validation images, their labels checked against the model."""
    config = options.config
    classes = read_class_list(options.classes) if options.classes else None
    train_set = labeled_images(
        options.train,
        train_transform(config.augment, config.resize, config.crop),
        options.train_labels,
        classes,
    )
    val_set = None
    if options.val:
        val_set = labeled_images(
            options.val, eval_transform(config.resize, config.crop), options.val_labels, classes
        )
    for name, dataset in (("training", train_set), ("validation", val_set)):
        if dataset is None:
            continue
        top = max(label for _, label in dataset.samples)
        if top >= num_classes:
            raise AccelDetError(
                f"the {name} labels go up to class index "
                f"{top}, but the model has {num_classes} classes"
            )
    if len(train_set.classes) != num_classes and classes is None:
        logger.warning(
            "the training set has %d classes, the model "
            "%d: class i is the i-th class in sorted order",
            len(train_set.classes),
            num_classes,
        )
    return train_set, val_set


def run_info(options: FinetuneOptions, plan_path: Optional[str], is_main: bool) -> dict:
    """The ``finetune`` section's sources and data (hashing the weights on the main process)."""
    source = weights_file(options.weights)
    config = options.config
    return {
        "source_weights": {
            "path": os.path.abspath(source) if source else options.weights,
            "sha256": sha256_file(source) if source and is_main else None,
            "plan": os.path.abspath(plan_path) if plan_path else None,
        },
        "data": {
            "train": os.path.abspath(options.train),
            "val": os.path.abspath(options.val) if options.val else None,
            "train_labels": options.train_labels,
            "val_labels": options.val_labels,
            "classes": options.classes,
            "preprocessing": preprocessing_record(config.resize, config.crop),
            "augment": config.augment,
        },
        "command": options.command,
    }


def run(options: FinetuneOptions) -> None:
    """Fine-tune in this process (one of ``torchrun``'s, or alone), writing ``options.output``."""
    dist_info = init_distributed(options.device)
    try:
        if not dist_info.is_main:
            logging.getLogger().setLevel(logging.WARNING)
        options.config.check(dist_info.world_size)
        output = os.path.expanduser(options.output)
        check_output(output, options.resume, options.overwrite, create=False)
        model, plan, plan_path = load_vgg16(options.weights, options.plan)
        train_set, val_set = load_datasets(options, model.classifier[-1].out_features)
        # the plan (for an accelerated model, with how it was compressed) stays at the top level,
        # so model_final.pth + model_final.json load like the compressor's OUT.pth + OUT.json
        record = (
            {k: v for k, v in plan.items() if k not in ("outputs", "command")}
            if plan is not None
            else {}
        )
        info = run_info(options, plan_path, dist_info.is_main)
        with logging_redirect_tqdm():
            finetune(
                model,
                train_set,
                output,
                options.config,
                dist_info,
                val_set=val_set,
                resume=options.resume,
                overwrite=options.overwrite,
                progress=options.progress,
                record=record,
                info=info,
                stop_after=options.stop_after,
            )
    finally:
        shutdown()
