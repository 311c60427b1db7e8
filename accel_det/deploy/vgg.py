"""VGG-16 (plain or accelerated) as an export :class:`~accel_det.deploy.export.Graph`: the
classifier (``images`` → ``logits``) or only its conv layers (``images`` → ``features``); one case
of :func:`~accel_det.deploy.classifier.classifier_graph`."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import torch

from .classifier import MIN_SIZE, classifier_graph, other_size
from .export import Graph

__all__ = ["MIN_SIZE", "other_size", "vgg16_graph"]


def vgg16_graph(
    weights: Union[str, Mapping[str, torch.Tensor]],
    plan: Optional[Union[str, Mapping]] = None,
    *,
    backbone: bool = False,
    input_size: Sequence[int] = (224, 224),
    dynamic: bool = False,
    seed: int = 0,
) -> Graph:
    """The VGG-16 that ``weights`` (and ``plan``, for an accelerated one) hold, as
    :func:`~accel_det.models.load_vgg16` reads them (see :func:`classifier_graph`)."""
    return classifier_graph(weights, plan, arch="vgg16", backbone=backbone,
                            input_size=input_size, dynamic=dynamic, seed=seed)  # fmt: skip
