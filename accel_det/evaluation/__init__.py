"""AP50 of per-image detection records (PASCAL VOC's metric) and its paired bootstrap over test
images: numpy only, no detectron2 (the evaluator that makes the records is
:mod:`accel_det.detection.evaluator`)."""

from .ap import DetectionRecords, ap50, ap_per_class, read_records, write_records
from .bootstrap import (
    INTERVAL_KEY,
    Interval,
    ap50_with_interval,
    bootstrap_ap50,
    interval_from_samples,
    paired_delta,
    resample_counts,
    results_interval,
)

__all__ = [
    "INTERVAL_KEY",
    "DetectionRecords",
    "Interval",
    "ap50",
    "ap50_with_interval",
    "ap_per_class",
    "bootstrap_ap50",
    "interval_from_samples",
    "paired_delta",
    "read_records",
    "resample_counts",
    "results_interval",
    "write_records",
]
