"""What the runtime-axis benchmark times: random-weight VGG-16 backbones and Fast R-CNN detectors,
original and accelerated by the solver's 4× plans (default options of ``compress``: ranks rounded
to 16), with their multiply-adds and theoretical speedups.

The plans take their ranks from eigenvalues of the random-weight network's responses to generated
images (no ImageNet or VOC weights here): conv layers at random positions, fc6 / fc7 at random
RoIs. The whole-detector plan has one budget over conv and fc layers at the detector's test size
and RoI count (:func:`accel_det.solver.joint.make_network_plan`).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Sequence, Tuple

import torch
from torch import nn

from ..data.synthetic.shapes import make_task
from ..errors import AccelDetError
from ..models.resnet import resnet
from ..nn.network import apply_plan, prepare
from ..solver.channel import covariance, eigen_descending
from ..solver.joint import make_network_plan
from ..solver.mixed import make_layer_plan
from ..solver.network import conv_specs
from ..solver.options import SolverOptions
from ..solver.targets import network_macs
from .forms import accelerated_features, random_features
from .macs import features_macs
from .plans import sampled_eigenvalues, solver_plans

ORIGINAL_NAME = "original"  # every benchmark's name of the unaccelerated model


@dataclasses.dataclass
class Subject:
    """One timed model: its module, its multiply-adds per image and its theoretical speedup over
    the original (ratio of the two counts)."""

    name: str
    module: nn.Module
    macs: int
    theoretical: float = 1.0
    plan: Mapping = dataclasses.field(default_factory=dict)


def backbone_subjects(
    width: float,
    input_hw: Tuple[int, int],
    *,
    speedup: float = 4.0,
    methods: Sequence[str] = ("asym", "asym3d"),
    round_to: int = 16,
    unrounded: bool = False,
    skip: Sequence[str] = ("conv1_1",),
    also_keep: Sequence[str] = (),
    extra_plans: Mapping[str, Mapping] = None,
    eigenvalues: Mapping[str, torch.Tensor] = None,
    num_images: int = 8,
    samples_per_image: int = 100,
    seed: int = 0,
) -> List[Subject]:
    """The original VGG-16 conv layers and the solver's ``speedup`` plans for each method at
    ``input_hw`` with ``skip`` kept (rounded to ``round_to``; with ``unrounded`` also as solved),
    and, with ``also_keep``, the rounded plans that keep those layers too; then ``extra_plans``
    (name to plan, e.g. read from ``tools/compress_backbone.py``'s output). ``eigenvalues``:
    :func:`backbone_eigenvalues`'s, computed here when not given."""
    features = random_features(width, seed)
    if eigenvalues is None:
        eigenvalues = backbone_eigenvalues(width, num_images, samples_per_image, seed)
    plans = solver_plans(
        features, eigenvalues, input_hw, speedup=speedup, methods=methods, round_to=round_to,
        skip=skip,
    )  # fmt: skip
    if also_keep:
        kept = solver_plans(
            features, eigenvalues, input_hw, speedup=speedup, methods=methods, round_to=round_to,
            skip=tuple(skip) + tuple(also_keep),
        )  # fmt: skip
        label = "+".join(also_keep)
        plans.update({f"{n}, {label} kept": p for n, p in kept.items() if "ranks x" in n})
    plans.update(extra_plans or {})
    base = features_macs(features, input_hw)
    subjects = [Subject(ORIGINAL_NAME, features, base)]
    for name, plan in plans.items():
        unrounded_plan = round_to > 1 and "ranks x" not in name
        if unrounded_plan and not unrounded and name not in (extra_plans or {}):
            continue
        try:
            model = accelerated_features(features, plan, seed)
        except (AccelDetError, KeyError, TypeError, ValueError) as error:
            raise AccelDetError(
                f"plan {name} does not fit VGG-16 at width {width:g}: {error}"
            ) from None
        macs = features_macs(model, input_hw)
        subjects.append(Subject(name, model, macs, base / macs, plan))
    return subjects


def backbone_eigenvalues(
    width: float, num_images: int = 8, samples_per_image: int = 100, seed: int = 0
) -> Dict[str, torch.Tensor]:
    """Per conv layer, the eigenvalues rank selection reads: responses of the random-weight
    VGG-16 (:func:`random_features`) to ``num_images`` generated 224×224 images (they do not
    depend on the input size the plans are made for)."""
    images = make_task(num_images, size=224, seed=seed + 4000)[0]
    features = random_features(width, seed)
    return sampled_eigenvalues(features, images, samples_per_image=samples_per_image, seed=seed)


def resnet_subjects(
    arch: str,
    input_hw: Tuple[int, int],
    *,
    speedups: Sequence[float] = (2.0, 3.0),
    methods: Sequence[str] = ("asym", "asym3d"),
    round_to: int = 16,
    num_images: int = 8,
    samples_per_image: int = 100,
    seed: int = 0,
) -> List[Subject]:
    """A random-weight torchvision ResNet (batch norms folded, as every runtime folds them) and
    the solver's plans for it at each speedup and method (rank selection by multiply-adds, ranks
    rounded to ``round_to``, the stem kept: ``compress``'s defaults), from the eigenvalues of its
    responses to ``num_images`` generated images at ``input_hw``."""
    torch.manual_seed(seed)
    original = prepare(resnet(arch))[0]
    images = make_task(num_images, size=input_hw[0], seed=seed + 4000)[0]
    eigenvalues = sampled_eigenvalues(original, images, samples_per_image=samples_per_image,
                                      seed=seed)  # fmt: skip
    specs = conv_specs(original, input_hw)
    base = network_macs(original, input_hw)
    subjects = [Subject(ORIGINAL_NAME, original, base)]
    for speedup in speedups:
        for method in methods:
            options = SolverOptions(speedup=speedup, method=method, round_ranks_to=round_to)
            plan = make_layer_plan(specs, eigenvalues, options)
            torch.manual_seed(seed)
            model = apply_plan(original, plan)
            for module in model.modules():  # He-initialised: activations keep their scale
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            macs = network_macs(model, input_hw)
            subjects.append(
                Subject(f"{method} {speedup:g}x", model.eval(), macs, base / macs, plan)
            )
    return subjects


def roi_fc_eigenvalues(model, images: torch.Tensor, rois_per_image: int, seed: int = 0) -> dict:
    """Eigenvalues (largest first) of the covariance of fc6's and fc7's responses of a Fast R-CNN
    ``model`` at ``rois_per_image`` random RoIs of each image (fc7 reads ReLU(fc6))."""
    from detectron2.structures import Boxes

    from ..deploy.detector import sample_inputs
    from ..workflows.detector_compression.compress import FC_LAYERS
    from ..workflows.detector_compression.responses import fc_targets

    head, pooler = model.roi_heads.box_head, model.roi_heads.box_pooler
    generator = torch.Generator().manual_seed(seed)
    rows = []
    with torch.inference_mode():
        for image in images:
            feature = model.backbone.features(image[None])
            _, boxes = sample_inputs(*image.shape[1:], rois_per_image, generator)
            rows.append(head.fc6(pooler([feature], [Boxes(boxes)]).flatten(1)))
    responses = fc_targets(model, torch.cat(rows))
    return {n: eigen_descending(covariance(y)[1])[0] for n, y in zip(FC_LAYERS, responses)}


def detector_plan(
    model, input_hw: Tuple[int, int], rois: int, options: SolverOptions, images: torch.Tensor
) -> dict:
    """The whole-detector plan of ``options`` for ``model`` at ``input_hw`` and ``rois`` RoIs per
    image: conv and fc layers under one budget, the box predictor kept."""
    features = model.backbone.features
    eigenvalues = sampled_eigenvalues(features, images, samples_per_image=100, seed=options.seed)
    eigenvalues.update(roi_fc_eigenvalues(model, images, max(1, 4096 // len(images)), options.seed))
    from ..workflows.detector_compression.compress import linear_specs

    linears, fixed = linear_specs(model, rois)
    return make_network_plan(
        conv_specs(features, input_hw), linears, eigenvalues, options, fixed_macs=fixed
    )
