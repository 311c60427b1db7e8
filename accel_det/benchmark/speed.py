"""Theoretical vs measured speed of the original and accelerated VGG-16 backbone and Fast R-CNN
detector (paper §6.6, Table 8, Fig. 7), and the levers that close the gap on a given machine.

* **Multiply-adds.** Ours: :mod:`accel_det.solver.complexity` (the count every theoretical
  speedup of accel-det comes from) for the conv layers, plus RoIs × in × out for the box head's
  fully connected layers; cross-checked with fvcore (``FlopCountAnalysis``, which counts one
  multiply-add per conv / linear "flop"). Theoretical speedup (conv) is the paper's: all conv
  layers; for the detector also over all multiply-adds (fc6/fc7 are not accelerated).
* **Latency.** :func:`accel_det.benchmark.latency.measure_many` (the solver's timer): warm-up
  rounds, then the median of interleaved rounds, at a stated torch thread count; CUDA events on
  a GPU. Actual speedup = original median / accelerated median, both at the same thread count.
* **Levers** (:func:`lever_matrix`): memory format (contiguous, channels_last), ranks rounded to
  a multiple (oneDNN's thin convs run in 16-channel steps), thread count, and an inference-only
  form that fuses bias + ReLU into oneDNN's conv and prepacks the weights (:func:`fuse_for_inference`).
  Each model is compared in its best allowed form against the original in *its* best allowed form.

Weights are random (He-initialised, so activations keep their scale): speed does not depend on
them. Plans come from the solver (ranks selected from eigenvalues of responses of the random-
weight VGG-16 to generated images: there are no ImageNet weights here), from the paper's Table 6
ranks, or from plan files made elsewhere. Nothing here imports detectron2 at module level; the
detector functions import it when called.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import AccelDetError
from ..layers import CHANNEL, ORIGINAL, FactorizedConv2d
from ..models.vgg import init_vgg_weights, vgg16_features
from ..report import plan_fingerprint
from ..solver.complexity import conv_macs, speedup_ratio, structure_macs
from ..solver.latency import num_threads, time_calls
from ..solver.network import apply_plan, conv_names, conv_specs
from ..solver.ranks import budget_macs, spatial_ranks
from .latency import summarize

SPEED_FORMAT = "accel-det-speed/1"
ORIGINAL_NAME = "original"
MODES = ("contiguous", "channels_last", "fused")

# Paper Table 6, VGG-16 at 4x with rank selection (asym., conv1_1 kept): d' of conv1_2 ... conv5_3.
TABLE6_4X_RANKS = {"conv1_2": 11, "conv2_1": 25, "conv2_2": 28, "conv3_1": 52, "conv3_2": 46, "conv3_3": 56,
                   "conv4_1": 104, "conv4_2": 92, "conv4_3": 100, "conv5_1": 232, "conv5_2": 224, "conv5_3": 214}
TABLE6_NAME = "asym (Table 6 ranks)"


# --------------------------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------------------------


def describe_plan(specs: Sequence, layers: Mapping[str, Mapping], **fields) -> dict:
    """A plan dict (the solver's ``accel-det-plan/1`` layout, without solver results) for the
    structures in ``layers`` (name → ``structure``, ``rank``, ``spatial_rank``; missing: original),
    with the multiply-adds of :mod:`accel_det.solver.complexity`."""
    entries = {}
    for spec in specs:
        given = layers.get(spec.name, {})
        structure = given.get("structure", ORIGINAL)
        rank, spatial_rank = given.get("rank"), given.get("spatial_rank")
        entries[spec.name] = {**spec.to_dict(), "structure": structure, "rank": rank, "spatial_rank": spatial_rank,
                              "macs": structure_macs(spec, structure, rank, spatial_rank),
                              "original_macs": conv_macs(spec)}
    original = sum(e["original_macs"] for e in entries.values())
    approximated = sum(e["macs"] for e in entries.values())
    return {"format": "accel-det-plan/1", **fields, "theoretical_speedup": speedup_ratio(original, approximated),
            "original_macs": original, "approximated_macs": approximated, "layers": entries}


def table6_plan(features: nn.Sequential, input_hw: Tuple[int, int] = (224, 224)) -> dict:
    """The paper's VGG-16 4x ranks (Table 6, asym., rank selection) as a ``channel`` plan."""
    specs = conv_specs(features, input_hw)
    if [s.out_channels for s in specs] != [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]:
        raise AccelDetError("the Table 6 ranks are for full-width VGG-16 (width 1)")
    layers = {name: {"structure": CHANNEL, "rank": rank} for name, rank in TABLE6_4X_RANKS.items()}
    return describe_plan(specs, layers, method="asym", source="paper Table 6, 4x, rank selection", skip=["conv1_1"])


def round_spatial_ranks(plan: Mapping, specs: Sequence, round_to: int) -> dict:
    """An asym3d / jaderberg plan whose d'' are multiples of ``round_to`` at the same multiply-add
    budget (:func:`accel_det.solver.ranks.spatial_ranks` with ``round_to``; the d' stay)."""
    layers = plan["layers"]
    spatial = [s for s in specs if layers[s.name].get("spatial_rank")]
    if not spatial or round_to <= 1:
        return dict(plan)
    ranks = {s.name: layers[s.name]["rank"] for s in spatial if layers[s.name].get("rank")}
    unchanged = [s for s in specs if s not in spatial]
    fixed = sum(layers[s.name]["macs"] for s in unchanged)  # original layers and channel-only layers
    total = sum(conv_macs(s) for s in specs)
    budget = budget_macs(specs, plan["speedup"], []) if "speedup" in plan else total / plan["theoretical_speedup"]
    new = spatial_ranks(spatial, budget - fixed, ranks or None, round_to=round_to)
    entries = {name: {"structure": e["structure"], "rank": e.get("rank"),
                      "spatial_rank": new.get(name, e.get("spatial_rank"))} for name, e in layers.items()}
    keep = {k: v for k, v in plan.items() if k not in ("layers", "theoretical_speedup", "original_macs", "approximated_macs")}
    return describe_plan(specs, entries, **keep, round_spatial_ranks_to=int(round_to))


def sampled_eigenvalues(features: nn.Sequential, images: torch.Tensor, *, samples_per_image: int,
                        seed: int = 0) -> Dict[str, torch.Tensor]:
    """Per conv layer, the eigenvalues (largest first) of the covariance of its responses sampled
    at random positions of ``images`` (what rank selection reads, eqs. 13-14)."""
    from ..solver.channel import covariance, eigen_descending
    from ..solver.responses import collect_original_responses

    names = conv_names(features)
    batches = [images[i:i + 8] for i in range(0, len(images), 8)]
    truth, _ = collect_original_responses(features, batches, names, samples_per_image, seed, None, False)
    return {name: eigen_descending(covariance(truth[name])[1])[0] for name in names}


def solver_plans(features: nn.Sequential, eigenvalues: Mapping[str, torch.Tensor], input_hw: Tuple[int, int], *,
                 speedup: float = 4.0, methods: Sequence[str] = ("asym", "asym3d"), round_to: int = 16,
                 skip: Sequence[str] = ("conv1_1",)) -> Dict[str, dict]:
    """The plans ``compress`` would follow (rank selection by multiply-adds) for each method, as
    solved and with ranks rounded to ``round_to`` (d' by the solver's ``round_ranks_to``; d'' of
    asym3d by :func:`round_spatial_ranks`)."""
    from ..solver import pipeline  # the solver's own plan maker: the same ranks compress would use

    specs = conv_specs(features, input_hw)
    plans = {}
    for method in methods:
        for multiple in ((1, round_to) if round_to > 1 else (1,)):
            plan = pipeline._make_plan(specs, eigenvalues, method, speedup, True, skip, "with_1x1", None, multiple)
            if multiple > 1 and method in ("asym3d", "jaderberg"):
                plan = round_spatial_ranks(plan, specs, multiple)
            plans[method if multiple == 1 else f"{method}, ranks x{multiple}"] = plan
    return plans


def plan_summary(plan: Mapping) -> dict:
    """What a reader needs of a plan: method, theoretical speedup, d' and d'' per layer."""
    layers = plan["layers"]
    return {"method": plan.get("method"), "theoretical_speedup": plan.get("theoretical_speedup"),
            "fingerprint": plan_fingerprint(plan),
            "ranks": {n: e.get("rank") for n, e in layers.items() if e.get("rank")},
            "spatial_ranks": {n: e.get("spatial_rank") for n, e in layers.items() if e.get("spatial_rank")},
            **({"source": plan["source"]} if isinstance(plan.get("source"), str) else {}),
            **({"file": plan["file"]} if plan.get("file") else {})}


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def random_features(width: float = 1.0, seed: int = 0) -> nn.Sequential:
    """VGG-16 ``features`` with He-initialised random weights (speed does not depend on them)."""
    torch.manual_seed(seed)
    features = vgg16_features(width)
    init_vgg_weights(features)
    return features.eval()


def accelerated_features(features: nn.Sequential, plan: Mapping, seed: int = 0) -> nn.Sequential:
    """The plan's architecture on ``features``, every conv He-initialised (random weights keep the
    activations' scale, so no layer runs on denormal numbers)."""
    torch.manual_seed(seed)
    model = apply_plan(features, plan)
    init_vgg_weights(model)
    return model.eval()


class FusedConv2d(nn.Module):
    """Inference-only conv (+ ReLU) through oneDNN's fused op (``mkldnn._convolution_pointwise``,
    what torch.compile's CPU backend emits), with the weight reordered once for the input shape it
    was built for. Not trainable; outputs equal ``relu(conv(x))`` (tested)."""

    def __init__(self, conv: nn.Conv2d, relu: bool, input_shape: Sequence[int]):
        super().__init__()
        self.stride, self.padding, self.dilation = list(conv.stride), list(conv.padding), list(conv.dilation)
        self.groups = conv.groups
        self.attr = "relu" if relu else "none"
        weight = conv.weight.detach()
        try:
            weight = torch._C._nn.mkldnn_reorder_conv2d_weight(weight.to_mkldnn(), self.padding, self.stride,
                                                               self.dilation, self.groups, list(input_shape))
        except (RuntimeError, AttributeError):  # keep the plain weight: oneDNN reorders it per call
            pass
        self.weight = weight
        self.bias = conv.bias.detach() if conv.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._convolution_pointwise(x, self.weight, self.bias, self.padding, self.stride,
                                                      self.dilation, self.groups, self.attr, [None], "")


def fusion_available() -> bool:
    """Whether this PyTorch has oneDNN's fused conv op (CPU builds with mkldnn)."""
    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def fuse_for_inference(features: nn.Sequential, example: torch.Tensor) -> nn.Sequential:
    """A channels_last, inference-only copy of ``features`` (CPU): every conv (also each conv of a
    factorized layer) becomes a :class:`FusedConv2d`, with the ReLU after it fused in. ``example``
    gives the input shape the weights are prepacked for."""
    if not fusion_available():
        raise AccelDetError("this PyTorch build has no oneDNN fused convolution (torch.ops.mkldnn._convolution_pointwise)")
    leaves: List[nn.Module] = []
    for module in features:
        leaves += list(module.children()) if isinstance(module, FactorizedConv2d) else [module]
    fused: List[nn.Module] = []
    x = example.contiguous(memory_format=torch.channels_last)
    index = 0
    with torch.inference_mode():
        while index < len(leaves):
            module = leaves[index]
            if isinstance(module, nn.Conv2d):
                relu = index + 1 < len(leaves) and isinstance(leaves[index + 1], nn.ReLU)
                fused.append(FusedConv2d(module, relu, x.shape))
                x = module(x)
                index += 2 if relu else 1
            else:
                fused.append(copy.deepcopy(module))
                x = module(x)
                index += 1
    return nn.Sequential(*fused).eval()


def model_form(features: nn.Sequential, mode: str, example: torch.Tensor) -> nn.Module:
    """``features`` as timed in ``mode`` (one of :data:`MODES`); a copy, ``features`` is untouched."""
    if mode == "contiguous":
        return copy.deepcopy(features)
    if mode == "channels_last":
        return copy.deepcopy(features).to(memory_format=torch.channels_last)
    if mode == "fused":
        return fuse_for_inference(features, example)
    raise AccelDetError(f"unknown mode {mode!r}; expected one of {MODES}")


def keep_freed_memory() -> bool:
    """Make glibc's malloc serve every allocation from its heap and keep freed memory there
    (``mallopt``: no mmap, no trim), for the rest of the process. By default a block over 32 MB
    (an activation of VGG-16 at 600x1000: 64 x 600 x 1000 floats = 154 MB) is mmap'ed and handed
    back to the kernel when freed, so every call page-faults (and the kernel zeroes) all its large
    activations again; the accelerated model, with one more activation per factorized layer,
    pays more of it. jemalloc or tcmalloc (LD_PRELOAD) do the same. Returns False where glibc's
    ``mallopt`` is not available (nothing changes)."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False


# --------------------------------------------------------------------------------------------
# Multiply-adds
# --------------------------------------------------------------------------------------------


def features_macs(features: nn.Sequential, input_hw: Tuple[int, int], batch: int = 1) -> int:
    """Multiply-adds of every conv of ``features`` (plain or factorized) for ``batch`` images of
    ``input_hw``, by :mod:`accel_det.solver.complexity` (the theoretical speedup's count)."""
    total = 0
    layers = conv_names(features)
    for spec in conv_specs(features, tuple(input_hw)):
        module = features[layers[spec.name]]
        if isinstance(module, FactorizedConv2d):
            total += structure_macs(spec, module.structure, module.rank, module.spatial_rank)
        else:
            total += conv_macs(spec)
    return total * batch


def fvcore_macs(model: nn.Module, inputs) -> int:
    """fvcore's count (one "flop" per multiply-add of convs and linear layers) for one call."""
    import fvcore.nn

    analysis = fvcore.nn.FlopCountAnalysis(model, inputs)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return int(analysis.total())


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def measure_calls(calls: Mapping[str, Callable[[], object]], *, threads: Optional[int], seconds: float,
                  warmup: int = 1, min_repeats: int = 3, max_repeats: int = 15, device=None) -> Dict[str, dict]:
    """:func:`accel_det.benchmark.latency.measure_many`, with as many timed rounds as fit in about
    ``seconds`` (between ``min_repeats`` and ``max_repeats``): the first warm-up round is timed to
    size the rest. Interleaved, medians, ``threads`` torch threads."""
    with num_threads(threads) as used:
        first = time_calls(calls, warmup=0, repeats=1, device=device) if warmup > 0 else None
        if first is not None:
            round_seconds = sum(t[0] for t in first.values())
            repeats = int(min(max_repeats, max(min_repeats, seconds // max(round_seconds, 1e-6))))
        else:
            repeats = max_repeats
        times = time_calls(calls, warmup=max(0, warmup - 1), repeats=repeats, device=device)
    return {name: summarize(t, used, warmup) for name, t in times.items()}


MIN_SIZE = {"backbone": 32, "detector": 16}  # smallest input side each part runs at


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
            raise AccelDetError(f"bad case {text!r}: expected PART:HxW:BATCH, e.g. detector:600x1000:1") from None
        # VGG-16's features halve the input five times (the detector's backbone four: conv5_3)
        if part not in ("backbone", "detector") or case.batch < 1 or min(case.hw) < MIN_SIZE.get(part, 0):
            raise AccelDetError(f"bad case {text!r}: part backbone (size >= {MIN_SIZE['backbone']}) or detector "
                                f"(size >= {MIN_SIZE['detector']}), batch >= 1")
        return case

    def __str__(self) -> str:
        return f"{self.part}:{self.hw[0]}x{self.hw[1]}:{self.batch}"


def lever_matrix(features: nn.Sequential, models: Mapping[str, nn.Sequential], *, input_hw: Tuple[int, int],
                 batch: int = 1, threads: Sequence[int] = (1, 2), modes: Sequence[str] = MODES,
                 seconds: float = 20.0, warmup: int = 2, min_repeats: int = 3, max_repeats: int = 11,
                 seed: int = 0, progress: Optional[Callable[[str], None]] = None) -> dict:
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
                    check.setdefault(name, {})[mode] = float((out - reference).norm() / reference.norm())
    result = {"input_hw": list(input_hw), "batch": batch, "modes": list(modes), "timings": {}, "output_check": check}
    for count in threads:
        calls = {f"{name}|{mode}": (lambda m=form: m(x)) for (name, mode), form in forms.items()}
        start = time.perf_counter()
        timed = measure_calls(calls, threads=count, seconds=seconds, warmup=warmup, min_repeats=min_repeats,
                              max_repeats=max_repeats)
        table: Dict[str, Dict[str, dict]] = {}
        for key, summary in timed.items():
            name, mode = key.split("|")
            table.setdefault(name, {})[mode] = summary
        result["timings"][str(count)] = table
        if progress:
            progress(f"levers at {count} thread(s): {len(calls)} forms, {next(iter(timed.values()))['repeats']} "
                     f"rounds, {time.perf_counter() - start:.0f}s")
    return result


def layer_profile(model: nn.Sequential, x: torch.Tensor, *, threads: Optional[int] = 1, repeats: int = 5) -> dict:
    """Median milliseconds of each leaf module (each conv of a factorized layer on its own), run
    one after another on ``x`` (after one untimed pass), summed into conv and non-conv time
    (ReLU, max-pool). The factorization leaves the non-conv time as it is, which bounds the
    actual speedup at r times fewer conv multiply-adds: T / (T_conv / r + T_other)."""
    import statistics

    leaves: List[Tuple[str, nn.Module]] = []
    for index, module in enumerate(model):
        if isinstance(module, FactorizedConv2d):
            leaves += [(f"{index}.{name}", child) for name, child in module.named_children()]
        else:
            leaves.append((str(index), module))
    times: Dict[str, List[float]] = {name: [] for name, _ in leaves}
    with num_threads(threads), torch.inference_mode():
        for round_ in range(repeats + 1):
            h = x
            for name, module in leaves:
                start = time.perf_counter()
                h = module(h)
                if round_:
                    times[name].append(1e3 * (time.perf_counter() - start))
    medians = {name: statistics.median(v) for name, v in times.items()}
    conv = sum(medians[name] for name, module in leaves if isinstance(module, nn.Conv2d))
    other = sum(medians.values()) - conv
    return {"conv_ms": conv, "other_ms": other, "total_ms": conv + other, "layers": medians}


LEVERS = (
    # label, rounded ranks?, modes each model may use (its fastest counts), thread count (None: best)
    ("as solved, contiguous, 1 thread (straightforward PyTorch)", False, ("contiguous",), 1),
    ("channels_last (alone)", False, ("contiguous", "channels_last"), 1),
    ("ranks rounded (alone)", True, ("contiguous",), 1),
    ("2 threads (alone)", False, ("contiguous",), 2),
    ("fused bias/ReLU + prepacked, inference only (with channels_last)", False, ("contiguous", "channels_last", "fused"), 1),
    ("channels_last + ranks rounded, 1 thread (eager, trainable: compress(round_ranks_to=16) in channels_last)", True, ("contiguous", "channels_last"), 1),
    ("channels_last + ranks rounded, 2 threads", True, ("contiguous", "channels_last"), 2),
    ("all levers (best thread count)", True, ("contiguous", "channels_last", "fused"), None),
)


def _best(timings: Mapping[str, dict], modes: Iterable[str]) -> Optional[Tuple[float, str]]:
    found = [(timings[m]["median_ms"], m) for m in modes if m in timings]
    return min(found) if found else None


def lever_rows(matrix: Mapping, plans: Mapping[str, Mapping], families: Sequence[str], round_to: int) -> List[dict]:
    """Per lever (:data:`LEVERS`) and per plan family (``asym``, ``asym3d``, ...): the actual speedup
    (original's best allowed form over the model's best allowed form, same threads) and the ratio
    actual / theoretical. A family's rounded plan is ``"<family>, ranks x<round_to>"``."""
    rows = []
    thread_counts = sorted(int(t) for t in matrix["timings"])
    for label, rounded, modes, threads in LEVERS:
        row = {"lever": label, "modes": list(modes), "threads": threads, "cells": {}}
        for family in families:
            name = f"{family}, ranks x{round_to}" if rounded else family
            if rounded and name not in plans:
                continue
            best = None
            for count in ([threads] if threads else thread_counts):
                timings = matrix["timings"].get(str(count))
                if not timings or name not in timings:
                    continue
                original, model = _best(timings[ORIGINAL_NAME], modes), _best(timings[name], modes)
                if original is None or model is None:
                    continue
                speedup = original[0] / model[0]
                if best is None or speedup > best["actual_speedup"]:
                    theoretical = plans[name]["theoretical_speedup"]
                    best = {"plan": name, "threads": count, "original_ms": original[0], "original_mode": original[1],
                            "ms": model[0], "mode": model[1], "actual_speedup": speedup,
                            "theoretical_speedup": theoretical, "ratio": speedup / theoretical}
            if best is not None:
                row["cells"][family] = best
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# The grid: backbone and detector, sizes and batches
# --------------------------------------------------------------------------------------------


def backbone_case(case: Case, features: nn.Sequential, models: Mapping[str, nn.Sequential], plans: Mapping[str, Mapping],
                  *, threads: int, seconds: float, device="cpu", dtype=torch.float32, check_fvcore: bool = True,
                  warmup: int = 1, min_repeats: int = 3, max_repeats: int = 15, seed: int = 0) -> List[dict]:
    """One backbone case: every model in channels_last (the best eager format, see the levers),
    timed interleaved; rows with multiply-adds, theoretical and actual speedups."""
    torch.manual_seed(seed)
    device = torch.device(device)
    x = torch.randn(case.batch, 3, *case.hw, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    all_models = {ORIGINAL_NAME: features, **models}
    forms = {name: copy.deepcopy(m).to(device=device, dtype=dtype, memory_format=torch.channels_last).eval()
             for name, m in all_models.items()}
    macs = {name: features_macs(m, case.hw, case.batch) for name, m in all_models.items()}
    checked = {}
    if check_fvcore:
        probe = torch.randn(1, 3, *case.hw)
        checked = {name: fvcore_macs(m, (probe,)) * case.batch for name, m in all_models.items()}
    timed = measure_calls({n: (lambda m=f: m(x)) for n, f in forms.items()}, threads=threads, seconds=seconds,
                          warmup=warmup, min_repeats=min_repeats, max_repeats=max_repeats, device=device)
    return _rows(case, timed, macs, macs, checked, plans, dtype)


def _rows(case: Case, timed, macs, conv, checked, plans, dtype) -> List[dict]:
    base = timed[ORIGINAL_NAME]["median_ms"]
    rows = []
    for name, summary in timed.items():
        theoretical_conv = 1.0 if name == ORIGINAL_NAME else plans[name]["theoretical_speedup"]
        theoretical_all = macs[ORIGINAL_NAME] / macs[name]
        actual = base / summary["median_ms"]
        rows.append({
            "case": str(case), "part": case.part, "input_hw": list(case.hw), "batch": case.batch, "model": name,
            "dtype": str(dtype).replace("torch.", ""), "memory_format": "channels_last",
            "macs": macs[name], "conv_macs": conv[name], "fvcore_macs": checked.get(name),
            "theoretical_speedup_conv": theoretical_conv, "theoretical_speedup_all": theoretical_all,
            "median_ms": summary["median_ms"], "latency": summary,
            "actual_speedup": actual, "ratio": actual / theoretical_all,
        })
    return rows


def detector_inputs(case: Case, proposals: int = 300, seed: int = 0, device="cpu") -> List[dict]:
    """``case.batch`` Detectron2 inputs: random images of ``case.hw`` (0-255) and ``proposals``
    random precomputed boxes each (selective search itself is not timed)."""
    from detectron2.structures import Boxes, Instances

    g = torch.Generator().manual_seed(seed)
    h, w = case.hw
    inputs = []
    for _ in range(case.batch):
        image = torch.randint(0, 256, (3, h, w), generator=g).float()
        corner = torch.rand(proposals, 2, generator=g) * torch.tensor([w, h]) * 0.8
        size = torch.rand(proposals, 2, generator=g) * torch.tensor([w, h]) * 0.5 + 4
        boxes = torch.cat([corner, (corner + size).minimum(torch.tensor([w - 1.0, h - 1.0]))], 1)
        instances = Instances((h, w))
        instances.proposal_boxes = Boxes(boxes)
        instances.objectness_logits = torch.zeros(proposals)
        inputs.append({"image": image.to(device), "height": h, "width": w, "proposals": instances.to(device)})
    return inputs


def build_detectors(plans: Mapping[str, Mapping], plan_files: Mapping[str, str], *, width: float = 1.0,
                    opts: Sequence[str] = (), device="cpu", seed: int = 0) -> Dict[str, nn.Module]:
    """Fast R-CNN from ``configs/vgg16_voc.yaml`` and, per plan, from ``configs/accel_vgg16_voc.yaml``
    with ``MODEL.ACCEL.PLAN`` = its file; random weights (no ``MODEL.WEIGHTS`` loaded), the box
    head shared: every accelerated model takes the original's non-backbone weights. The classifier
    is set so that no box passes ``SCORE_THRESH_TEST``: NMS work, which random weights would make
    arbitrary and different per model, is left out (a few ms in a trained detector)."""
    import accel_det.detection  # noqa: F401  (registers the backbones and the box head)
    from detectron2.modeling import build_model

    from ..detection.config import load_config

    base = ["MODEL.DEVICE", str(device), "MODEL.VGG.WIDTH", width, "MODEL.WEIGHTS", "", *opts]
    torch.manual_seed(seed)
    original = build_model(load_config("vgg16_voc.yaml", base)).eval()
    predictor = original.roi_heads.box_predictor
    with torch.no_grad():
        predictor.cls_score.weight.zero_()
        predictor.cls_score.bias.zero_()
        predictor.cls_score.bias[-1] = 10.0  # background
    heads = {k: v for k, v in original.state_dict().items() if not k.startswith("backbone.")}
    detectors = {ORIGINAL_NAME: original}
    for name in plans:
        model = build_model(load_config("accel_vgg16_voc.yaml", base + ["MODEL.ACCEL.PLAN", plan_files[name]])).eval()
        missing, unexpected = model.load_state_dict(heads, strict=False)
        if unexpected or any(not k.startswith("backbone.") for k in missing):
            raise AccelDetError(f"the detectors of {name} and the original differ outside the backbone")
        detectors[name] = model
    return detectors


def detector_macs(model: nn.Module, inputs: Sequence[dict]) -> Tuple[int, int]:
    """(all, conv) multiply-adds of one detector call: the backbone's convs by
    :func:`features_macs` at the padded input size, plus RoIs × in × out of every linear layer of
    the RoI heads (fc6, fc7, classifier, box regressor)."""
    images = model.preprocess_image(inputs)
    hw = tuple(images.tensor.shape[-2:])
    conv = features_macs(model.backbone.features, hw, len(inputs))
    rois = sum(len(x["proposals"]) for x in inputs)
    linear = sum(m.in_features * m.out_features for m in model.roi_heads.modules() if isinstance(m, nn.Linear))
    return conv + rois * linear, conv


def detector_fvcore_macs(model: nn.Module, inputs: Sequence[dict]) -> int:
    """fvcore's count for one detector call (Detectron2's ``FlopCountAnalysis`` wrapper)."""
    from detectron2.utils.analysis import FlopCountAnalysis

    analysis = FlopCountAnalysis(model, list(inputs))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return int(analysis.total())


def detector_case(case: Case, detectors: Mapping[str, nn.Module], plans: Mapping[str, Mapping], *, threads: int,
                  seconds: float, proposals: int = 300, device="cpu", check_fvcore: bool = True, warmup: int = 1,
                  min_repeats: int = 2, max_repeats: int = 10, seed: int = 0) -> List[dict]:
    """One detector case: each detector (backbone in channels_last) called on the same inputs
    (Detectron2's preprocessing, backbone, RoI pooling, fc6/fc7, predictions, post-processing)."""
    inputs = detector_inputs(case, proposals, seed, device)
    macs, conv, checked = {}, {}, {}
    for name, model in detectors.items():
        model.backbone.to(memory_format=torch.channels_last)
        macs[name], conv[name] = detector_macs(model, inputs)
        if check_fvcore:
            checked[name] = detector_fvcore_macs(model, inputs[:1]) * case.batch
    timed = measure_calls({n: (lambda m=m: m(inputs)) for n, m in detectors.items()}, threads=threads,
                          seconds=seconds, warmup=warmup, min_repeats=min_repeats, max_repeats=max_repeats,
                          device=device)
    rows = _rows(case, timed, macs, conv, checked, plans, torch.float32)
    for row in rows:
        row["proposals"] = proposals
    return rows


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------


def _g(macs: Optional[int]) -> str:
    return "-" if macs is None else f"{macs / 1e9:.1f}"


def grid_table(rows: Sequence[Mapping]) -> str:
    """The grid as a Markdown table."""
    header = ["case", "model", "GMACs (ours)", "fvcore", "theor. (conv)", "theor. (all MACs)", "median ms",
              "actual speedup", "actual / theor."]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    for r in rows:
        if r.get("fvcore_macs") is None:
            agree = "-"
        elif r["fvcore_macs"] == r["macs"]:
            agree = "="
        else:
            agree = f"{_g(r['fvcore_macs'])} ({100 * (r['fvcore_macs'] / r['macs'] - 1):+.2f}%)"
        base = r["model"] == ORIGINAL_NAME
        lines.append("| " + " | ".join([
            f"{r['part']} {r['input_hw'][0]}x{r['input_hw'][1]} b{r['batch']}" + (f" {r['dtype']}" if r["dtype"] != "float32" else "")
            + (f" ({r['variant']})" if r.get("variant") else ""),
            r["model"], _g(r["macs"]), agree,
            "1.00x" if base else f"{r['theoretical_speedup_conv']:.2f}x",
            "1.00x" if base else f"{r['theoretical_speedup_all']:.2f}x",
            f"{r['median_ms']:.1f}", "1.00x" if base else f"{r['actual_speedup']:.2f}x",
            "-" if base else f"{r['ratio']:.2f}",
        ]) + " |")
    return "\n".join(lines)


def lever_table(rows: Sequence[Mapping], families: Sequence[str]) -> str:
    """The levers as a Markdown table: actual speedup (actual / theoretical) per family."""
    header = ["lever"] + [f"{f}: actual (actual / theor.)" for f in families]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "|".join(["---:"] * len(families)) + "|"]
    for row in rows:
        cells = [row["lever"]]
        for family in families:
            cell = row["cells"].get(family)
            cells.append("-" if cell is None else
                         f"{cell['actual_speedup']:.2f}x ({cell['ratio']:.2f})"
                         + (f", {cell['threads']}t" if row["threads"] is None else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def matrix_table(matrix: Mapping) -> str:
    """Median ms of every model × mode × thread count (the raw numbers behind the levers)."""
    modes = matrix["modes"]
    lines = []
    for count, table in matrix["timings"].items():
        header = [f"{count} thread(s): median ms"] + list(modes)
        lines += ["| " + " | ".join(header) + " |", "|---|" + "|".join(["---:"] * len(modes)) + "|"]
        for name, timings in table.items():
            lines.append("| " + " | ".join([name] + [f"{timings[m]['median_ms']:.1f}" if m in timings else "-"
                                                     for m in modes]) + " |")
        lines.append("")
    return "\n".join(lines).rstrip()


def paper_reference() -> str:
    """Table 8 / Fig. 7 at 4x for comparison."""
    return ("paper (Table 8, VGG-16 4x, 224x224 single view): CPU 3.8x actual (ratio 0.95, one thread, C++ with SSE), "
            "GPU (K40, Caffe) 2.9-3.0x (ratio 0.73-0.75)")


def largest_error(matrix: Mapping) -> float:
    """The largest relative output difference of any timed form against its contiguous model."""
    values = [v for modes in matrix.get("output_check", {}).values() for v in modes.values()]
    return max(values) if values else 0.0

