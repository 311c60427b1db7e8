"""Detectron2's data loaders with precomputed proposals read as data.

Detectron2's ``get_detection_dataset_dicts(..., proposal_files=...)`` (behind
``build_detection_train_loader(cfg)`` and ``build_detection_test_loader(cfg, name)``) reads
proposal files with plain ``pickle.load``, which runs whatever code a file names. Every data
loader and every set of dataset dicts accel-det builds comes from here instead:
:func:`detection_dataset_dicts` is Detectron2's function with the proposals read by the restricted
unpickler and checked (:func:`load_proposals_into_dicts`, otherwise what Detectron2's
``load_proposals_into_dataset`` does: Detectron1 keys renamed, boxes sorted by objectness).

Under a low file size limit (``ulimit -f``) a data loader's worker processes cannot create the
shared memory they hand batches over in, and the main process waits for them forever: then the
loaders run without workers (:func:`loader_workers`).
"""

from __future__ import annotations

import itertools
import logging
import resource
from typing import List, Optional, Sequence

import numpy as np
from detectron2.data import (
    DatasetCatalog,
    DatasetMapper,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.data.build import (
    filter_images_with_few_keypoints,
    filter_images_with_only_crowd_annotations,
    print_instances_class_histogram,
)
from detectron2.data.detection_utils import check_metadata_consistency
from detectron2.structures import BoxMode

from ..errors import AccelDetError
from .proposals import read_proposal_file

logger = logging.getLogger(__name__)

# below this file size limit (bytes), data loaders run without worker processes
MIN_FILE_SIZE_FOR_WORKERS = 1 << 30


def load_proposals_into_dicts(dicts: List[dict], path: str) -> List[dict]:
    """Add the proposals of the file ``path`` to the dataset dicts (``proposal_boxes``,
    ``proposal_objectness_logits`` in descending order, ``proposal_bbox_mode``), as Detectron2's
    ``load_proposals_into_dataset`` does, with the file read by the restricted unpickler
    (:func:`~accel_det.detection.proposals.read_proposal_file`) and its entries checked: one clear
    error for a missing image, boxes that are not N×4 numbers or logits of another length."""
    logger.info("Loading proposals from: %s", path)
    data = read_proposal_file(path)
    if "objectness_logits" not in data:
        raise AccelDetError(f"proposal file {path} has no 'objectness_logits' (or 'scores')")
    ids, boxes, logits = data["ids"], data["boxes"], data["objectness_logits"]
    if isinstance(ids, np.ndarray) and ids.ndim == 1:
        ids = ids.tolist()
    if not all(isinstance(x, (list, tuple)) for x in (ids, boxes, logits)):
        raise AccelDetError(f"proposal file {path}: ids, boxes and objectness_logits must be lists")
    if not len(ids) == len(boxes) == len(logits):
        raise AccelDetError(
            f"proposal file {path} has {len(ids)} ids, {len(boxes)} box lists and {len(logits)} "
            "logit lists"
        )
    try:
        mode = BoxMode(data.get("bbox_mode", BoxMode.XYXY_ABS))
    except (TypeError, ValueError):
        raise AccelDetError(f"proposal file {path}: unknown bbox_mode") from None
    wanted = {str(record["image_id"]) for record in dicts}
    index = {
        str(i): k
        for k, i in enumerate(ids)
        if isinstance(i, (str, int, np.integer)) and str(i) in wanted
    }
    for record in dicts:
        image_id = str(record["image_id"])
        if image_id not in index:
            raise AccelDetError(f"proposal file {path} has no boxes for image {image_id}")
        k = index[image_id]
        box, logit = _proposal_arrays(boxes[k], logits[k], path, image_id)
        order = logit.argsort()[::-1]
        record["proposal_boxes"] = box[order]
        record["proposal_objectness_logits"] = logit[order]
        record["proposal_bbox_mode"] = mode
    return dicts


def _proposal_arrays(boxes, logits, path: str, image_id: str):
    numeric = all(isinstance(a, np.ndarray) and a.dtype.kind in "biuf" for a in (boxes, logits))
    if not numeric or boxes.ndim != 2 or boxes.shape[1] != 4 or logits.shape != (len(boxes),):
        raise AccelDetError(
            f"proposal file {path}: the proposals of image {image_id} are not N×4 boxes with N "
            "objectness logits (numpy arrays of numbers)"
        )
    return boxes, logits


def detection_dataset_dicts(
    names: Sequence[str],
    *,
    filter_empty: bool = True,
    min_keypoints: int = 0,
    proposal_files: Optional[Sequence[str]] = None,
    check_consistency: bool = True,
) -> List[dict]:
    """Detectron2's ``get_detection_dataset_dicts`` (the same filtering, metadata check and class
    histogram), with each data set's ``proposal_files`` added by :func:`load_proposals_into_dicts`
    instead of ``pickle.load``."""
    names = [names] if isinstance(names, str) else list(names)
    if proposal_files is not None and len(proposal_files) != len(names):
        raise AccelDetError(
            f"{len(proposal_files)} proposal files for {len(names)} data sets ({', '.join(names)})"
        )
    per_dataset = [DatasetCatalog.get(name) for name in names]
    for name, dicts in zip(names, per_dataset):
        if not len(dicts):
            raise AccelDetError(f"data set {name!r} is empty")
    if proposal_files is not None:
        per_dataset = [load_proposals_into_dicts(d, f) for d, f in zip(per_dataset, proposal_files)]
    dicts = list(itertools.chain.from_iterable(per_dataset))
    has_instances = "annotations" in dicts[0]
    if filter_empty and has_instances:
        dicts = filter_images_with_only_crowd_annotations(dicts)
    if min_keypoints > 0 and has_instances:
        dicts = filter_images_with_few_keypoints(dicts, min_keypoints)
    if check_consistency and has_instances:
        classes = MetadataCatalog.get(names[0]).get("thing_classes")
        if classes is not None:
            check_metadata_consistency("thing_classes", names)
            print_instances_class_histogram(dicts, classes)
    if not dicts:
        raise AccelDetError(f"no valid data found in {', '.join(names)}")
    return dicts


def loader_workers(cfg) -> int:
    """``DATALOADER.NUM_WORKERS``, or 0 (with a warning) under a file size limit below
    :data:`MIN_FILE_SIZE_FOR_WORKERS`, where worker processes cannot hand batches over."""
    workers = int(cfg.DATALOADER.NUM_WORKERS)
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if workers and limit != resource.RLIM_INFINITY and limit < MIN_FILE_SIZE_FOR_WORKERS:
        logger.warning(
            "file size limit of %d KiB (ulimit -f): loading data without worker processes "
            "(DATALOADER.NUM_WORKERS %d ignored), as they could not share memory",
            limit >> 10,
            workers,
        )
        return 0
    return workers


def training_dataset_dicts(cfg) -> List[dict]:
    """The dataset dicts Detectron2's training loader reads for ``cfg``."""
    return detection_dataset_dicts(
        cfg.DATASETS.TRAIN,
        filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        min_keypoints=(
            cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0
        ),
        proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
    )


def evaluation_dataset_dicts(cfg, dataset_name: str) -> List[dict]:
    """The dataset dicts Detectron2's test loader reads for ``dataset_name`` of
    ``DATASETS.TEST``."""
    proposal_files = None
    if cfg.MODEL.LOAD_PROPOSALS:
        tests = list(cfg.DATASETS.TEST)
        if dataset_name not in tests or len(cfg.DATASETS.PROPOSAL_FILES_TEST) != len(tests):
            raise AccelDetError(
                f"no proposal file for data set {dataset_name!r} in DATASETS.PROPOSAL_FILES_TEST "
                f"(DATASETS.TEST is {', '.join(tests)})"
            )
        proposal_files = [cfg.DATASETS.PROPOSAL_FILES_TEST[tests.index(dataset_name)]]
    return detection_dataset_dicts(
        [dataset_name], filter_empty=False, proposal_files=proposal_files
    )


def build_train_loader(cfg):
    """``build_detection_train_loader(cfg)`` with :func:`training_dataset_dicts` and
    :func:`loader_workers`."""
    return build_detection_train_loader(
        cfg, dataset=training_dataset_dicts(cfg), num_workers=loader_workers(cfg)
    )


def build_test_loader(cfg, dataset_name: str):
    """``build_detection_test_loader(cfg, dataset_name)`` with :func:`evaluation_dataset_dicts` and
    :func:`loader_workers`."""
    return build_detection_test_loader(
        dataset=evaluation_dataset_dicts(cfg, dataset_name),
        mapper=DatasetMapper(cfg, False),
        num_workers=loader_workers(cfg),
    )
