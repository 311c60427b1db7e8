"""``compress()``: the whole method, layer by layer from shallow to deep (paper-method §8)."""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import AccelDetError
from ..layers import CHANNEL, ORIGINAL, SPATIAL, SPATIAL_CHANNEL, build_layer
from .channel import (
    DEFAULT_SCHEDULE,
    covariance,
    eigen_descending,
    nonlinear_reconstruction,
    pca_energy,
    pca_reconstruction,
    relative_error,
)
from .distributed import broadcast_parameters, is_main_process, sum_over_processes
from .factorize import set_folded_weights, set_low_rank_weights, set_weights, unpadded_conv
from .complexity import conv_macs, speedup_ratio, structure_macs
from .network import conv_names, conv_specs
from .ranks import RANK_COSTS, budget_macs, channel_cost_table, cost_per_rank, round_down_ranks, select_ranks, spatial_ranks, uniform_ranks
from .responses import collect_original_responses, collect_regressor_responses
from .spatial import filter_reconstruction

logger = logging.getLogger(__name__)

METHODS = ("linear", "nonlinear", "asym", "asym3d", "jaderberg")
PLAN_FORMAT = "accel-det-plan/1"


@dataclass
class CompressionResult:
    """The accelerated ``features`` (a new ``nn.Sequential``) and its JSON-serialisable plan."""

    model: nn.Sequential
    plan: dict


def compress(
    features: nn.Sequential,
    batches: Iterable,
    *,
    speedup: float,
    method: str = "asym3d",
    rank_selection: bool = True,
    samples_per_image: int = 10,
    skip: Sequence[str] = ("conv1_1",),
    seed: int = 0,
    device=None,
    progress: bool = True,
    schedule: Sequence[Tuple[float, int]] = DEFAULT_SCHEDULE,
    rank_cost: str = "with_1x1",
    input_hw: Optional[Tuple[int, int]] = None,
    checkpoint: Optional[str] = None,
    resume: bool = False,
    on_layer_done: Optional[Callable[[str, dict], None]] = None,
    latency_table=None,
    round_ranks_to: int = 1,
    memory: int = 4 << 30,
) -> CompressionResult:
    """Accelerate every conv of ``features`` (Conv2d / ReLU / MaxPool2d, torchvision VGG layout) by
    ``speedup`` in theoretical multiply-adds, from responses sampled on ``batches``.

    ``method``: "linear" (eq. 4) and "nonlinear" (eq. 5) are the symmetric solutions, "asym" the
    asymmetric one (eq. 12), "asym3d" adds the spatial step of §5, "jaderberg" is the spatial-only
    baseline. ``batches`` is iterated several times and must give the same images each time; a
    one-shot iterator is kept in memory. ``input_hw`` sets the map sizes the multiply-adds are
    counted at (default: the first batch's). ``checkpoint`` is a file rewritten after each layer;
    with ``resume`` the run continues after the last layer it holds and ends identical to an
    uninterrupted run. ``features`` itself is left untouched.

    Under torch.distributed each process passes its own shard of the images, as
    ``{"images": ..., "indices": ...}`` batches whose indices number the images globally; the
    processes pool their samples and end with the same model, that of a single process.

    ``rank_cost="latency"`` (beyond the paper; methods linear, nonlinear, asym) makes rank selection
    spend a measured-latency budget from ``latency_table`` (:mod:`.latency`) instead of multiply-adds;
    ``round_ranks_to`` > 1 keeps every d' (and d'') a multiple of it (e.g. 8 for GPU kernels).

    ``memory`` (bytes, CPU) bounds the approximated activations carried from one layer to the next:
    where a layer's inputs for all images fit, the next layer's pass starts from them instead of
    re-running the approximated layers in front of it from the images. Results are the same.
    """
    _check_arguments(method, speedup, samples_per_image, rank_cost, schedule)
    _check_latency_arguments(method, rank_selection, rank_cost, latency_table, round_ranks_to)
    progress = progress and is_main_process()
    device = torch.device(device) if device is not None else _module_device(features)
    if iter(batches) is batches:
        batches = list(batches)
    names = conv_names(features)
    unknown = sorted(set(skip) - set(names))
    if unknown:
        raise AccelDetError(f"skip names layers the network does not have: {', '.join(unknown)}")
    original = copy.deepcopy(features).to(device).eval()

    truth, fingerprints = collect_original_responses(original, batches, names, samples_per_image, seed, device, progress)
    input_hw = tuple(input_hw or _first_hw(batches))
    specs = conv_specs(original, input_hw)
    eigenvalues = {spec.name: eigen_descending(covariance(truth[spec.name])[1])[0] for spec in specs}
    plan = _make_plan(specs, eigenvalues, method, speedup, rank_selection, skip, rank_cost, latency_table, round_ranks_to)
    plan.update(
        samples_per_image=samples_per_image,
        seed=seed,
        num_images=sum_over_processes(sum(len(f) for f in fingerprints)),
        num_samples={name: int(rows.shape[0]) for name, rows in truth.items()},
        schedule=[list(step) for step in schedule],
        input_hw=list(input_hw),
    )

    approximated = copy.deepcopy(original)
    done = set()
    if resume and checkpoint and os.path.exists(checkpoint):
        done = _load_checkpoint(checkpoint, plan, approximated, names)
        approximated.to(device)
        logger.info("resuming after %s", ", ".join(sorted(done, key=list(names).index)) or "nothing")

    layer_bar = tqdm(specs, desc=f"compress ({method})", disable=not progress)
    approximated_before = False
    inputs = None  # LayerInputs of the last solved layer, when they fit in ``memory``
    for number, spec in enumerate(layer_bar):
        entry = plan["layers"][spec.name]
        if spec.name in done:
            approximated_before = approximated_before or entry["structure"] != ORIGINAL or entry.get("rank") is not None
            continue
        start = time.perf_counter()
        index = names[spec.name]
        if entry["structure"] == ORIGINAL and entry.get("rank") is None:  # skipped: left as it is
            entry["error"] = 0.0 if not approximated_before else None
        else:
            layer, error, inputs = _solve_layer(
                spec, entry, original[index], approximated, truth[spec.name], method, batches, index, number,
                samples_per_image, seed, fingerprints, device, progress, schedule, inputs, memory,
            )
            broadcast_parameters(layer)
            approximated[index] = layer
            entry["error"] = error
            approximated_before = True
        entry["seconds"] = round(time.perf_counter() - start, 3)
        done.add(spec.name)
        if is_main_process():
            logger.info(
                "%s: %s rank=%s spatial_rank=%s PCA energy=%.4f error=%s %.1fs",
                spec.name, entry["structure"], entry.get("rank"), entry.get("spatial_rank"),
                entry["pca_energy"], _fmt(entry["error"]), entry["seconds"],
            )
        if checkpoint and is_main_process():
            _save_checkpoint(checkpoint, plan, approximated, done)
        if on_layer_done is not None:
            on_layer_done(spec.name, entry)
    return CompressionResult(model=approximated.cpu() if device.type != "cpu" else approximated, plan=plan)


