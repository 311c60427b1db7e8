"""VGG-16 (plain or accelerated) as an export :class:`~accel_det.deploy.export.Graph`: the
classifier (``images`` → ``logits``) or only its conv layers (``images`` → ``features``)."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Tuple, Union

import torch

from ..data.transforms import preprocessing_record
from ..errors import AccelDetError
from ..models.vgg import load_vgg16
from .export import Graph, dynamic_dim
from .record import plan_summary, weights_summary

MIN_SIZE = 32  # VGG-16's five 2×2 max-pools


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
    :func:`~accel_det.models.load_vgg16` reads them, with a 1×3×H×W sample input.

    ``dynamic``: a dynamic batch, and for ``backbone`` a dynamic height and width too (the
    classifier's fc6 takes the 7×7 map of ``input_size``: PyTorch's exporter does not keep the
    adaptive average pooling that would adapt other sizes). A second sample of another shape
    checks the dynamic axes."""
    height, width = (int(v) for v in input_size)
    if min(height, width) < MIN_SIZE:
        raise AccelDetError(f"--input-size must be at least {MIN_SIZE}x{MIN_SIZE} for VGG-16")
    model, plan, plan_path = load_vgg16(
        weights if isinstance(weights, Mapping) else str(weights), plan
    )
    module = (model.features if backbone else model).eval()
    generator = torch.Generator().manual_seed(seed)
    shapes: list = [(1, height, width)]
    dynamic_shapes = None
    if dynamic:
        axes = {0: dynamic_dim("batch")}
        if backbone:
            axes.update({2: dynamic_dim("height", MIN_SIZE), 3: dynamic_dim("width", MIN_SIZE)})
        dynamic_shapes = (axes,)
        shapes.append((2, *other_size(height, width)) if backbone else (2, height, width))
    samples = [(torch.randn(batch, 3, h, w, generator=generator),) for batch, h, w in shapes]
    what = "VGG-16 conv layers" if backbone else "VGG-16"
    return Graph(
        module=module,
        samples=samples,
        input_names=["images"],
        output_names=["features" if backbone else "logits"],
        dynamic_shapes=dynamic_shapes,
        description=f"{what}{' (accelerated)' if plan is not None else ''}",
        provenance={
            "model": "vgg16_backbone" if backbone else "vgg16",
            "image": {"input_size": [height, width], "dynamic": dynamic},
            "normalization": {**preprocessing_record(), "where": "before the graph"},
            "classes": {"num_classes": None if backbone else model.classifier[-1].out_features},
            "plan": plan_summary(plan, plan_path),
            "weights": None if isinstance(weights, Mapping) else weights_summary(str(weights)),
        },
    )


def other_size(height: int, width: int) -> Tuple[int, int]:
    """Another input size to check dynamic axes with (not a multiple of 32)."""
    return max(MIN_SIZE, height - 40), width + 24
