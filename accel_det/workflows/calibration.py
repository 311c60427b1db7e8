"""The real inputs an int8 export is calibrated on (:mod:`accel_det.deploy.quantize`), drawn with
a seed as the compression tools draw theirs, and the record of which they were.

* a classifier or backbone: ``num_images`` images of a folder (``--images``, optionally
  ``--image-list``), the seeded draw of tools/compress_backbone.py, resized and centre-cropped to
  the export's input size and normalised as the weights expect;
* a detector: ``num_images`` images of the config's ``DATASETS.TRAIN`` (the seeded draw of
  tools/compress_detector.py), resized by Detectron2's test-time resize, raw pixels in
  ``INPUT.FORMAT``, with their top ``PRECOMPUTED_PROPOSAL_TOPK_TEST`` precomputed proposals:
  exactly what the exported graph is given at test time.
"""

from __future__ import annotations

import copy
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from ..data.sample import files_digest, sample_images
from ..data.transforms import crop_transform, normalize
from ..errors import AccelDetError
from ..models.vgg import CROP_SIZE, RESIZE_SIZE

OPTION = "--calibration"


def calibration_transform(input_size: Sequence[int]):
    """PIL image → uint8 3×H×W at the export's ``input_size``: for 224×224 the VGG-16
    preprocessing of tools/compress_backbone.py (shorter side 256, centre crop 224); otherwise the
    shorter side resized in the same proportion and a centre crop of H×W."""
    height, width = (int(v) for v in input_size)
    if height == width == CROP_SIZE:
        return crop_transform(RESIZE_SIZE, CROP_SIZE)
    side = round(max(height, width) * RESIZE_SIZE / CROP_SIZE)
    return T.Compose(
        [
            T.Resize(side, interpolation=InterpolationMode.BILINEAR, antialias=True),
            T.CenterCrop((height, width)),
            T.PILToTensor(),
        ]
    )


def classifier_calibration(
    root: str,
    num_images: int,
    input_size: Sequence[int],
    *,
    seed: int = 0,
    image_list: Optional[str] = None,
    workers: int = 0,
    progress: bool = True,
) -> Tuple[List[tuple], dict]:
    """``num_images`` images of ``root`` drawn with ``seed``, as 1×3×H×W normalised inputs, and
    their record (folder, seed, sha256 of the list of files and of their bytes)."""
    sample = sample_images(
        root,
        num_images,
        seed,
        calibration_transform(input_size),
        workers=workers,
        progress=progress,
        image_list=image_list,
        option=OPTION,
    )
    inputs = [(normalize(image[None]),) for image in sample.images]
    record = {
        "source": "image folder",
        **sample.record(),
        "seed": seed,
        "images": len(inputs),
        "preprocessing": f"as tools/compress_backbone.py, at {input_size[0]}x{input_size[1]}",
    }
    return inputs, record


def check_detector_source(cfg) -> None:
    """One line unless ``cfg`` names training images with precomputed proposals."""
    names = list(cfg.DATASETS.TRAIN)
    if not cfg.MODEL.LOAD_PROPOSALS or len(cfg.DATASETS.PROPOSAL_FILES_TRAIN) != len(names):
        raise AccelDetError(
            f"an int8 detector is calibrated on images of DATASETS.TRAIN ({', '.join(names)}) with "
            "their precomputed proposals: the config needs MODEL.LOAD_PROPOSALS True and "
            "DATASETS.PROPOSAL_FILES_TRAIN (tools/make_proposals.py)"
        )


def detector_calibration(cfg, num_images: int, *, seed: int = 0) -> Tuple[List[tuple], dict]:
    """``num_images`` images of ``DATASETS.TRAIN`` drawn with ``seed`` (tools/compress_detector.py's
    draw), each as the exported graph's ``(image, proposals)``, and their record."""
    from detectron2.data import DatasetMapper

    from ..detection.loaders import detection_dataset_dicts

    check_detector_source(cfg)
    names = list(cfg.DATASETS.TRAIN)
    dicts = detection_dataset_dicts(
        names, filter_empty=False, proposal_files=list(cfg.DATASETS.PROPOSAL_FILES_TRAIN)
    )
    if len(dicts) < num_images:
        raise AccelDetError(
            f"data set {', '.join(names)} has {len(dicts)} images, fewer than the {num_images} "
            f"asked for ({OPTION})"
        )
    chosen = sorted(np.random.default_rng(seed).permutation(len(dicts))[:num_images].tolist())
    mapper = DatasetMapper(cfg, is_train=False)
    inputs, files = [], []
    for index in chosen:
        record = {k: v for k, v in dicts[index].items() if k != "annotations"}
        mapped = mapper(copy.deepcopy(record))
        boxes = mapped["proposals"].proposal_boxes.tensor.to(torch.float32)
        if len(boxes) == 0:
            raise AccelDetError(
                f"image {record['file_name']} has no proposals in the proposal file"
            )
        inputs.append((mapped["image"].to(torch.float32), boxes))
        files.append(record["file_name"])
    return inputs, {
        "source": "DATASETS.TRAIN",
        "datasets": names,
        "proposal_files": list(cfg.DATASETS.PROPOSAL_FILES_TRAIN),
        "found": len(dicts),
        "seed": seed,
        "images": len(inputs),
        "rois_per_image": cfg.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST,
        "files_sha256": files_digest(files),
    }