def _solve_layer(spec, entry, conv, approximated, target, method, batches, index, number,
                 samples_per_image, seed, fingerprints, device, progress, schedule, inputs, memory):
    """Build the factorized layer of one plan entry, its relative error on the samples, and the
    layer's approximated inputs when they fit in ``memory``."""
    structure, rank = entry["structure"], entry.get("rank")
    layer = copy.deepcopy(conv) if structure == ORIGINAL else build_layer(conv, entry).to(device)
    spatial = structure in (SPATIAL, SPATIAL_CHANNEL)
    if spatial:
        # The spatial step on the original layer: (k×1, d'') then (1×k, d), filter reconstruction.
        vertical, horizontal = filter_reconstruction(conv.weight, entry["spatial_rank"])
        regressor = [unpadded_conv(vertical, None), unpadded_conv(horizontal, conv.bias)]
        set_weights(layer.vertical, vertical, None)
    else:
        regressor = [conv]
    regressed, inputs = collect_regressor_responses(
        approximated, batches, spec.name, index, number, regressor, samples_per_image, seed,
        fingerprints, device, progress, inputs, memory,
    )
    regressed = regressed.to(device)
    target = target.to(device)
    last = regressor[-1]

    if rank is None:  # jaderberg: the spatial step alone
        set_weights(layer.horizontal, last.weight, last.bias)
        return layer, relative_error(target, regressed, spec.relu), inputs

    if method == "linear":
        solution = pca_reconstruction(target, rank)
    elif method == "nonlinear":
        solution = nonlinear_reconstruction(target, target, rank, relu=spec.relu, schedule=schedule)
    else:  # asym, asym3d
        solution = nonlinear_reconstruction(target, regressed, rank, relu=spec.relu, schedule=schedule)
    if structure == SPATIAL_CHANNEL:
        set_low_rank_weights(layer.horizontal, layer.expand, last, solution)
    elif structure == CHANNEL:
        set_low_rank_weights(layer.reduce, layer.expand, last, solution)
    else:  # full rank d' = d: M folded into the layer that produces ŷ
        set_folded_weights(layer.horizontal if spatial else layer, last, solution)
    return layer, relative_error(target, solution.apply(regressed), spec.relu), inputs


