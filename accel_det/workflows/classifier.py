"""A narrow VGG-16 classifier trained from scratch on the CPU, with a batch norm after each conv
while it trains (it learns much faster), folded into the convs afterwards so that the result is
the plain Conv2d / ReLU / MaxPool2d chain the solver takes. The demo's stand-in for ImageNet
pre-training and the solver benchmark's trained network are both made this way."""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..nn.fold import fold_batch_norms


def with_batch_norms(features: nn.Sequential) -> nn.Sequential:
    """``features`` with a ``BatchNorm2d`` after each conv (the modules themselves, not copies)."""
    layers = []
    for module in features:
        layers.append(module)
        if isinstance(module, nn.Conv2d):
            layers.append(nn.BatchNorm2d(module.out_channels))
    return nn.Sequential(*layers)


class SpatialMean(nn.Module):
    """Global average pooling as ``x.mean(dim=(2, 3))``: N×C×H×W → N×C."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class BatchNormClassifier(nn.Module):
    """Conv layers with batch norms (:func:`with_batch_norms`), then ``head``."""

    def __init__(self, features: nn.Sequential, head: nn.Module):
        super().__init__()
        self.features = with_batch_norms(features)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def folded_features(self) -> nn.Sequential:
        """The trained conv layers with the batch norms (eval statistics) folded in."""
        self.eval()
        return fold_batch_norms(self.features).eval()


def fit_classifier(
    model: nn.Module,
    next_batch: Callable[[int], Tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    steps: int,
    *,
    lr_at: Optional[Callable[[int], float]] = None,
    scheduler=None,
    on_step: Optional[Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]] = None,
) -> None:
    """``steps`` steps of cross-entropy training: ``next_batch(step)`` gives images and labels;
    ``lr_at(step)`` sets every group's learning rate before the step, or ``scheduler`` steps after
    it; ``on_step(step, loss, logits, labels)`` follows each step (progress, logs)."""
    model.train()
    for step in range(steps):
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
        x, y = next_batch(step)
        out = model(x)
        loss = F.cross_entropy(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if on_step is not None:
            on_step(step, loss, out, y)
