"""The forms a model is timed in: random-weight VGG-16s, contiguous or channels_last, and an
inference-only form with bias and ReLU fused into oneDNN's conv; and the allocator lever."""

from __future__ import annotations

import copy
from typing import List, Mapping, Sequence

import torch
from torch import nn

from ..errors import AccelDetError
from ..models.vgg import init_vgg_weights, vgg16_features
from ..nn.factorized import FactorizedConv2d
from ..nn.network import apply_plan

MODES = ("contiguous", "channels_last", "fused")


def random_features(width: float = 1.0, seed: int = 0) -> nn.Sequential:
    """VGG-16 ``features`` with He-initialised random weights (speed does not depend on them)."""
    torch.manual_seed(seed)
    features = vgg16_features(width)
    init_vgg_weights(features)
    return features.eval()


def accelerated_features(features: nn.Sequential, plan: Mapping, seed: int = 0) -> nn.Sequential:
    """The plan's architecture on ``features``, every conv He-initialised (random weights keep the
    activations' scale, so no layer runs on denormal numbers)."""
    torch.manual_seed(seed)
    model = apply_plan(features, plan)
    init_vgg_weights(model)
    return model.eval()


class FusedConv2d(nn.Module):
    """Inference-only conv (+ ReLU) through oneDNN's fused op (``mkldnn._convolution_pointwise``,
    what torch.compile's CPU backend emits), with the weight reordered once for the input shape it
    was built for. Not trainable; outputs equal ``relu(conv(x))`` (tested)."""

    def __init__(self, conv: nn.Conv2d, relu: bool, input_shape: Sequence[int]):
        super().__init__()
        self.stride, self.padding, self.dilation = (
            list(conv.stride),
            list(conv.padding),
            list(conv.dilation),
        )
        self.groups = conv.groups
        self.attr = "relu" if relu else "none"
        weight = conv.weight.detach()
        try:
            weight = torch._C._nn.mkldnn_reorder_conv2d_weight(
                weight.to_mkldnn(),
                self.padding,
                self.stride,
                self.dilation,
                self.groups,
                list(input_shape),
            )
        except (RuntimeError, AttributeError):  # keep the plain weight: oneDNN reorders it per call
            pass
        self.weight = weight
        self.bias = conv.bias.detach() if conv.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._convolution_pointwise(
            x,
            self.weight,
            self.bias,
            self.padding,
            self.stride,
            self.dilation,
            self.groups,
            self.attr,
            [None],
            "",
        )


def conv_leaves(features: nn.Sequential) -> List[tuple]:
    """``(layer index, module)`` of every leaf of ``features`` in order, a factorized layer's
    convs each under the index of the layer they replace."""
    leaves = []
    for index, module in enumerate(features):
        children = module.children() if isinstance(module, FactorizedConv2d) else [module]
        leaves += [(index, child) for child in children]
    return leaves


def fusion_available() -> bool:
    """Whether this PyTorch has oneDNN's fused conv op (CPU builds with mkldnn)."""
    return bool(torch.backends.mkldnn.is_available()) and hasattr(
        torch.ops.mkldnn, "_convolution_pointwise"
    )


def fuse_for_inference(features: nn.Sequential, example: torch.Tensor) -> nn.Sequential:
    """A channels_last, inference-only copy of ``features`` (CPU): every conv (also each conv of a
    factorized layer) becomes a :class:`FusedConv2d`, with the ReLU after it fused in. ``example``
    gives the input shape the weights are prepacked for."""
    if not fusion_available():
        raise AccelDetError(
            "this PyTorch build has no oneDNN fused convolution "
            "(torch.ops.mkldnn._convolution_pointwise)"
        )
    leaves = [module for _, module in conv_leaves(features)]
    fused: List[nn.Module] = []
    x = example.contiguous(memory_format=torch.channels_last)
    index = 0
    with torch.inference_mode():
        while index < len(leaves):
            module = leaves[index]
            if isinstance(module, nn.Conv2d):
                relu = index + 1 < len(leaves) and isinstance(leaves[index + 1], nn.ReLU)
                fused.append(FusedConv2d(module, relu, x.shape))
                x = module(x)
                index += 2 if relu else 1
            else:
                fused.append(copy.deepcopy(module))
                x = module(x)
                index += 1
    return nn.Sequential(*fused).eval()


def model_form(features: nn.Sequential, mode: str, example: torch.Tensor) -> nn.Module:
    """``features`` as timed in ``mode`` (one of :data:`MODES`); a copy, ``features`` is
    untouched."""
    if mode == "contiguous":
        return copy.deepcopy(features)
    if mode == "channels_last":
        return copy.deepcopy(features).to(memory_format=torch.channels_last)
    if mode == "fused":
        return fuse_for_inference(features, example)
    raise AccelDetError(f"unknown mode {mode!r}; expected one of {MODES}")


def keep_freed_memory() -> bool:
    """Make glibc's malloc serve every allocation from its heap and keep freed memory there
    (``mallopt``: no mmap, no trim), for the rest of the process. By default a block over 32 MB
    (an activation of VGG-16 at 600x1000: 64 x 600 x 1000 floats = 154 MB) is mmap'ed and handed
    back to the kernel when freed, so every call page-faults (and the kernel zeroes) all its large
    activations again; the accelerated model, with one more activation per factorized layer,
    pays more of it. jemalloc or tcmalloc (LD_PRELOAD) do the same. Returns False where glibc's
    ``mallopt`` is not available (nothing changes)."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False