def _make_plan(specs, eigenvalues, method, speedup, rank_selection, skip, rank_cost,
               latency_table=None, round_ranks_to=1) -> dict:
    """Structure and ranks of every layer for a whole-model theoretical ``speedup``."""
    skip = set(skip)
    solved = [s for s in specs if s.name not in skip]
    if not solved:
        raise AccelDetError("every conv layer is skipped: nothing to compress")
    spatial_ok = [s for s in solved if s.kernel_size[0] > 1 and s.kernel_size[1] > 1]
    _check_reachable(specs, solved, spatial_ok, speedup, method, skip)
    ranks: Dict[str, int] = {}
    spatial: Dict[str, int] = {}
    if method == "jaderberg":
        fixed = skip | {s.name for s in solved if s not in spatial_ok}
        spatial = spatial_ranks(spatial_ok, budget_macs(specs, speedup, fixed), round_to=round_ranks_to)
    else:
        channel_speedup = math.sqrt(speedup) if method == "asym3d" else speedup
        if rank_selection:
            if rank_cost == "latency":
                latency_table.check_fits(specs)
                costs = {s.name: latency_table.cost_table(s.name) for s in solved}
                budget = latency_table.budget(specs, channel_speedup, skip)
            else:  # "paper": eq. (14) as printed, ΔC = C_l / d_l; "with_1x1": a cost per rank
                costs = {s.name: cost_per_rank(s, rank_cost) if rank_cost == "paper" else channel_cost_table(s) for s in solved}
                budget = budget_macs(specs, channel_speedup, skip)
            ranks = select_ranks({s.name: eigenvalues[s.name] for s in solved}, costs, budget, round_to=round_ranks_to)
        else:
            ranks = round_down_ranks(uniform_ranks(solved, channel_speedup), round_ranks_to,
                                     {s.name: s.out_channels for s in solved})
        if method == "asym3d":
            fixed_macs = sum(
                structure_macs(s, _structure(ranks[s.name], None, s.out_channels), ranks[s.name])
                for s in solved if s not in spatial_ok
            )
            budget = budget_macs(specs, speedup, skip) - fixed_macs
            # Full-rank layers lose their 1×1 layer (folded), so the spatial step sees them as d wide.
            low_rank = {s.name: ranks[s.name] for s in spatial_ok if ranks[s.name] < s.out_channels}
            spatial = spatial_ranks(spatial_ok, budget, low_rank, round_to=round_ranks_to)

    layers = {}
    for spec in specs:
        rank, spatial_rank = ranks.get(spec.name), spatial.get(spec.name)
        structure = _structure(rank, spatial_rank, spec.out_channels)
        layers[spec.name] = {
            **spec.to_dict(),
            "structure": structure,
            "rank": rank,
            "spatial_rank": spatial_rank,
            "macs": structure_macs(spec, structure, rank, spatial_rank),
            "original_macs": conv_macs(spec),
            "pca_energy": pca_energy(eigenvalues[spec.name], rank) if rank else 1.0,
            "error": None,
            "seconds": None,
        }
    original_macs = sum(e["original_macs"] for e in layers.values())
    approximated_macs = sum(e["macs"] for e in layers.values())
    extra = {}
    if round_ranks_to > 1:
        extra["round_ranks_to"] = int(round_ranks_to)
    if rank_selection and rank_cost == "latency":
        original_ms = 1e3 * latency_table.predicted(specs, {})
        predicted_ms = 1e3 * latency_table.predicted(specs, ranks)
        extra["latency"] = {  # sums of per-layer latencies of all conv layers, from the table
            "key": latency_table.key,
            "original_ms": original_ms,
            "target_ms": original_ms / speedup,
            "predicted_ms": predicted_ms,
            "predicted_speedup": original_ms / predicted_ms,
        }
    return {
        "format": PLAN_FORMAT,
        "method": method,
        "speedup": float(speedup),
        "theoretical_speedup": speedup_ratio(original_macs, approximated_macs),
        "rank_selection": bool(rank_selection) and method != "jaderberg",
        "rank_cost": rank_cost,
        "skip": sorted(skip, key=[s.name for s in specs].index),
        "original_macs": original_macs,
        "approximated_macs": approximated_macs,
        "layers": layers,
        **extra,
    }


def _structure(rank, spatial_rank, out_channels) -> str:
    """The layers a plan entry becomes. At full rank d' = d the 1×1 layer would only add cost: M
    is folded into the layer before it (the entry keeps ``rank`` = d to say it is solved)."""
    if rank == out_channels:
        rank = None
    if rank and spatial_rank:
        return SPATIAL_CHANNEL
    if rank:
        return CHANNEL
    if spatial_rank:
        return SPATIAL
    return ORIGINAL


