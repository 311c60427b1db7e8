"""Detectron2's PASCAL VOC evaluator that also keeps every image's detections, so that an AP50
comes with its bootstrap interval over test images and two evaluations can be compared paired
(:mod:`accel_det.evaluation`)."""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from typing import Mapping, Optional

from detectron2.evaluation import PascalVOCDetectionEvaluator
from detectron2.evaluation.pascal_voc_evaluation import parse_rec
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from ..evaluation import INTERVAL_KEY, DetectionRecords, ap50_with_interval, write_records
from ..evaluation.ap import records_from_lines, records_path, voc_metrics


class EvaluationResults(OrderedDict):
    """Detectron2's results (``{"bbox": {"AP": .., "AP50": .., "AP75": ..}, ...}``, floats only,
    as ``EvalHook`` wants them) carrying the evaluation's :class:`DetectionRecords` as
    ``records``, which :func:`save_records` writes next to the results file."""

    records: Optional[DetectionRecords] = None


class VOCDetectionEvaluator(PascalVOCDetectionEvaluator):
    """``PascalVOCDetectionEvaluator`` (its ``process`` and its text lines of detections, its
    annotation parser) whose ``evaluate`` keeps the per-image records and computes AP, AP50 and
    AP75 from them (:func:`~accel_det.evaluation.ap.voc_metrics`, equal to Detectron2's
    ``voc_eval``), and adds AP50's 95 % bootstrap interval under ``"bbox_AP50_interval"``."""

    def evaluate(self):
        all_predictions = comm.gather(self._predictions, dst=0)
        if not comm.is_main_process():
            return None
        predictions = defaultdict(list)
        for per_rank in all_predictions:
            for cls, lines in per_rank.items():
                predictions[cls].extend(lines)
        records = self.records(predictions)
        self._logger.info(
            "Evaluating %s (%d images) with the VOC %s metric and a bootstrap over images",
            self._dataset_name,
            records.num_images,
            2007 if self._is_2007 else 2012,
        )
        interval = ap50_with_interval(records)
        results = EvaluationResults()
        results["bbox"] = {k: float(v) for k, v in voc_metrics(records).items()}
        results[INTERVAL_KEY] = {
            "low": interval.low,
            "high": interval.high,
            "level": interval.level,
            "resamples": interval.resamples,
            "images": interval.images,
        }
        results.records = records
        return results

    def records(self, predictions: Mapping) -> DetectionRecords:
        """The records of the test images (``voc_eval``'s image set, its annotations as
        ``parse_rec`` reads them) and the gathered prediction lines."""
        with PathManager.open(self._image_set_path, "r") as f:
            image_ids = [line.strip() for line in f.readlines()]
        annotations = [parse_rec(self._anno_file_template.format(i)) for i in image_ids]
        return records_from_lines(
            image_ids,
            list(self._class_names),
            annotations,
            [predictions.get(c, []) for c in range(len(self._class_names))],
            use_07_metric=self._is_2007,
        )


def save_records(results: Mapping, path: str) -> None:
    """Write the per-image records of each data set's results (:class:`EvaluationResults`) next
    to the results file ``path``: ``X.json`` → ``X.detections.npz`` (one data set) or
    ``X.<data set>.detections.npz``."""
    evaluated = [(name, getattr(value, "records", None)) for name, value in results.items()]
    evaluated = [(name, records) for name, records in evaluated if records is not None]
    for name, records in evaluated:
        target = records_path(path)
        if len(evaluated) > 1:
            target = target[: -len(".detections.npz")] + f".{name}.detections.npz"
        write_records(records, target)
