"""``compress()``: the whole method, layer by layer from shallow to deep (§3.3–3.5), on any
CNN whose conv layers :func:`~.targets.find_targets` finds (a VGG ``features`` chain, a ResNet)."""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional, Tuple

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import AccelDetError
from ..nn.factorized import CHANNEL, ORIGINAL, SPATIAL, SPATIAL_CHANNEL, build_layer
from ..nn.graph import set_module
from ..plan import Plan
from ..utils.dist import broadcast_parameters, is_main_process, sum_over_processes
from .channel import covariance, eigen_descending, relative_error
from .checkpoint import load_checkpoint, save_checkpoint, tensors_digest
from .complexity import ConvSpec
from .factorize import set_folded_weights, set_low_rank_weights, set_weights, unpadded_conv
from .heldout import heldout_set, output_error, overfit_warning
from .methods import ChannelProblem
from .mixed import make_layer_plan
from .options import SolverOptions, check_names, options_or, skipped_layers
from .planning import spatial_layers
from .responses import LayerInputs, ResponseSampler
from .spatial import filter_reconstruction, kernel_energies
from .targets import find_targets

logger = logging.getLogger(__name__)


@dataclass
class CompressionResult:
    """The accelerated network (a new module: the given one with its batch norms folded and its
    conv layers factorized) and its JSON-serialisable plan."""

    model: nn.Module
    plan: Plan


def compress(
    model: nn.Module,
    batches: Iterable,
    options: Optional[SolverOptions] = None,
    *,
    device=None,
    progress: bool = True,
    input_hw: Optional[Tuple[int, int]] = None,
    checkpoint: Optional[str] = None,
    resume: bool = False,
    on_layer_done: Optional[Callable[[str, dict], None]] = None,
    planner: Optional[Callable[..., Plan]] = None,
    **settings,
) -> CompressionResult:
    """Accelerate every conv of ``model`` by ``speedup`` in theoretical multiply-adds of its conv
    layers, from responses sampled on ``batches``: a VGG ``features`` chain (layers named
    ``conv1_1`` …), a torchvision ResNet or any CNN :func:`~.targets.find_targets` takes (layers
    named by qualified module name; batch norms folded first; a conv followed by a ReLU solved
    with r, one added to a shortcut without).

    ``options`` (:class:`SolverOptions`) say how; keyword ``settings`` (``speedup=4``,
    ``method="asym"``, …) make or change them. ``batches`` is iterated several times and must
    give the same images each time; a one-shot iterator is kept in memory. ``input_hw`` sets the
    map sizes the multiply-adds are counted at (default: the first batch's). ``checkpoint`` is a
    file rewritten after each layer; with ``resume`` the run continues after the last layer it
    holds and ends identical to an uninterrupted run. ``model`` itself is left untouched.
    ``planner(specs, eigenvalues)`` replaces the default plan (e.g. one budget with fc layers,
    :func:`~.joint.make_network_plan`; by default :func:`~.mixed.make_layer_plan`); if it takes a
    keyword ``spatial_spectra``, it gets the kernel energies of the k×k layers there
    (:func:`~.spatial.kernel_energies`, None without a spatial step), which choose d'' per layer;
    entries of layers it adds are kept as they are.

    Under torch.distributed each process passes its own shard of the images, as
    ``{"images": ..., "indices": ...}`` batches whose indices number the images globally; the
    processes pool their samples and end with the same model, that of a single process.
    """
    options = options_or(options, **settings)
    progress = progress and is_main_process()
    device = torch.device(device) if device is not None else module_device(model)
    if iter(batches) is batches:
        batches = list(batches)
    input_hw = tuple(input_hw or first_hw(batches))
    targets = find_targets(model, input_hw, log=progress)
    names, specs = targets.names, targets.specs
    options = options.replace(skip=skipped_layers(options, list(names)))
    check_names(options.skip, names)
    original = targets.model.to(device)

    sampler = ResponseSampler(
        batches,
        options.samples_per_image,
        options.seed,
        device,
        progress,
        options.memory,
        runner=targets.runner(),
    )
    truth = sampler.original(original, names)
    held_images = heldout_set(
        torch.cat(list(sampler.row_images.values())), options.heldout_fraction, options.seed
    )
    heldout = {n: torch.isin(sampler.row_images[n], held_images) for n in truth}
    eigenvalues = {
        s.name: eigen_descending(covariance(truth[s.name][~heldout[s.name]])[1])[0] for s in specs
    }
    spectra = None
    if options.solver.spatial:
        spectra = {
            s.name: kernel_energies(original.get_submodule(names[s.name]).weight)
            for s in spatial_layers(specs)
        }
    planner = planner or functools.partial(make_layer_plan, options=options)
    extra = {"spatial_spectra": spectra} if takes_keyword(planner, "spatial_spectra") else {}
    plan = planner(specs, eigenvalues, **extra)
    plan.update(
        samples_per_image=options.samples_per_image,
        seed=options.seed,
        num_images=sum_over_processes(sampler.num_images),
        num_samples={name: int(rows.shape[0]) for name, rows in truth.items()},
        heldout_fraction=options.heldout_fraction,
        schedule=[list(step) for step in options.schedule],
        input_hw=list(input_hw),
    )
    if targets.left_alone:
        plan["left_as_they_are"] = dict(targets.left_alone)

    fingerprints = {
        "images": sampler.images_digest(),
        "weights": tensors_digest(model.state_dict()),
    }
    approximated = copy.deepcopy(original)
    done = set()
    if resume and checkpoint and os.path.exists(checkpoint):
        done = load_checkpoint(checkpoint, plan, approximated, names, fingerprints)
        approximated.to(device)
        logger.info(
            "resuming after %s", ", ".join(sorted(done, key=list(names).index)) or "nothing"
        )

    approximated_before = False
    inputs = None  # LayerInputs of the last solved layer, when they fit in ``memory``
    for spec in tqdm(specs, desc=f"compress ({options.method})", disable=not progress):
        entry = plan["layers"][spec.name]
        solved = entry["structure"] != ORIGINAL or entry.get("rank") is not None
        if spec.name in done:
            approximated_before = approximated_before or solved
            continue
        start = time.perf_counter()
        path = names[spec.name]
        if not solved:  # skipped: left as it is
            entry["error"] = entry["heldout_error"] = 0.0 if not approximated_before else None
        else:
            layer, errors, inputs = solve_layer(
                spec,
                entry,
                original.get_submodule(path),
                approximated,
                truth[spec.name],
                sampler,
                options,
                inputs,
                heldout[spec.name],
            )
            broadcast_parameters(layer)
            set_module(approximated, path, layer)
            entry["error"], entry["heldout_error"] = errors
            approximated_before = True
        entry["seconds"] = round(time.perf_counter() - start, 3)
        done.add(spec.name)
        if is_main_process():
            log_layer(spec.name, entry)
            solved_on = int((~heldout[spec.name]).sum())
            warning = overfit_warning(spec.name, entry, solved_on)
            if warning:
                logger.warning(warning)
        if checkpoint and is_main_process():
            save_checkpoint(checkpoint, plan, approximated, done, fingerprints)
        if on_layer_done is not None:
            on_layer_done(spec.name, entry)
    if options.heldout_fraction > 0:
        error, count = output_error(original, approximated, batches, held_images, device)
        plan["heldout"] = {
            "fraction": options.heldout_fraction,
            "images": count,
            "output_error": error,
        }
        if is_main_process() and error is not None:
            logger.info(
                "held-out error of the output (%d images kept out of the solve): %.4f", count, error
            )
    model = approximated.cpu() if device.type != "cpu" else approximated
    return CompressionResult(model=model, plan=plan)