def _check_reachable(specs, solved, spatial_ok, speedup, method, skip) -> None:
    """Refuse a speedup that even rank 1 everywhere cannot reach, naming the largest possible one."""
    total = sum(conv_macs(s) for s in specs)
    cheapest = sum(conv_macs(s) for s in specs if s.name in skip)
    for s in solved:
        if method == "jaderberg":
            cheapest += structure_macs(s, SPATIAL, spatial_rank=1) if s in spatial_ok else conv_macs(s)
        elif method == "asym3d" and s in spatial_ok:
            cheapest += structure_macs(s, SPATIAL_CHANNEL, 1, 1)
        else:
            cheapest += structure_macs(s, CHANNEL, 1)
    best = total / cheapest
    if speedup > best:
        raise AccelDetError(f"speedup {speedup:g} is impossible for method {method}: at most {best:.1f}x with these layers")


def _check_latency_arguments(method, rank_selection, rank_cost, latency_table, round_ranks_to) -> None:
    if not (isinstance(round_ranks_to, int) and round_ranks_to >= 1):
        raise AccelDetError(f"round_ranks_to must be a positive integer, got {round_ranks_to!r}")
    if rank_cost != "latency":
        return
    if method not in ("linear", "nonlinear", "asym"):
        raise AccelDetError(f"rank_cost='latency' prices the channel structure only: use method linear, nonlinear or asym, not {method}")
    if not rank_selection:
        raise AccelDetError("rank_cost='latency' needs rank selection (uniform ranks do not use costs)")
    if latency_table is None:
        raise AccelDetError("rank_cost='latency' needs a latency_table (accel_det.solver.latency.measure_latency_table)")


def _check_arguments(method, speedup, samples_per_image, rank_cost, schedule) -> None:
    if method not in METHODS:
        raise AccelDetError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if not (isinstance(speedup, (int, float)) and math.isfinite(speedup) and speedup > 1):
        raise AccelDetError(f"speedup must be a number greater than 1, got {speedup!r}")
    if not (isinstance(samples_per_image, int) and samples_per_image >= 1):
        raise AccelDetError(f"samples_per_image must be a positive integer, got {samples_per_image!r}")
    if rank_cost not in RANK_COSTS:
        raise AccelDetError(f"unknown rank cost {rank_cost!r}; expected one of {', '.join(RANK_COSTS)}")
    for step in schedule:
        if len(step) != 2 or not step[0] > 0 or int(step[1]) < 0:
            raise AccelDetError(f"schedule steps are (lambda > 0, iterations >= 0) pairs, got {step!r}")


def _module_device(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _first_hw(batches) -> Tuple[int, int]:
    for batch in batches:
        images = batch["images"] if isinstance(batch, Mapping) else batch[0] if isinstance(batch, (tuple, list)) else batch
        return int(images.shape[-2]), int(images.shape[-1])
    raise AccelDetError("no image batches were given")


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


# What a resumed run must share with the checkpoint's run (the plan records them).
CHECKPOINT_KEYS = ("method", "speedup", "rank_selection", "rank_cost", "round_ranks_to", "skip", "schedule", "seed",
                   "samples_per_image", "num_images")


def _save_checkpoint(path: str, plan: dict, approximated: nn.Sequential, done) -> None:
    from ..utils.io import atomic_torch_save

    state = {k: v.detach().cpu() for k, v in approximated.state_dict().items()}
    atomic_torch_save({"plan": json.dumps(plan), "done": sorted(done), "state_dict": state}, path)


def _load_checkpoint(path: str, plan: dict, approximated: nn.Sequential, names: Mapping[str, int]) -> set:
    """Restore the finished layers of a checkpoint into ``approximated`` and ``plan``; check it fits."""
    from ..utils.io import load_torch_file

    saved = load_torch_file(path, "compression checkpoint")
    try:
        saved_plan = json.loads(saved["plan"])
        done = set(saved["done"])
        state = saved["state_dict"]
    except (KeyError, TypeError, ValueError) as error:
        raise AccelDetError(f"{path} is not a compression checkpoint ({error})") from None
    for key in CHECKPOINT_KEYS:
        if saved_plan.get(key) != plan.get(key):
            raise AccelDetError(
                f"checkpoint {path} was made with {key}={saved_plan.get(key)!r}, this run has {plan.get(key)!r}; "
                "start over without --resume or use the same options"
            )
    for name in done:
        if saved_plan["layers"][name]["structure"] != plan["layers"][name]["structure"] or \
                saved_plan["layers"][name].get("rank") != plan["layers"][name].get("rank") or \
                saved_plan["layers"][name].get("spatial_rank") != plan["layers"][name].get("spatial_rank"):
            raise AccelDetError(f"checkpoint {path}: layer {name} does not match this run's plan")
        plan["layers"][name] = saved_plan["layers"][name]
        approximated[names[name]] = build_layer(approximated[names[name]], plan["layers"][name])
    approximated.load_state_dict(state)
    return done
