"""95 % intervals of AP50 and of AP50 differences: the percentile bootstrap over test images
(Efron & Tibshirani, *An Introduction to the Bootstrap*, ch. 13), paired: two models are
compared on the same resampled images, so what both get right or wrong on an image cancels.

A resample draws the test images with replacement (seeded); it is a vector of counts per image,
and :func:`~.ap.ap_per_class` counts each detection as often as its image is drawn, which equals
the AP of the resampled set written out image by image. The resamples are evaluated in blocks of
arrays (numpy, no Python loop over resamples).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

import numpy as np

from ..errors import AccelDetError
from .ap import DetectionRecords, ap50, class_matches

RESAMPLES = 1000
SEED = 0
LEVEL = 0.95
BLOCK = 2_000_000  # array elements (resamples × detections of a class) evaluated at once
# where Detectron2's results (eval_results.json) hold AP50's interval, next to "bbox"
INTERVAL_KEY = "bbox_AP50_interval"


@dataclasses.dataclass(frozen=True)
class Interval:
    """A value (AP50 or ΔAP50, in points) and its bootstrap interval."""

    value: float
    low: float
    high: float
    level: float = LEVEL
    resamples: int = RESAMPLES
    images: int = 0

    def __str__(self) -> str:
        return f"{_num(self.value)} [{_num(self.low)}, {_num(self.high)}]"

    def delta_text(self) -> str:
        """``Δ −1.3 [−2.0, −0.6]``, signed, with a minus sign."""
        return f"Δ {_num(self.value, '+')} [{_num(self.low, '+')}, {_num(self.high, '+')}]"

    @property
    def holds_zero(self) -> bool:
        """Whether 0 is inside the interval: no measurable difference at this level."""
        return self.low <= 0.0 <= self.high

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, value) -> Optional["Interval"]:
        """The interval of an :meth:`as_dict` mapping (extra keys ignored); None for none."""
        if not isinstance(value, Mapping):
            return None
        fields = ("value", "low", "high", "level", "resamples", "images")
        return cls(**{k: value[k] for k in fields if k in value})


def _num(value: float, sign: str = "") -> str:
    return f"{value:{sign}.1f}".replace("-", "\u2212")


def resample_counts(images: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples, images): how often each test image is drawn in each bootstrap resample (each
    resample draws ``images`` images with replacement; numpy's PCG64 seeded with ``seed``)."""
    if images < 1 or resamples < 1:
        raise AccelDetError("a bootstrap needs at least one test image and one resample")
    draws = np.random.default_rng(seed).integers(0, images, size=(resamples, images))
    flat = (draws + images * np.arange(resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=resamples * images).reshape(resamples, images)


def bootstrap_ap50(
    records: DetectionRecords, resamples: int = RESAMPLES, seed: int = SEED
) -> np.ndarray:
    """AP50 (points) of each bootstrap resample of the test images, shape (resamples,): the
    detections matched once, then every resample's AP50 from its image counts."""
    counts = resample_counts(records.num_images, resamples, seed)
    matches = class_matches(records)
    most = max([len(m[0]) for m in matches] + [1])
    step = max(1, BLOCK // most)
    return np.concatenate(
        [ap50(records, counts[i : i + step], matches) for i in range(0, resamples, step)]
    )


def interval_from_samples(value: float, samples: np.ndarray, level: float = LEVEL) -> Interval:
    """``value`` with the percentile interval of its bootstrap ``samples`` at ``level``."""
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return Interval(float(value), float(low), float(high), level, len(samples))


def ap50_with_interval(
    records: DetectionRecords,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> Interval:
    """AP50 on the whole test set (Detectron2's value) with the percentile bootstrap interval
    over test images."""
    samples = bootstrap_ap50(records, resamples, seed)
    interval = interval_from_samples(ap50(records), samples, level)
    return dataclasses.replace(interval, images=records.num_images)


def paired_delta(
    records: DetectionRecords,
    baseline: DetectionRecords,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
    samples: Optional[dict] = None,
) -> Interval:
    """AP50 of ``records`` minus AP50 of ``baseline`` with its paired bootstrap interval: both
    evaluated on the same resampled images (the same seed gives the same resamples). The two
    must be evaluations of the same test images with the same classes. ``samples``, when given,
    receives the per-resample differences under ``"delta"``."""
    check_paired(records, baseline)
    delta = bootstrap_ap50(records, resamples, seed) - bootstrap_ap50(baseline, resamples, seed)
    if samples is not None:
        samples["delta"] = delta
    interval = interval_from_samples(ap50(records) - ap50(baseline), delta, level)
    return dataclasses.replace(interval, images=records.num_images)


def results_interval(results: Mapping) -> Optional[Interval]:
    """AP50 and its interval from Detectron2's results as written to ``eval_results.json``
    (``{data set: {"bbox": {"AP50": ..}, "bbox_AP50_interval": {"low": .., "high": ..}}}``, or
    one data set's part); None for results without an interval."""
    if isinstance(results, Mapping) and results and "bbox" not in results:
        results = results.get(next(iter(results)))
    if not isinstance(results, Mapping):
        return None
    bounds, bbox = results.get(INTERVAL_KEY), results.get("bbox")
    if not isinstance(bounds, Mapping) or not isinstance(bbox, Mapping) or "AP50" not in bbox:
        return None
    return Interval(
        float(bbox["AP50"]),
        float(bounds["low"]),
        float(bounds["high"]),
        float(bounds.get("level", LEVEL)),
        int(bounds.get("resamples", RESAMPLES)),
        int(bounds.get("images", 0)),
    )


def check_paired(a: DetectionRecords, b: DetectionRecords) -> None:
    """Refuse two evaluations that are not of the same test images and classes."""
    if list(a.image_ids) != list(b.image_ids):
        raise AccelDetError(
            f"the two evaluations are not of the same test images ({a.num_images} and "
            f"{b.num_images} images, or another order): a paired comparison needs the same set"
        )
    if tuple(a.class_names) != tuple(b.class_names) or a.use_07_metric != b.use_07_metric:
        raise AccelDetError("the two evaluations have other classes or another AP metric")
