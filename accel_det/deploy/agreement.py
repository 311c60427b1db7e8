"""How far a reduced-precision model (int8, bf16) is from the float32 model, and the bounds it
must stay within to be written.

An int8 or bfloat16 model cannot equal PyTorch to 1e-3 (the float32 check of :mod:`.export`);
what a user needs is that it makes the same decisions:

* a detector (``scores``, ``boxes``): the share of RoIs whose top class (background included) is
  the float32 model's (``top_class``), the mean absolute difference of the class probabilities
  (``score_difference``), and the mean absolute difference of the boxes of each RoI's float32 top
  class, in pixels of the network's input (``box_difference``);
* a classifier or backbone: ``relative_error`` ‖got − float32‖ / ‖float32‖ over each output, and
  for logits the share of images with the float32 model's top-1 class (``top1``).

Each measure is taken over all sample inputs together.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

# measure -> (bound field, "min" or "max", option of tools/export_model.py)
CHECKS = {
    "top_class": ("min_top_class", "min", "--min-top-class"),
    "score_difference": ("max_score_difference", "max", "--max-score-difference"),
    "box_difference": ("max_box_difference", "max", "--max-box-difference"),
    "relative_error": ("max_relative_error", "max", "--max-relative-error"),
    "top1": ("min_top1", "min", "--min-top1"),
}


@dataclass
class Bounds:
    """The agreement a reduced-precision model needs with the float32 model to be written."""

    min_top_class: float = 0.9
    max_score_difference: float = 0.02
    max_box_difference: float = 2.0  # pixels
    max_relative_error: float = 0.1
    min_top1: float = 0.9

    def record(self) -> dict:
        return asdict(self)


def agreement(
    names: Sequence[str],
    expected: Sequence[Sequence[np.ndarray]],
    got: Sequence[Sequence[np.ndarray]],
) -> Dict[str, float]:
    """The measures of the module docstring: ``expected`` and ``got`` hold, per sample, the
    outputs named ``names`` of the float32 and of the reduced-precision model."""
    names = list(names)
    if names[:2] == ["scores", "boxes"]:
        return detector_agreement(expected, got)
    result = {}
    for i, name in enumerate(names):
        a = np.concatenate([np.asarray(e[i], np.float64).ravel() for e in expected])
        b = np.concatenate([np.asarray(g[i], np.float64).ravel() for g in got])
        scale = np.linalg.norm(a)
        result["relative_error"] = max(
            result.get("relative_error", 0.0),
            finite(np.linalg.norm(b - a) / (scale if scale > 0 else 1.0)),
        )
        if name == "logits":
            same = [
                np.argmax(e[i].reshape(len(e[i]), -1), 1)
                == np.argmax(g[i].reshape(len(g[i]), -1), 1)
                for e, g in zip(expected, got)
            ]
            result["top1"] = float(np.concatenate(same).mean())
    return result


def detector_agreement(
    expected: Sequence[Sequence[np.ndarray]], got: Sequence[Sequence[np.ndarray]]
) -> Dict[str, float]:
    """``top_class``, ``score_difference`` and ``box_difference`` of a detector's
    ``(scores, boxes)`` per sample."""
    same: List[np.ndarray] = []
    scores: List[np.ndarray] = []
    boxes: List[np.ndarray] = []
    for (s0, b0), (s1, b1) in ((e[:2], g[:2]) for e, g in zip(expected, got)):
        s0, s1 = np.asarray(s0, np.float64), np.asarray(s1, np.float64)
        b0, b1 = np.asarray(b0, np.float64), np.asarray(b1, np.float64)
        if s0.shape != s1.shape or b0.shape != b1.shape:
            return {"top_class": 0.0, "score_difference": np.inf, "box_difference": np.inf}
        top = s0.argmax(1)
        same.append(top == s1.argmax(1))
        scores.append(np.abs(s1 - s0).ravel())
        # the box of each RoI's top foreground class (background, the last class, has none)
        classes = s0.shape[1] - 1
        cls = np.where(top < classes, top, s0[:, :classes].argmax(1)) if classes else top
        rows = np.arange(len(cls))
        pick = lambda b: b.reshape(len(b), -1, 4)[rows, cls]  # noqa: E731
        boxes.append(np.abs(pick(b1) - pick(b0)).ravel())
    return {
        "top_class": float(np.concatenate(same).mean()),
        "score_difference": finite(np.concatenate(scores).mean()),
        "box_difference": finite(np.concatenate(boxes).mean()),
    }


def finite(value) -> float:
    value = float(value)
    return value if np.isfinite(value) else float("inf")


def violation(measures: Dict[str, float], bounds: Bounds) -> Optional[str]:
    """The first measure outside ``bounds`` as ``"top-class agreement 0.62 < 0.9
    (--min-top-class)"``; None when all are within."""
    for measure, (field, side, option) in CHECKS.items():
        if measure not in measures:
            continue
        value, bound = measures[measure], getattr(bounds, field)
        inside = value >= bound if side == "min" else value <= bound  # NaN is outside
        if not inside:
            sign = "<" if side == "min" else ">"
            return f"{describe(measure)} {value:.4g} {sign} {bound:g} ({option})"
    return None


def describe(measure: str) -> str:
    return {
        "top_class": "top-class agreement of the RoIs",
        "score_difference": "mean absolute score difference",
        "box_difference": "mean box difference (pixels)",
        "relative_error": "relative output error",
        "top1": "top-1 agreement",
    }[measure]


def summary(measures: Dict[str, float]) -> str:
    """The measures on one line."""
    return ", ".join(f"{describe(k)} {v:.4g}" for k, v in measures.items())
