"""Theoretical vs measured speed of the original and accelerated VGG-16 backbone and Fast R-CNN
detector (the paper's Table 8 and Fig. 7), and the levers that close the gap on a given machine.

* **Multiply-adds.** Ours: :mod:`accel_det.solver.complexity` (the count every theoretical
  speedup of accel-det comes from) for the conv layers, plus RoIs × in × out for the box head's
  fully connected layers; cross-checked with fvcore (``FlopCountAnalysis``, which counts one
  multiply-add per conv / linear "flop"). Theoretical speedup (conv) is the paper's: all conv
  layers; for the detector also over all multiply-adds (fc6/fc7 are not accelerated).
* **Latency.** :func:`accel_det.utils.timing.measure_for` (the one timer): warm-up
  rounds, then the median of interleaved rounds, at a stated torch thread count; CUDA events on
  a GPU. Actual speedup = original median / accelerated median, both at the same thread count.
* **Levers** (:func:`lever_matrix`): memory format (contiguous, channels_last), ranks rounded to
  a multiple (oneDNN's thin convs run in 16-channel steps), thread count, and an inference-only
  form that fuses bias + ReLU into oneDNN's conv and prepacks the weights
  (:func:`fuse_for_inference`). Each model is compared in its best allowed form against the
  original in *its* best allowed form.

Weights are random (He-initialised, so activations keep their scale): speed does not depend on
them. Plans come from the solver (ranks selected from eigenvalues of responses of the random-
weight VGG-16 to generated images: there are no ImageNet weights here), from the paper's Table 6
ranks, or from plan files made elsewhere. Nothing here imports detectron2 at module level; the
detector functions import it when called."""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import AccelDetError
from ..utils.timing import measure_for
from .fast_rcnn import detector_inputs
from .forms import MODES, fusion_available, model_form
from .macs import detector_fvcore_macs, detector_macs, features_macs, fvcore_macs
from .subjects import ORIGINAL_NAME

SPEED_FORMAT = "accel-det-speed/1"

MIN_SIZE = {"backbone": 32, "detector": 16}  # smallest input side each part runs at

QUICK_CASES = ("backbone:224:1", "backbone:600x1000:1", "detector:224:1", "detector:600x1000:1")
FULL_CASES = (
    "backbone:224:1",
    "backbone:224:8",
    "backbone:600x1000:1",
    "detector:224:1",
    "detector:224:8",
    "detector:600x1000:1",
)
# batch 8 at 600x1000 takes 33 s per call of the original on one CPU thread (4-5 minutes a case):
# GPU only by default
GPU_CASES = FULL_CASES + ("backbone:600x1000:8", "detector:600x1000:8")

NOTES = [
    "Random He-initialised weights: speed does not depend on the values.",
    "The solver's plans: rank selection (eqs. 13-14, multiply-add budget) on eigenvalues of "
    "responses of the random-weight VGG-16 to generated images (no ImageNet weights here); ranks "
    "rounded: d' by the solver's round_ranks_to, asym3d's d'' by spatial_ranks(round_to=...), both "
    "at the same multiply-add budget.",
    "Latency: torch.inference_mode, warm-up, then interleaved rounds (one call of each model per "
    "round), median; actual speedup = original median / model median at the same thread count.",
    "Detector: Detectron2 Fast R-CNN (configs/vgg16_voc.yaml, accel_vgg16_voc.yaml with the plan), "
    "random precomputed proposals, box head shared between models, classifier set so that no box "
    "passes the score threshold (NMS left out).",
]


@dataclasses.dataclass
class Case:
    """One cell of the grid: ``part`` (backbone or detector), input size, batch size."""

    part: str
    hw: Tuple[int, int]
    batch: int

    @property
    def label(self) -> str:
        return f"{self.part} {self.hw[0]}x{self.hw[1]} b{self.batch}"

    @classmethod
    def parse(cls, text: str) -> "Case":
        """``backbone:224:1``, ``detector:600x1000:8``."""
        try:
            part, size, batch = text.split(":")
            h, _, w = size.partition("x")
            case = cls(part, (int(h), int(w or h)), int(batch))
        except ValueError:
            raise AccelDetError(
                f"bad case {text!r}: expected PART:HxW:BATCH, e.g. detector:600x1000:1"
            ) from None
        # VGG-16's features halve the input five times (the detector's backbone four: conv5_3)
        if (
            part not in ("backbone", "detector")
            or case.batch < 1
            or min(case.hw) < MIN_SIZE.get(part, 0)
        ):
            raise AccelDetError(
                f"bad case {text!r}: part backbone (size >= {MIN_SIZE['backbone']}) or detector "
                f"(size >= {MIN_SIZE['detector']}), batch >= 1"
            )
        return case

    def __str__(self) -> str:
        return f"{self.part}:{self.hw[0]}x{self.hw[1]}:{self.batch}"


