"""VGG-16: one builder (plain, or accelerated from a plan), one loader, one weight-fit check."""

from .fit import Mismatch, first_mismatch, keys_under, shapes_of, unexpected_key
from .vgg import (
    infer_vgg16_config,
    init_vgg_weights,
    load_checked,
    load_vgg16,
    load_vgg16_state_dict,
    vgg16,
    vgg16_features,
    with_features,
)

__all__ = [
    "Mismatch",
    "first_mismatch",
    "infer_vgg16_config",
    "init_vgg_weights",
    "keys_under",
    "load_checked",
    "load_vgg16",
    "load_vgg16_state_dict",
    "shapes_of",
    "unexpected_key",
    "vgg16",
    "vgg16_features",
    "with_features",
]
