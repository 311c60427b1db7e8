"""Multiply-adds of whole models: ours (the count every theoretical speedup comes from) and
fvcore's, for the cross-check."""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
from torch import nn

from ..solver.targets import network_macs


def features_macs(features: nn.Module, input_hw: Tuple[int, int], batch: int = 1) -> int:
    """Multiply-adds of every conv of ``features`` (plain or factorized; a chain or any network)
    for ``batch`` images of ``input_hw``, by :mod:`accel_det.solver.complexity` (the theoretical
    speedup's count)."""
    return network_macs(features, tuple(input_hw)) * batch


def fvcore_macs(model: nn.Module, inputs) -> int:
    """fvcore's count (one "flop" per multiply-add of convs and linear layers) for one call."""
    import fvcore.nn

    analysis = fvcore.nn.FlopCountAnalysis(model, inputs)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return int(analysis.total())


def detector_macs(model: nn.Module, inputs: Sequence[dict]) -> Tuple[int, int]:
    """(all, conv) multiply-adds of one detector call: the backbone's convs by
    :func:`features_macs` at the padded input size, plus RoIs × in × out of every linear layer of
    the RoI heads (fc6, fc7, classifier, box regressor)."""
    images = model.preprocess_image(inputs)
    hw = tuple(images.tensor.shape[-2:])
    conv = features_macs(model.backbone.features, hw, len(inputs))
    rois = sum(len(x["proposals"]) for x in inputs)
    linear = sum(
        m.in_features * m.out_features
        for m in model.roi_heads.modules()
        if isinstance(m, nn.Linear)
    )
    return conv + rois * linear, conv


def detector_fvcore_macs(model: nn.Module, inputs: Sequence[dict]) -> int:
    """fvcore's count for one detector call (Detectron2's ``FlopCountAnalysis`` wrapper)."""
    from detectron2.utils.analysis import FlopCountAnalysis

    analysis = FlopCountAnalysis(model, list(inputs))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return int(analysis.total())


def layer_macs(module: nn.Module, inputs: tuple) -> Dict[str, int]:
    """Multiply-adds of every ``nn.Conv2d`` and ``nn.Linear`` of ``module`` on ``inputs``, by
    qualified name, counted from the shapes each sees in one forward pass (the per-layer check of
    :func:`features_macs`, which counts from :mod:`accel_det.solver.complexity`'s specs)."""
    counts: Dict[str, int] = {}
    hooks = []

    def count(name):
        def hook(layer, args, output):
            if isinstance(layer, nn.Conv2d):
                per_position = layer.weight.numel()  # d * c/groups * kh * kw
                counts[name] = per_position * output.shape[0] * output.shape[2] * output.shape[3]
            else:
                counts[name] = layer.weight.numel() * (output.numel() // output.shape[-1])

        return hook

    for name, layer in module.named_modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            hooks.append(layer.register_forward_hook(count(name)))
    try:
        with torch.inference_mode():
            module(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return counts