def lever_matrix(
    features: nn.Sequential,
    models: Mapping[str, nn.Sequential],
    *,
    input_hw: Tuple[int, int],
    batch: int = 1,
    threads: Sequence[int] = (1, 2),
    modes: Sequence[str] = MODES,
    seconds: float = 20.0,
    warmup: int = 2,
    min_repeats: int = 3,
    max_repeats: int = 11,
    seed: int = 0,
    progress: Optional[Callable[[str], None]] = None,
) -> dict:
    """Median latency of the original ``features`` and of each accelerated model in each mode, at
    each thread count (all models and modes of one thread count interleaved). Also the largest
    relative output difference of each mode against the contiguous eager model (a check)."""
    torch.manual_seed(seed)
    x = torch.randn(batch, 3, *input_hw)
    modes = [m for m in modes if m != "fused" or fusion_available()]
    all_models = {ORIGINAL_NAME: features, **models}
    forms: Dict[Tuple[str, str], nn.Module] = {}
    check: Dict[str, Dict[str, float]] = {}
    with torch.inference_mode():
        for name, model in all_models.items():
            reference = model(x)
            for mode in modes:
                form = model_form(model, mode, x)
                forms[(name, mode)] = form
                if mode != "contiguous":
                    out = form(x)
                    check.setdefault(name, {})[mode] = float(
                        (out - reference).norm() / reference.norm()
                    )
    result = {
        "input_hw": list(input_hw),
        "batch": batch,
        "modes": list(modes),
        "timings": {},
        "output_check": check,
    }
    for count in threads:
        calls = {f"{name}|{mode}": (lambda m=form: m(x)) for (name, mode), form in forms.items()}
        start = time.perf_counter()
        timed = measure_for(
            calls,
            threads=count,
            seconds=seconds,
            warmup=warmup,
            min_repeats=min_repeats,
            max_repeats=max_repeats,
        )
        table: Dict[str, Dict[str, dict]] = {}
        for key, summary in timed.items():
            name, mode = key.split("|")
            table.setdefault(name, {})[mode] = summary
        result["timings"][str(count)] = table
        if progress:
            progress(
                f"levers at {count} thread(s): {len(calls)} forms, "
                f"{next(iter(timed.values()))['repeats']} rounds, "
                f"{time.perf_counter() - start:.0f}s"
            )
    return result


LEVERS = (
    # label, rounded ranks?, modes each model may use (its fastest counts),
    # thread count (None: best)
    ("as solved, contiguous, 1 thread (straightforward PyTorch)", False, ("contiguous",), 1),
    ("channels_last (alone)", False, ("contiguous", "channels_last"), 1),
    ("ranks rounded (alone)", True, ("contiguous",), 1),
    ("2 threads (alone)", False, ("contiguous",), 2),
    (
        "fused bias/ReLU + prepacked, inference only (with channels_last)",
        False,
        ("contiguous", "channels_last", "fused"),
        1,
    ),
    (
        "channels_last + ranks rounded, 1 thread (eager, "
        "trainable: compress(round_ranks_to=16) in channels_last)",
        True,
        ("contiguous", "channels_last"),
        1,
    ),
    ("channels_last + ranks rounded, 2 threads", True, ("contiguous", "channels_last"), 2),
    ("all levers (best thread count)", True, ("contiguous", "channels_last", "fused"), None),
)


def best_form(timings: Mapping[str, dict], modes: Iterable[str]) -> Optional[Tuple[float, str]]:
    found = [(timings[m]["median_ms"], m) for m in modes if m in timings]
    return min(found) if found else None


def lever_rows(
    matrix: Mapping, plans: Mapping[str, Mapping], families: Sequence[str], round_to: int
) -> List[dict]:
    """Per lever (:data:`LEVERS`) and per plan family (``asym``, ``asym3d``, ...): the actual
    speedup (original's best allowed form over the model's best allowed form, same threads) and the
    ratio actual / theoretical. A family's rounded plan is ``"<family>, ranks x<round_to>"``."""
    rows = []
    thread_counts = sorted(int(t) for t in matrix["timings"])
    for label, rounded, modes, threads in LEVERS:
        row = {"lever": label, "modes": list(modes), "threads": threads, "cells": {}}
        for family in families:
            name = f"{family}, ranks x{round_to}" if rounded else family
            if rounded and name not in plans:
                continue
            best = None
            for count in [threads] if threads else thread_counts:
                timings = matrix["timings"].get(str(count))
                if not timings or name not in timings:
                    continue
                original, model = (
                    best_form(timings[ORIGINAL_NAME], modes),
                    best_form(timings[name], modes),
                )
                if original is None or model is None:
                    continue
                speedup = original[0] / model[0]
                if best is None or speedup > best["actual_speedup"]:
                    theoretical = plans[name]["theoretical_speedup"]
                    best = {
                        "plan": name,
                        "threads": count,
                        "original_ms": original[0],
                        "original_mode": original[1],
                        "ms": model[0],
                        "mode": model[1],
                        "actual_speedup": speedup,
                        "theoretical_speedup": theoretical,
                        "ratio": speedup / theoretical,
                    }
            if best is not None:
                row["cells"][family] = best
        rows.append(row)
    return rows


