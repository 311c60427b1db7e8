"""The weight-fit check: does a state dict (or a checkpoint's tensor shapes) fit a model?

Every loader of accel-det (VGG-16 weights, Detectron2 checkpoints, conversions) asks these, so a
mismatch is found the same way everywhere and each caller names it in its own terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence, Tuple

Shapes = Mapping[str, Tuple[int, ...]]


@dataclass(frozen=True)
class Mismatch:
    """An expected tensor ``key`` of shape ``expected`` that is missing (``found`` None) or has
    shape ``found``."""

    key: str
    expected: Tuple[int, ...]
    found: Optional[Tuple[int, ...]]


def first_mismatch(
    expected: Shapes, given: Shapes, keys: Optional[Sequence[str]] = None
) -> Optional[Mismatch]:
    """The first of ``keys`` (default: all expected keys, in order) that ``given`` lacks or holds
    in another shape; None when all fit."""
    for key in expected if keys is None else keys:
        shape = tuple(expected[key])
        found = given.get(key)
        if found is None or tuple(found) != shape:
            return Mismatch(key, shape, None if found is None else tuple(found))
    return None


def unexpected_key(expected: Shapes, given: Shapes, prefix: str = "") -> Optional[str]:
    """The first key of ``given`` (starting with ``prefix``) that ``expected`` does not have."""
    return next((k for k in given if k.startswith(prefix) and k not in expected), None)


def keys_under(
    shapes: Shapes, prefix: str, suffix: str = "", kinds: Tuple[str, ...] = (".weight", ".bias")
) -> Dict[str, Tuple[int, ...]]:
    """The tensors of ``shapes`` below ``prefix`` whose names end with one of ``kinds`` (weights
    and biases; ``("",)``: all) and with ``suffix``: what a file holds for the module an expected
    key belongs to."""
    return {
        k: tuple(v)
        for k, v in shapes.items()
        if k.startswith(prefix) and k.endswith(kinds) and k.endswith(suffix)
    }


def shapes_of(state_dict: Mapping) -> Dict[str, Tuple[int, ...]]:
    """Tensor shapes of a state dict."""
    return {k: tuple(v.shape) for k, v in state_dict.items() if hasattr(v, "shape")}
