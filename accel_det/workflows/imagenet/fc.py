"""VGG-16's classifier fc6/fc7 by the same solver (``tools/compress_backbone.py --fc``): one
budget with the conv layers, at one input per image; responses sampled once per image."""

from __future__ import annotations

from typing import Dict, Iterable, List, Tuple

import torch
from tqdm.auto import tqdm

from ...solver.channel import covariance, eigen_descending
from ...solver.complexity import LinearSpec
from ...solver.heldout import split_rows
from ...solver.linear import compress_linear_chain
from ...utils.dist import broadcast_parameters, gather_samples

FC_INDICES = {"fc6": 0, "fc7": 3}  # in torchvision's VGG classifier


def classifier_specs(model) -> Tuple[List[LinearSpec], int]:
    """fc6 and fc7 as :class:`LinearSpec` (one input per image), and the multiply-adds of fc8."""
    layers = {name: model.classifier[index] for name, index in FC_INDICES.items()}
    specs = [LinearSpec(name, m.in_features, m.out_features, rois=1) for name, m in layers.items()]
    last = model.classifier[6]
    return specs, last.in_features * last.out_features


def fc6_responses(
    model, features, batches: Iterable, device, progress: bool = True
) -> torch.Tensor:
    """fc6's pre-ReLU responses to every image through ``features`` (rows in image order; under
    torch.distributed those of all processes)."""
    fc6 = model.classifier[FC_INDICES["fc6"]]
    rows, owners = [], []
    with torch.inference_mode():
        for batch in tqdm(batches, desc="fc6 responses", disable=not progress, leave=False):
            x = features(batch["images"].to(device))
            rows.append(fc6(torch.flatten(model.avgpool(x), 1)).float().cpu())
            owners.append(batch["indices"].long())
    return gather_samples(torch.cat(rows), torch.cat(owners))


def fc_eigenvalues(model, y6: torch.Tensor, keep: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Eigenvalues of fc6's and fc7's response covariances (fc7 reads ReLU(fc6)) over the rows
    ``keep`` (those not held out)."""
    fc7 = model.classifier[FC_INDICES["fc7"]]
    with torch.inference_mode():
        y7 = fc7(y6.clamp(min=0).to(fc7.weight)).float().cpu()
    return {n: eigen_descending(covariance(y[keep])[1])[0] for n, y in (("fc6", y6), ("fc7", y7))}


def compress_classifier(model, plan: dict, y6, regressed, images, method, options) -> None:
    """Solve fc6 then fc7 (asymmetric along the chain; the held-out images of ``options`` kept
    out) and put them into ``model.classifier``."""
    linears = {name: model.classifier[index] for name, index in FC_INDICES.items()}
    heldout = split_rows(images, options.heldout_fraction, options.seed, warn=False)
    chain = compress_linear_chain(linears, plan["layers"], y6, regressed, method, options, heldout)
    for name, layer in chain.items():
        broadcast_parameters(layer)
        model.classifier[FC_INDICES[name]] = layer