def backbone_case(
    case: Case,
    features: nn.Sequential,
    models: Mapping[str, nn.Sequential],
    plans: Mapping[str, Mapping],
    *,
    threads: int,
    seconds: float,
    device="cpu",
    dtype=torch.float32,
    check_fvcore: bool = True,
    warmup: int = 1,
    min_repeats: int = 3,
    max_repeats: int = 15,
    seed: int = 0,
) -> List[dict]:
    """One backbone case: every model in channels_last (the best eager format, see the levers),
    timed interleaved; rows with multiply-adds, theoretical and actual speedups."""
    torch.manual_seed(seed)
    device = torch.device(device)
    x = torch.randn(case.batch, 3, *case.hw, device=device, dtype=dtype).contiguous(
        memory_format=torch.channels_last
    )
    all_models = {ORIGINAL_NAME: features, **models}
    forms = {
        name: copy.deepcopy(m)
        .to(device=device, dtype=dtype, memory_format=torch.channels_last)
        .eval()
        for name, m in all_models.items()
    }
    macs, checked = backbone_counts(all_models, case, check_fvcore)
    timed = measure_for(
        {n: (lambda m=f: m(x)) for n, f in forms.items()},
        threads=threads,
        seconds=seconds,
        warmup=warmup,
        min_repeats=min_repeats,
        max_repeats=max_repeats,
        device=device,
    )
    return grid_rows(case, timed, macs, macs, checked, plans, dtype)


def backbone_counts(models: Mapping[str, nn.Module], case: Case, check_fvcore: bool):
    """Multiply-adds of each backbone for ``case`` (ours) and, with ``check_fvcore``, fvcore's
    (empty without)."""
    counts = {name: features_macs(m, case.hw, case.batch) for name, m in models.items()}
    if not check_fvcore:
        return counts, {}
    probe = torch.randn(1, 3, *case.hw)
    return counts, {name: fvcore_macs(m, (probe,)) * case.batch for name, m in models.items()}


def grid_rows(case: Case, timed, macs, conv, checked, plans, dtype) -> List[dict]:
    base = timed[ORIGINAL_NAME]["median_ms"]
    rows = []
    for name, summary in timed.items():
        theoretical_conv = 1.0 if name == ORIGINAL_NAME else plans[name]["theoretical_speedup"]
        theoretical_all = macs[ORIGINAL_NAME] / macs[name]
        actual = base / summary["median_ms"]
        rows.append(
            {
                "case": str(case),
                "part": case.part,
                "input_hw": list(case.hw),
                "batch": case.batch,
                "model": name,
                "dtype": str(dtype).replace("torch.", ""),
                "memory_format": "channels_last",
                "macs": macs[name],
                "conv_macs": conv[name],
                "fvcore_macs": checked.get(name),
                "theoretical_speedup_conv": theoretical_conv,
                "theoretical_speedup_all": theoretical_all,
                "median_ms": summary["median_ms"],
                "latency": summary,
                "actual_speedup": actual,
                "ratio": actual / theoretical_all,
            }
        )
    return rows


def detector_case(
    case: Case,
    detectors: Mapping[str, nn.Module],
    plans: Mapping[str, Mapping],
    *,
    threads: int,
    seconds: float,
    proposals: int = 300,
    device="cpu",
    check_fvcore: bool = True,
    warmup: int = 1,
    min_repeats: int = 2,
    max_repeats: int = 10,
    seed: int = 0,
) -> List[dict]:
    """One detector case: each detector (backbone in channels_last) called on the same inputs
    (Detectron2's preprocessing, backbone, RoI pooling, fc6/fc7, predictions, post-processing)."""
    inputs = detector_inputs(case, proposals, seed, device)
    macs, conv, checked = {}, {}, {}
    for name, model in detectors.items():
        model.backbone.to(memory_format=torch.channels_last)
        macs[name], conv[name] = detector_macs(model, inputs)
        if check_fvcore:
            checked[name] = detector_fvcore_macs(model, inputs[:1]) * case.batch
    timed = measure_for(
        {n: (lambda m=m: m(inputs)) for n, m in detectors.items()},
        threads=threads,
        seconds=seconds,
        warmup=warmup,
        min_repeats=min_repeats,
        max_repeats=max_repeats,
        device=device,
    )
    rows = grid_rows(case, timed, macs, conv, checked, plans, torch.float32)
    for row in rows:
        row["proposals"] = proposals
    return rows
