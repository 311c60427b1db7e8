"""An ImageNet classifier (VGG-16 or a torchvision ResNet, plain or accelerated) as an export
:class:`~accel_det.deploy.export.Graph`: the classifier (``images`` → ``logits``) or only its conv
layers (``images`` → ``features``: VGG-16's ``features``, a ResNet's ``layer4`` output)."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..data.transforms import preprocessing_record
from ..errors import AccelDetError
from ..models.classifier import classes_of, load_classifier, weights_file
from .export import Graph, dynamic_dim
from .record import plan_summary, weights_summary

MIN_SIZE = 32  # five 2x downsamplings (VGG-16's max-pools, a ResNet's strides)
DISPLAY = {"vgg16": "VGG-16"}


class ResNetFeatures(nn.Module):
    """A torchvision ResNet up to its last stage (what a detector's backbone keeps)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
        self.stages = nn.Sequential(model.layer1, model.layer2, model.layer3, model.layer4)

    def forward(self, x):
        return self.stages(self.stem(x))


def classifier_graph(
    weights: Union[str, Mapping[str, torch.Tensor]],
    plan: Optional[Union[str, Mapping]] = None,
    *,
    arch: Optional[str] = None,
    backbone: bool = False,
    input_size: Sequence[int] = (224, 224),
    dynamic: bool = False,
    seed: int = 0,
) -> Graph:
    """The classifier that ``weights`` (and ``plan``, for an accelerated one) hold, as
    :func:`~accel_det.models.classifier.load_classifier` reads them, with a 1×3×H×W sample input.

    ``dynamic``: a dynamic batch, and for ``backbone`` a dynamic height and width too (VGG-16's
    fc6 takes the 7×7 map of ``input_size``: PyTorch's exporter does not keep the adaptive average
    pooling that would adapt other sizes). A second sample of another shape checks the dynamic
    axes."""
    height, width = (int(v) for v in input_size)
    name = DISPLAY.get(arch, arch) or "the classifier"
    if min(height, width) < MIN_SIZE:
        raise AccelDetError(f"--input-size must be at least {MIN_SIZE}x{MIN_SIZE} for {name}")
    source = weights if isinstance(weights, Mapping) else str(weights)
    model, plan, plan_path, arch = load_classifier(source, plan, arch)
    if backbone:
        module = model.features if arch == "vgg16" else ResNetFeatures(model)
    else:
        module = model
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
    what = f"{DISPLAY.get(arch, arch)}{' conv layers' if backbone else ''}"
    return Graph(
        module=module.eval(),
        samples=samples,
        input_names=["images"],
        output_names=["features" if backbone else "logits"],
        dynamic_shapes=dynamic_shapes,
        description=f"{what}{' (accelerated)' if plan is not None else ''}",
        provenance=classifier_provenance(
            model, arch, backbone, weights, plan, plan_path, dynamic, (height, width)
        ),
    )


def classifier_provenance(
    model: nn.Module, arch: str, backbone: bool, weights, plan, plan_path, dynamic, input_size
) -> dict:
    """What the record of a classifier export says it was made from (:mod:`.record`)."""
    local = None if isinstance(weights, Mapping) else weights_file(str(weights), arch)
    return {
        "model": f"{arch}_backbone" if backbone else arch,
        "image": {"input_size": list(input_size), "dynamic": dynamic},
        "normalization": {**preprocessing_record(), "where": "before the graph"},
        "classes": {"num_classes": None if backbone else classes_of(model)},
        "plan": plan_summary(plan, plan_path),
        "weights": None if isinstance(weights, Mapping) else weights_summary(str(weights), local),
    }


def other_size(height: int, width: int) -> Tuple[int, int]:
    """Another input size to check dynamic axes with (not a multiple of 32)."""
    return max(MIN_SIZE, height - 40), width + 24
