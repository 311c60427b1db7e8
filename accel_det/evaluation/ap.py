"""PASCAL VOC's AP50 from per-image detection records, computed as Detectron2's
``PascalVOCDetectionEvaluator`` computes it (its ``voc_eval``: detections of a class sorted by
score, each matched greedily to the unmatched ground-truth box of its image with the largest
IoU > 0.5, "difficult" boxes neither counted nor penalised; the VOC 2007 11-point average
precision, or the area under the interpolated curve for later years), but with the weight of
each test image as a parameter: the matching of a detection depends on its own image only, so a
bootstrap resample is a vector of image counts (:mod:`.bootstrap`) and its AP50 needs no new
matching.

The records are arrays (:class:`DetectionRecords`), written as one ``.npz`` next to each
evaluation's ``eval_results.json`` (read back without pickles).
"""

from __future__ import annotations

import dataclasses
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import AccelDetError
from ..utils.io import atomic_path

IOU_THRESHOLD = 0.5
# the 11 recall levels of the VOC 2007 metric, as voc_eval makes them
RECALL_LEVELS = np.arange(0.0, 1.1, 0.1)
FIELDS = (
    "image_ids",
    "class_names",
    "gt_image",
    "gt_class",
    "gt_box",
    "gt_difficult",
    "det_image",
    "det_class",
    "det_score",
    "det_box",
    "use_07_metric",
)


@dataclasses.dataclass
class DetectionRecords:
    """The detections and ground truth of one evaluation, image by image.

    ``gt_*`` has one row per ground-truth box (``gt_image`` indexes ``image_ids``), ``det_*`` one
    row per detection, in the evaluator's order (class by class; within a class, as the images
    were evaluated): ties of score are broken as Detectron2 breaks them only in that order. Boxes
    are ``x1 y1 x2 y2`` in VOC's 1-based pixels, as ``voc_eval`` reads them."""

    image_ids: np.ndarray
    class_names: Tuple[str, ...]
    gt_image: np.ndarray
    gt_class: np.ndarray
    gt_box: np.ndarray
    gt_difficult: np.ndarray
    det_image: np.ndarray
    det_class: np.ndarray
    det_score: np.ndarray
    det_box: np.ndarray
    use_07_metric: bool = True

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    def positives(self) -> np.ndarray:
        """(classes, images): non-difficult ground-truth boxes of each class in each image."""
        counts = np.zeros((len(self.class_names), self.num_images))
        keep = ~self.gt_difficult
        np.add.at(counts, (self.gt_class[keep], self.gt_image[keep]), 1.0)
        return counts


