"""Batch-norm folding: a conv followed by an eval-mode batch norm as one conv (in a chain, or in any
network by the convs :func:`accel_det.nn.graph.analyse` finds)."""

from __future__ import annotations

import copy
from typing import Iterable, List

import torch
from torch import nn

from .graph import INTERNAL_NORM, ConvNode, set_module


@torch.no_grad()
def fold_batch_norm(conv: nn.Module, norm: nn.Module) -> None:
    """In place: ``conv`` (an ``nn.Conv2d``, or the last conv of a factorized layer) absorbs the
    eval-mode batch norm after it, γ (W x + b − μ) / √(σ² + ε) + β, so that ``conv`` alone
    computes ``norm(conv(x))``."""
    if not isinstance(conv, nn.Conv2d):
        conv = list(conv.children())[-1]
    gamma = norm.weight if norm.weight is not None else 1.0  # affine=False: γ = 1, β = 0
    scale = gamma / torch.sqrt(norm.running_var + norm.eps)
    conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
    folded = (bias - norm.running_mean) * scale
    if norm.bias is not None:
        folded = folded + norm.bias
    if conv.bias is None:
        conv.bias = nn.Parameter(folded)
    else:
        conv.bias.copy_(folded)


def fold_batch_norms(chain: nn.Sequential) -> nn.Sequential:
    """A copy of ``chain`` without ``BatchNorm2d`` layers, each folded into the conv before it
    (:func:`fold_batch_norm`): the Conv2d / ReLU / MaxPool2d chain the solver takes."""
    layers: List[nn.Module] = []
    for module in chain:
        if isinstance(module, nn.BatchNorm2d):
            fold_batch_norm(layers[-1], module)
        else:
            layers.append(copy.deepcopy(module))
    return nn.Sequential(*layers)


def fold_into_convs(model: nn.Module, convs: Iterable[ConvNode]) -> None:
    """In place: the batch norm of every conv in ``convs`` (:func:`accel_det.nn.graph.analyse`'s)
    folded into it (:func:`fold_batch_norm`) and taken out of the network: a separate one replaced
    by ``nn.Identity``, a conv's own ``norm`` (Detectron2's ``Conv2d``) set to None. The factorized
    layer that later replaces the conv keeps the fold."""
    for node in convs:
        if node.norm is None:
            continue
        conv = model.get_submodule(node.path)
        if node.norm == INTERNAL_NORM:
            fold_batch_norm(conv, conv.norm)
            conv.norm = None
        else:
            fold_batch_norm(conv, model.get_submodule(node.norm))
            set_module(model, node.norm, nn.Identity())