def solve_layer(
    spec: ConvSpec,
    entry: dict,
    conv: nn.Conv2d,
    approximated: nn.Module,
    target: torch.Tensor,
    sampler: ResponseSampler,
    options: SolverOptions,
    inputs: Optional[LayerInputs],
    heldout: torch.Tensor,
):
    """Build the factorized layer of one plan entry from the samples not ``heldout``; returns it,
    its relative errors (on those samples, and on the held-out ones or None), and the layer's
    approximated inputs when they fit in memory."""
    device = sampler.device
    method = options.solver
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
    regressed, inputs = sampler.regressed(approximated, spec.name, regressor, inputs)
    regressed = regressed.to(device)
    target = target.to(device)
    last = regressor[-1]
    train, held = ~heldout.to(device), heldout.to(device)

    def errors(approximation: torch.Tensor):
        in_sample = relative_error(target[train], approximation[train], spec.relu)
        out = relative_error(target[held], approximation[held], spec.relu) if held.any() else None
        return in_sample, out

    if rank is None:  # the spatial step alone
        set_weights(layer.horizontal, last.weight, last.bias)
        return layer, errors(regressed), inputs
    target_train, regressed_train = target[train], regressed[train]

    problem = ChannelProblem(
        target=target_train,
        regressor=regressed_train if method.asymmetric else target_train,
        rank=rank,
        relu=spec.relu,
        schedule=options.schedule,
        weight=last.weight,
        bias=last.bias,
    )
    solution = method.solve(problem)
    if structure == SPATIAL_CHANNEL:
        set_low_rank_weights(layer.horizontal, layer.expand, last, solution)
    elif structure == CHANNEL:
        set_low_rank_weights(layer.reduce, layer.expand, last, solution)
    else:  # full rank d' = d: M folded into the layer that produces ŷ
        set_folded_weights(layer.horizontal if spatial else layer, last, solution)
    return layer, errors(solution.apply(regressed)), inputs


def log_layer(name: str, entry: Mapping) -> None:
    def text(value) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    logger.info(
        "%s: %s rank=%s spatial_rank=%s PCA energy=%.4f error=%s held-out=%s %.1fs",
        name,
        entry["structure"],
        entry.get("rank"),
        entry.get("spatial_rank"),
        entry["pca_energy"],
        text(entry["error"]),
        text(entry.get("heldout_error")),
        entry["seconds"],
    )


def takes_keyword(function: Callable, name: str) -> bool:
    """Whether ``function`` accepts the keyword argument ``name``."""
    parameters = inspect.signature(function).parameters.values()
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def module_device(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def first_hw(batches) -> Tuple[int, int]:
    """Height and width of the images of the first batch."""
    for batch in batches:
        if isinstance(batch, Mapping):
            images = batch["images"]
        else:
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return int(images.shape[-2]), int(images.shape[-1])
    raise AccelDetError("no image batches were given")