def box_overlaps(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of each row of ``det`` with the same row of ``gt`` in VOC's inclusive pixels
    (``voc_eval``'s +1), element for element the same arithmetic."""
    iw = np.maximum(np.minimum(gt[:, 2], det[:, 2]) - np.maximum(gt[:, 0], det[:, 0]) + 1.0, 0.0)
    ih = np.maximum(np.minimum(gt[:, 3], det[:, 3]) - np.maximum(gt[:, 1], det[:, 1]) + 1.0, 0.0)
    inters = iw * ih
    union = (
        (det[:, 2] - det[:, 0] + 1.0) * (det[:, 3] - det[:, 1] + 1.0)
        + (gt[:, 2] - gt[:, 0] + 1.0) * (gt[:, 3] - gt[:, 1] + 1.0)
        - inters
    )
    return inters / union


def match_class(
    records: DetectionRecords, cls: int, iou_threshold: float = IOU_THRESHOLD
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The detections of class ``cls`` sorted by score as ``voc_eval`` sorts them: their image
    indices, and whether each is a true positive and a false positive at ``iou_threshold`` (a
    detection matched to a difficult box is neither).

    As ``voc_eval``: each detection takes the ground-truth box of its image with the largest IoU
    (the first of equals); above the threshold it is a true positive if that box is not difficult
    and no earlier detection took it, a false positive if one did; else a false positive."""
    index = np.flatnonzero(records.det_class == cls)
    index = index[np.argsort(-records.det_score[index])]
    det_image, det_box = records.det_image[index], records.det_box[index]
    gt = np.flatnonzero(records.gt_class == cls)
    gt = gt[np.argsort(records.gt_image[gt], kind="stable")]  # by image, in annotation order
    first = np.searchsorted(records.gt_image[gt], det_image, "left")
    count = np.searchsorted(records.gt_image[gt], det_image, "right") - first
    best = np.full(len(index), -np.inf)
    taken_row = np.full(len(index), -1)
    for k in range(int(count.max()) if len(index) else 0):
        has = k < count
        rows = gt[np.minimum(first + k, len(gt) - 1)]
        overlap = np.where(has, box_overlaps(det_box, records.gt_box[rows]), -np.inf)
        better = overlap > best
        best = np.where(better, overlap, best)
        taken_row = np.where(better, rows, taken_row)
    above = best > iou_threshold
    difficult = above & np.append(records.gt_difficult, False)[taken_row]  # -1: none
    candidate = np.flatnonzero(above & ~difficult)
    tp = np.zeros(len(index))
    _, firsts = np.unique(taken_row[candidate], return_index=True)
    tp[candidate[firsts]] = 1.0
    fp = np.where(~above | ((tp == 0) & ~difficult), 1.0, 0.0)
    return det_image, tp, fp


def class_matches(records: DetectionRecords, iou_threshold: float = IOU_THRESHOLD) -> List:
    """:func:`match_class` of every class, cut after each class's last true positive (the
    detections after it add points of no more recall and less precision)."""
    matches = []
    for c in range(len(records.class_names)):
        det_image, tp, fp = match_class(records, c, iou_threshold)
        hits = np.flatnonzero(tp)
        end = hits[-1] + 1 if len(hits) else 0
        matches.append((det_image[:end], tp[:end], fp[:end]))
    return matches


def average_precision(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool) -> np.ndarray:
    """``voc_ap`` along the last axis of ``rec`` (non-decreasing) and ``prec``: the 11-point VOC
    2007 metric (the mean of the best precision at recall >= 0, 0.1, ..., 1), or the area under
    the interpolated precision-recall curve (VOC 2010 on)."""
    batch = rec.shape[:-1]
    if use_07_metric:
        # the best precision at recall >= t is the envelope's value at the first such point
        envelope = np.flip(np.maximum.accumulate(np.flip(prec, -1), axis=-1), -1)
        envelope = np.concatenate([envelope, np.zeros(batch + (1,))], axis=-1)
        ap = np.zeros(batch)
        for t in RECALL_LEVELS:
            start = np.sum(rec < t, axis=-1, keepdims=True)
            ap = ap + np.take_along_axis(envelope, start, axis=-1)[..., 0] / 11.0
        return ap
    zeros = np.zeros(batch + (1,))
    mrec = np.concatenate([zeros, rec, zeros + 1.0], axis=-1)
    mpre = np.concatenate([zeros, prec, zeros], axis=-1)
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre, -1), axis=-1), -1)
    return np.sum((mrec[..., 1:] - mrec[..., :-1]) * mpre[..., 1:], axis=-1)


def weighted_ap(
    det_image: np.ndarray,
    tp: np.ndarray,
    fp: np.ndarray,
    positives: np.ndarray,
    weights: np.ndarray,
    use_07_metric: bool,
) -> np.ndarray:
    """AP of one class for each row of ``weights`` (resamples × images: how often each test image
    is drawn): ``voc_eval``'s cumulative sums with each detection counted as often as its image.

    Only the points of the precision-recall curve at true positives are made: a point after a
    false positive has the recall of the last true positive before it and less precision, so it
    changes neither the 11-point metric nor the interpolated area."""
    hits, misses = np.flatnonzero(tp), np.flatnonzero(fp)
    tp_sum = np.cumsum(weights[:, det_image[hits]], axis=1)
    fp_sum = np.zeros((len(weights), len(misses) + 1))
    np.cumsum(weights[:, det_image[misses]], axis=1, out=fp_sum[:, 1:])
    fp_sum = fp_sum[:, np.searchsorted(misses, hits)]  # false positives before each hit
    npos = weights @ positives
    with np.errstate(divide="ignore", invalid="ignore"):
        rec = tp_sum / npos[:, None]
    prec = tp_sum / np.maximum(tp_sum + fp_sum, np.finfo(np.float64).eps)
    return average_precision(rec, prec, use_07_metric)


def ap_per_class(
    records: DetectionRecords,
    weights: Optional[np.ndarray] = None,
    iou_threshold: float = IOU_THRESHOLD,
    matches: Optional[List] = None,
) -> np.ndarray:
    """AP (0-1) of each class at ``iou_threshold``: shape (classes,), or (resamples, classes) for
    ``weights`` of shape (resamples, images); no weights: every test image once (Detectron2's
    value). ``matches``: :func:`class_matches` at that threshold, when already made."""
    single = weights is None
    weights = np.ones((1, records.num_images)) if single else np.asarray(weights, dtype=np.float64)
    positives = records.positives()
    matches = class_matches(records, iou_threshold) if matches is None else matches
    aps = np.zeros((len(weights), len(records.class_names)))
    for c, (det_image, tp, fp) in enumerate(matches):
        aps[:, c] = weighted_ap(det_image, tp, fp, positives[c], weights, records.use_07_metric)
    return aps[0] if single else aps


def ap50(records: DetectionRecords, weights: Optional[np.ndarray] = None, matches=None):
    """AP50 in percent, the mean over classes as Detectron2 reports it (an array per resample
    with ``weights``)."""
    return np.mean(ap_per_class(records, weights, IOU_THRESHOLD, matches) * 100, axis=-1)


def voc_metrics(records: DetectionRecords) -> dict:
    """What ``PascalVOCDetectionEvaluator.evaluate`` returns under ``"bbox"``: AP (the mean over
    IoU thresholds 0.5, 0.55, ..., 0.95), AP50 and AP75, in percent."""
    maps = {t: np.mean(ap_per_class(records, None, t / 100.0) * 100) for t in range(50, 100, 5)}
    return {"AP": np.mean(list(maps.values())), "AP50": maps[50], "AP75": maps[75]}


def records_from_lines(
    image_ids: Sequence[str],
    class_names: Sequence[str],
    annotations: Sequence[List[dict]],
    predictions: Sequence[Sequence[str]],
    use_07_metric: bool = True,
) -> DetectionRecords:
    """Records from what ``PascalVOCDetectionEvaluator`` holds: per class, its lines
    ``"<image id> <score> <x1> <y1> <x2> <y2>"``; per image (in ``image_ids``' order), the
    objects of its annotation as ``voc_eval``'s ``parse_rec`` returns them (``name``, ``bbox``,
    ``difficult``)."""
    position = {str(i): k for k, i in enumerate(image_ids)}
    classes = {name: c for c, name in enumerate(class_names)}
    gt = [
        (k, classes[o["name"]], o["bbox"], bool(o["difficult"]))
        for k, objects in enumerate(annotations)
        for o in objects
        if o["name"] in classes
    ]
    det = []
    for c, lines in enumerate(predictions):
        for line in lines:
            fields = line.strip().split(" ")
            if fields[0] not in position:
                raise AccelDetError(f"a detection names image {fields[0]!r}, not in the test set")
            det.append((position[fields[0]], c, float(fields[1]), [float(z) for z in fields[2:]]))
    return DetectionRecords(
        image_ids=np.array([str(i) for i in image_ids]),
        class_names=tuple(class_names),
        gt_image=np.array([g[0] for g in gt], dtype=np.int64),
        gt_class=np.array([g[1] for g in gt], dtype=np.int64),
        gt_box=np.array([g[2] for g in gt], dtype=np.float64).reshape(-1, 4),
        gt_difficult=np.array([g[3] for g in gt], dtype=bool),
        det_image=np.array([d[0] for d in det], dtype=np.int64),
        det_class=np.array([d[1] for d in det], dtype=np.int64),
        det_score=np.array([d[2] for d in det], dtype=np.float64),
        det_box=np.array([d[3] for d in det], dtype=np.float64).reshape(-1, 4),
        use_07_metric=use_07_metric,
    )


def records_path(results_path: str) -> str:
    """Where the records of the evaluation written to ``results_path`` go:
    ``X.json`` → ``X.detections.npz``."""
    stem = results_path[: -len(".json")] if results_path.endswith(".json") else results_path
    return stem + ".detections.npz"


def write_records(records: DetectionRecords, path: str) -> None:
    """``records`` as an ``.npz`` of plain arrays (no pickles), written atomically."""
    arrays = {f.name: getattr(records, f.name) for f in dataclasses.fields(records)}
    arrays["class_names"] = np.array(records.class_names)
    arrays["use_07_metric"] = np.array(records.use_07_metric)
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as f:
            np.savez_compressed(f, **arrays)


def read_records(path: str) -> DetectionRecords:
    """Records written by :func:`write_records` (read without pickles), checked for their
    fields."""
    if not os.path.isfile(path):
        raise AccelDetError(
            f"cannot read per-image detections {path}: no such file (evaluate the model again "
            "with this version to write it)"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in FIELDS}
    except (OSError, ValueError, KeyError) as error:
        raise AccelDetError(f"{path} is not a file of per-image detections: {error}") from None
    arrays["class_names"] = tuple(str(n) for n in arrays["class_names"])
    arrays["use_07_metric"] = bool(arrays["use_07_metric"])
    records = DetectionRecords(**arrays)
    n, d, g = records.num_images, len(records.det_image), len(records.gt_image)
    if (
        records.det_box.shape != (d, 4)
        or records.gt_box.shape != (g, 4)
        or any(len(a) != d for a in (records.det_class, records.det_score))
        or any(len(a) != g for a in (records.gt_class, records.gt_difficult))
        or (d and not 0 <= records.det_image.min() <= records.det_image.max() < n)
        or (g and not 0 <= records.gt_image.min() <= records.gt_image.max() < n)
    ):
        raise AccelDetError(f"{path} is not a file of per-image detections: inconsistent arrays")
    return records
