#!/usr/bin/env python3
"""Top-1 and top-5 1-view error (shorter side 256, centre crop 224) of a plain
or accelerated VGG-16 or torchvision ResNet, and with ``--baseline`` the increase of error, as in
the paper's tables.

    python tools/eval_imagenet.py --weights output/vgg16_4x.pth --val /data/imagenet/val \\
        --baseline vgg16-397923af.pth

``--val`` is an ImageNet-style tree (``val/<wnid>/*.JPEG``, class index = sorted folder names) or a
flat folder with ``--labels FILE`` (``<file> <label>`` lines; the label a 0-based class index, as in
Caffe's ``val.txt``, or a class name such as a WordNet id, mapped with ``--classes`` or sorted).
An accelerated model needs its plan: ``--plan``, else the ``.json`` next to the weights. The
architecture is read off the weights (``--arch`` for torchvision's download of a ResNet).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import bootstrap  # noqa: F401  (accel_det from this checkout, in its .venv)

import numpy as np
from tqdm.contrib.logging import logging_redirect_tqdm

from accel_det.data import eval_transform, labeled_images, preprocessing_record, read_class_list
from accel_det.errors import AccelDetError
from accel_det.models.classifier import ARCHS, classes_of, load_classifier, weights_file
from accel_det.models.vgg import CROP_SIZE, RESIZE_SIZE
from accel_det.utils.cli import (
    IMAGE_SIDE,
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    add_common_arguments,
    run_tool,
)
from accel_det.utils.dist import pick_device
from accel_det.utils.io import (
    atomic_write_json,
    check_writable_folder,
    refuse_existing,
    sha256_file,
)
from accel_det.workflows.imagenet.evaluate import eval_loader, evaluate, format_results

logger = logging.getLogger("accel_det.eval_imagenet")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--weights",
        required=True,
        help="VGG-16 or ResNet state dict (plain or accelerated), or 'torchvision' (of --arch)",
    )
    parser.add_argument(
        "--arch",
        choices=ARCHS,
        help="the network of --weights and --baseline (default: read off the weights; vgg16 "
        "for 'torchvision')",
    )
    parser.add_argument(
        "--plan", help="plan JSON of an accelerated model (default: the .json next to --weights)"
    )
    parser.add_argument(
        "--val",
        required=True,
        help="validation images: class folders, or a flat folder with --labels",
    )
    parser.add_argument("--labels", help="label file for a flat folder: '<file> <label>' per line")
    parser.add_argument(
        "--classes", help="class names in index order, one per line (e.g. synset_words.txt)"
    )
    parser.add_argument(
        "--baseline",
        help="weights of the reference model (e.g. vgg16-397923af.pth) for the increase of error",
    )
    parser.add_argument("--baseline-plan", help="plan JSON of the baseline when it is accelerated")
    parser.add_argument(
        "--batch-size", type=POSITIVE_INT, default=64, help="images per forward pass (default: 64)"
    )
    parser.add_argument(
        "--workers",
        type=NON_NEGATIVE_INT,
        default=min(8, os.cpu_count() or 1),
        help="image decoding processes",
    )
    parser.add_argument(
        "--device", default="auto", help="auto (a GPU if there is one), cpu, cuda, cuda:1, ..."
    )
    parser.add_argument(
        "--resize",
        type=POSITIVE_INT,
        default=RESIZE_SIZE,
        help=f"shorter side (default: {RESIZE_SIZE})",
    )
    parser.add_argument(
        "--crop", type=IMAGE_SIDE, default=CROP_SIZE, help=f"centre crop (default: {CROP_SIZE})"
    )
    parser.add_argument(
        "--limit",
        type=POSITIVE_INT,
        help="evaluate a random subset of this many images (seed 0), for a quick look",
    )
    parser.add_argument("--output", help="also write the results to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return add_common_arguments(parser)


def _source_record(weights: str, plan, arch) -> dict:
    path = weights_file(weights, arch)
    return {
        "weights": os.path.abspath(path) if path else weights,
        "sha256": sha256_file(path) if path else None,
        "plan": os.path.abspath(plan) if plan else None,
        "theoretical_speedup": None,
        "arch": arch,
    }


def main(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise AccelDetError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.output:
        check_writable_folder(os.path.dirname(os.path.abspath(args.output)), create=False)
        refuse_existing([args.output], args.overwrite)
    models = {}
    records = {}
    for role, weights, plan in (
        ("model", args.weights, args.plan),
        ("baseline", args.baseline, args.baseline_plan),
    ):
        if weights is None:
            if plan is not None:
                raise AccelDetError("--baseline-plan needs --baseline")
            continue
        model, plan_dict, plan_path, arch = load_classifier(weights, plan, args.arch)
        name = os.path.basename(weights)
        if name in models:
            name += f" ({role})"
        models[name] = model
        records[name] = _source_record(weights, plan_path, arch)
        records[name]["role"] = role
        if plan_dict is not None:
            records[name]["theoretical_speedup"] = plan_dict.get("theoretical_speedup")
            records[name]["method"] = plan_dict.get("method")
    outputs = {classes_of(m) for m in models.values()}
    if len(outputs) != 1:
        raise AccelDetError(
            f"the model and the baseline have different numbers of classes: {sorted(outputs)}"
        )
    num_classes = outputs.pop()

    classes = read_class_list(args.classes) if args.classes else None
    dataset = labeled_images(args.val, eval_transform(args.resize, args.crop), args.labels, classes)
    top = max(label for _, label in dataset.samples)
    if top >= num_classes:
        raise AccelDetError(
            f"the validation labels go up to class index "
            f"{top}, but the model has {num_classes} classes"
        )
    if (
        args.labels is None and classes is None and len(dataset.classes) != num_classes
    ):  # labels None: class folders
        logger.warning(
            "%s has %d class folders but the model has %d classes: class i is the i-th folder in "
            "sorted order; pass --classes to map them",
            args.val,
            len(dataset.classes),
            num_classes,
        )
    if args.limit is not None:
        if args.limit < 1:
            raise AccelDetError(f"--limit must be at least 1, got {args.limit}")
        chosen = np.sort(np.random.default_rng(0).permutation(len(dataset.samples))[: args.limit])
        dataset.samples = [dataset.samples[i] for i in chosen]
    logger.info("%d validation images from %s, %d classes", len(dataset), args.val, num_classes)

    device = pick_device(args.device)
    loader = eval_loader(
        dataset, args.batch_size, max(0, args.workers), pin_memory=device.type == "cuda"
    )
    results = {}
    for name, model in models.items():
        model.to(device)
        results[name] = evaluate(model, loader, device, progress=not args.no_progress, desc=name)
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
    baseline = next((n for n, r in records.items() if r["role"] == "baseline"), None)
    print(format_results(results, baseline), flush=True)

    if args.output:
        record = {
            "val": os.path.abspath(args.val),
            "labels": args.labels,
            "classes": args.classes,
            "limit": args.limit,
            "num_classes": num_classes,
            "preprocessing": preprocessing_record(args.resize, args.crop),
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
        check_writable_folder(os.path.dirname(os.path.abspath(args.output)))
        atomic_write_json(record, args.output, replace=args.overwrite)
        logger.info("wrote %s", args.output)
    return 0


def _main(args: argparse.Namespace) -> int:
    with logging_redirect_tqdm():
        return main(args)


if __name__ == "__main__":
    sys.exit(run_tool(_main, build_parser()))
