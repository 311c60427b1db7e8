"""The top-1 / top-5 evaluation of ``tools/eval_imagenet.py`` (the paper's Tables 6–8): load the
model and the baseline, the validation images, evaluate both on the same images, print the table
and write the JSON record."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

from ...data import eval_transform, labeled_images, preprocessing_record, read_class_list
from ...errors import AccelDetError
from ...models.classifier import classes_of, load_classifier, weights_file
from ...models.vgg import CROP_SIZE, RESIZE_SIZE
from ...utils.dist import pick_device
from ...utils.io import atomic_write_json, check_writable_folder, refuse_existing, sha256_file
from .evaluate import eval_loader, evaluate, format_results

logger = logging.getLogger("accel_det.eval_imagenet")


@dataclass
class EvalOptions:
    """What ``tools/eval_imagenet.py`` evaluates, and how (its options, one field each)."""

    weights: str
    val: str
    arch: Optional[str] = None
    plan: Optional[str] = None
    labels: Optional[str] = None
    classes: Optional[str] = None
    baseline: Optional[str] = None
    baseline_plan: Optional[str] = None
    batch_size: int = 64
    workers: int = 0
    device: str = "auto"
    resize: int = RESIZE_SIZE
    crop: int = CROP_SIZE
    limit: Optional[int] = None
    output: Optional[str] = None
    overwrite: bool = False
    progress: bool = True


def source_record(weights: str, plan, arch) -> dict:
    """Where a model came from: its weights (and their hash), plan and architecture."""
    path = weights_file(weights, arch)
    return {
        "weights": os.path.abspath(path) if path else weights,
        "sha256": sha256_file(path) if path else None,
        "plan": os.path.abspath(plan) if plan else None,
        "theoretical_speedup": None,
        "arch": arch,
    }


def load_models(options: EvalOptions) -> Tuple[Dict[str, object], Dict[str, dict], int]:
    """The model (and the baseline) by display name, their source records and their number of
    classes, which must agree."""
    models = {}
    records = {}
    for role, weights, plan in (
        ("model", options.weights, options.plan),
        ("baseline", options.baseline, options.baseline_plan),
    ):
        if weights is None:
            if plan is not None:
                raise AccelDetError("--baseline-plan needs --baseline")
            continue
        model, plan_dict, plan_path, arch = load_classifier(weights, plan, options.arch)
        name = os.path.basename(weights)
        if name in models:
            name += f" ({role})"
        models[name] = model
        records[name] = source_record(weights, plan_path, arch)
        records[name]["role"] = role
        if plan_dict is not None:
            records[name]["theoretical_speedup"] = plan_dict.get("theoretical_speedup")
            records[name]["method"] = plan_dict.get("method")
    outputs = {classes_of(m) for m in models.values()}
    if len(outputs) != 1:
        raise AccelDetError(
            f"the model and the baseline have different numbers of classes: {sorted(outputs)}"
        )
    return models, records, outputs.pop()


def load_validation(options: EvalOptions, num_classes: int):
    """The validation images (a ``--limit`` subset, seed 0), their labels checked against the
    model's classes."""
    classes = read_class_list(options.classes) if options.classes else None
    transform = eval_transform(options.resize, options.crop)
    dataset = labeled_images(options.val, transform, options.labels, classes)
    top = max(label for _, label in dataset.samples)
    if top >= num_classes:
        raise AccelDetError(
            f"the validation labels go up to class index "
            f"{top}, but the model has {num_classes} classes"
        )
    if (
        options.labels is None and classes is None and len(dataset.classes) != num_classes
    ):  # labels None: class folders
        logger.warning(
            "%s has %d class folders but the model has %d classes: class i is the i-th folder in "
            "sorted order; pass --classes to map them",
            options.val,
            len(dataset.classes),
            num_classes,
        )
    if options.limit is not None:
        if options.limit < 1:
            raise AccelDetError(f"--limit must be at least 1, got {options.limit}")
        chosen = np.sort(
            np.random.default_rng(0).permutation(len(dataset.samples))[: options.limit]
        )
        dataset.samples = [dataset.samples[i] for i in chosen]
    logger.info("%d validation images from %s, %d classes", len(dataset), options.val, num_classes)
    return dataset


def evaluate_models(models: dict, dataset, options: EvalOptions) -> Dict[str, dict]:
    """Top-1 / top-5 errors of every model on the same images, logged as they come."""
    device = pick_device(options.device)
    loader = eval_loader(
        dataset, options.batch_size, max(0, options.workers), pin_memory=device.type == "cuda"
    )
    results = {}
    for name, model in models.items():
        model.to(device)
        results[name] = evaluate(model, loader, device, progress=options.progress, desc=name)
        model.cpu()
        logger.info(
            "%s: top-1 error %.2f%%, top-5 error %.2f%% on %d images (%.1fs)",
            name,
            results[name]["top1_error"],
            results[name]["top5_error"],
            results[name]["images"],
            results[name]["seconds"],
        )
    skipped = max(r["skipped_unreadable"] for r in results.values())
    if skipped:
        logger.warning(
            "skipped %d unreadable validation image(s); the errors are over the %d others",
            skipped,
            next(iter(results.values()))["images"],
        )
    return results


def write_record(options, num_classes, records, results, baseline) -> None:
    """The JSON record of the run at ``options.output``: the data, the preprocessing, every
    model's source and errors and, with a baseline, the increase of error."""
    record = {
        "val": os.path.abspath(options.val),
        "labels": options.labels,
        "classes": options.classes,
        "limit": options.limit,
        "num_classes": num_classes,
        "preprocessing": preprocessing_record(options.resize, options.crop),
        "models": {name: {**records[name], **results[name]} for name in results},
    }
    if baseline:
        base = results[baseline]
        record["increase_of_error"] = {
            name: {
                "top1": r["top1_error"] - base["top1_error"],
                "top5": r["top5_error"] - base["top5_error"],
            }
            for name, r in results.items()
            if name != baseline
        }
    check_writable_folder(os.path.dirname(os.path.abspath(options.output)))
    atomic_write_json(record, options.output, replace=options.overwrite)
    logger.info("wrote %s", options.output)


def run(options: EvalOptions) -> Dict[str, dict]:
    """Evaluate the model (and the baseline), print the table of errors and, with
    ``options.output``, write the record; returns the results by model name."""
    if options.batch_size < 1:
        raise AccelDetError(f"--batch-size must be at least 1, got {options.batch_size}")
    if options.output:
        check_writable_folder(os.path.dirname(os.path.abspath(options.output)), create=False)
        refuse_existing([options.output], options.overwrite)
    models, records, num_classes = load_models(options)
    dataset = load_validation(options, num_classes)
    results = evaluate_models(models, dataset, options)
    baseline = next((n for n, r in records.items() if r["role"] == "baseline"), None)
    print(format_results(results, baseline), flush=True)
    if options.output:
        write_record(options, num_classes, records, results, baseline)
    return results
