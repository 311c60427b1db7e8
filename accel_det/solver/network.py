"""Shapes of the conv layers of a network for a given input size, as the solver sees them."""

from __future__ import annotations

from typing import List, Tuple

from torch import nn

from .complexity import ConvSpec
from .targets import find_targets


def conv_specs(model: nn.Module, input_hw: Tuple[int, int]) -> List[ConvSpec]:
    """Shapes of every conv the solver factors in ``model`` (a VGG ``features`` chain, a ResNet,
    any CNN :func:`~.targets.find_targets` takes) for an input of ``input_hw``, in the order they
    run, found by a forward pass on the meta device."""
    return find_targets(model, input_hw).specs
