"""Batch-norm folding: a conv followed by an eval-mode batch norm as one conv."""

from __future__ import annotations

import copy
from typing import List

import torch
from torch import nn


@torch.no_grad()
def fold_batch_norm(conv: nn.Module, norm: nn.Module) -> None:
    """In place: ``conv`` (an ``nn.Conv2d``, or the last conv of a factorized layer) absorbs the
    eval-mode batch norm after it, γ (W x + b − μ) / √(σ² + ε) + β, so that ``conv`` alone
    computes ``norm(conv(x))``."""
    if not isinstance(conv, nn.Conv2d):
        conv = list(conv.children())[-1]
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
    folded = (bias - norm.running_mean) * scale + norm.bias
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
