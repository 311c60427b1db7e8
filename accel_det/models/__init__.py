"""Model builders: VGG-16, plain and accelerated from a plan."""

from .vgg import accelerated_vgg16, build_vgg16, load_checked, load_vgg16_state_dict, vgg16, vgg16_features

__all__ = ["accelerated_vgg16", "build_vgg16", "load_checked", "load_vgg16_state_dict", "vgg16", "vgg16_features"]
