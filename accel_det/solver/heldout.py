"""Held-out error: a seeded share of the images is kept out of every layer's solve, and the
error of the approximated responses on them tells whether the solve overfits its samples (too
few samples per filter), which the in-sample error alone cannot."""

from __future__ import annotations

import logging
from typing import Iterable, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ..utils.dist import all_reduce_sum, is_distributed, sum_over_processes
from .responses import iterate_batches

logger = logging.getLogger(__name__)

# held-out error above OVERFIT × in-sample error (+ a small margin) is worth a warning
OVERFIT = 1.5
MARGIN = 0.02


def heldout_set(
    images: torch.Tensor, fraction: float, seed: int, warn: bool = True
) -> torch.Tensor:
    """The held-out images among the image indices ``images`` (repeats allowed): exactly
    max(1, round(``fraction``·N)) of the N distinct ones, at most N − 1, taken by a permutation
    seeded by ``seed`` alone, so that every pass, batch size and process holds out the same images
    (under torch.distributed, pass the indices of all processes' images). None with ``fraction`` 0,
    or when N < 2 (then, with ``warn``, a warning line says so)."""
    unique = torch.unique(torch.as_tensor(images).cpu())
    if fraction <= 0:
        return unique[:0]
    if len(unique) < 2:
        if warn:
            logger.warning(
                "held-out error: %d image, none can be held out of the solve (heldout_fraction "
                "%g needs at least 2 images); the overfit check is off",
                len(unique),
                fraction,
            )
        return unique[:0]
    count = min(len(unique) - 1, max(1, round(fraction * len(unique))))
    order = np.random.default_rng([seed, 7]).permutation(len(unique))
    return unique[torch.from_numpy(np.sort(order[:count]))]


def split_rows(images: torch.Tensor, fraction: float, seed: int, warn: bool = True) -> torch.Tensor:
    """The held-out mask of sample rows, from the image of every row (:func:`heldout_set` of
    those images)."""
    images = torch.as_tensor(images)
    held = heldout_set(images, fraction, seed, warn)
    return torch.isin(images.cpu(), held).to(images.device)


def output_error(
    original: nn.Module,
    approximated: nn.Module,
    batches: Iterable,
    heldout: torch.Tensor,
    device=None,
) -> Tuple[Optional[float], int]:
    """‖F̂(x) − F(x)‖ / ‖F(x)‖ of the network's output over the images whose indices are in
    ``heldout`` (:func:`heldout_set`), and their number (under torch.distributed, over all
    processes)."""
    squared = torch.zeros(2, dtype=torch.float64)
    count = 0
    with torch.inference_mode():
        for images, indices in iterate_batches(batches, device):
            keep = torch.isin(indices, heldout)
            if not keep.any():
                continue
            x = images[keep.to(images.device)]
            truth, approx = flat_output(original(x)), flat_output(approximated(x))
            squared += torch.stack([(approx - truth).square().sum(), truth.square().sum()]).cpu()
            count += int(keep.sum())
    total = sum_over_processes(count)
    if total == 0:
        return None, 0
    if is_distributed():
        squared = all_reduce_sum(squared)
    return (float(squared[0].sqrt() / squared[1].sqrt()) if squared[1] > 0 else 0.0), total


def flat_output(output) -> torch.Tensor:
    """A network's output as one float64 vector: a tensor, or the tensors of a dict (by key), a
    list or a tuple (a backbone's feature maps)."""
    if isinstance(output, torch.Tensor):
        return output.double().flatten()
    if isinstance(output, Mapping):
        output = [output[key] for key in sorted(output)]
    return torch.cat([flat_output(part) for part in output])


def overfit_warning(name: str, entry: Mapping, samples: int) -> Optional[str]:
    """A log line when a layer's held-out error is much larger than its in-sample error."""
    error, heldout = entry.get("error"), entry.get("heldout_error")
    if error is None or heldout is None or heldout <= OVERFIT * error + MARGIN:
        return None
    filters = entry.get("out_channels", entry.get("out_features", 1)) or 1
    return (
        f"{name}: held-out error {heldout:.3f} against {error:.3f} on the samples it was solved "
        f"from: {samples} samples for {filters} filters ({samples / filters:.1f} per filter) "
        "overfit; use more images or more samples per image"
    )
