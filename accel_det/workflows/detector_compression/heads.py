"""The heads of a Faster R-CNN in the budget of its backbone: the RPN head's 3×3 conv (followed by
a ReLU, shared over the FPN's levels) and the box head's fcs (``FastRCNNConvFCHead``'s fc1, fc2,
each followed by a ReLU), priced at the test input size and ``rois`` proposals per image.

Their responses are sampled on the training images as the detector sees them at test time: the
RPN conv's at positions drawn uniformly over all its levels (:mod:`accel_det.solver.shared`), the
fcs' at RoIs drawn from the proposals the RPN gives each image (the ones the box head scores). Both
are solved after the backbone, asymmetrically on the approximated backbone's features (§3.3; eq.
5 with the ReLU; the fcs as a chain, :func:`~accel_det.solver.linear.compress_linear_chain`).
The layers the budget does not take (the RPN's 1×1 convs, the box predictor, the box head's
convs) are counted at their full cost; a mask head, run on the detections only, is kept and not
counted.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from detectron2.structures import Boxes
from torch import nn
from tqdm.auto import tqdm

from ...detection.accel_heads import BOX_HEAD_PART, RPN_HEAD_PART, with_activation_of
from ...errors import AccelDetError
from ...solver.channel import covariance, eigen_descending
from ...solver.complexity import ConvSpec, LinearSpec
from ...solver.heldout import split_rows
from ...solver.linear import compress_linear_chain
from ...solver.methods import get_method
from ...solver.pipeline import log_layer, solve_layer
from ...solver.shared import SharedConvSampler, shared_conv_spec
from ...solver.spatial import kernel_energies
from ...utils.dist import broadcast_parameters, gather_samples
from .images import DetectorImages

RPN_CONV = f"{RPN_HEAD_PART}.conv"


@dataclass
class Heads:
    """The head layers of one budget: the RPN conv (None when the head has no single 3×3 conv),
    the box head's fcs (module name within the box head -> spec) and the multiply-adds per image
    of the head layers kept as they are."""

    rpn: Optional[ConvSpec]
    fcs: Dict[str, LinearSpec] = field(default_factory=dict)
    fixed_macs: int = 0

    @property
    def convs(self) -> List[ConvSpec]:
        return [self.rpn] if self.rpn is not None else []

    @property
    def linears(self) -> List[LinearSpec]:
        return list(self.fcs.values())


def find_heads(model, input_hw: Tuple[int, int], rois: int) -> Heads:
    """The head layers of ``model`` (a ``GeneralizedRCNN`` with an RPN and ``StandardROIHeads``)
    at ``input_hw`` (padded) and ``rois`` proposals per image."""
    generator, roi_heads = model.proposal_generator, model.roi_heads
    if generator is None or not hasattr(generator, "rpn_head"):
        raise AccelDetError(
            "--speedup-of detector takes a Faster R-CNN (an RPN and a box head); for this "
            "detector use --speedup-of conv (its backbone)"
        )
    if not hasattr(roi_heads, "box_head"):
        raise AccelDetError(
            f"--speedup-of detector: {type(roi_heads).__name__} has no box head (a C4 detector's "
            "res5 head is not compressed); use --speedup-of conv (its backbone)"
        )
    shapes = model.backbone.output_shape()
    levels = generator.in_features
    sizes = [tuple(math.ceil(side / shapes[f].stride) for side in input_hw) for f in levels]
    head = generator.rpn_head
    conv = getattr(head, "conv", None)
    rpn = shared_conv_spec(RPN_CONV, conv, sizes) if type(conv).__name__ == "Conv2d" else None
    fixed = sum(
        module.weight.numel() * sum(h * w for h, w in sizes)
        for module in head.modules()
        if isinstance(module, nn.Conv2d) and module is not conv
    )
    box_head = roi_heads.box_head
    fcs = {
        name: LinearSpec(f"{BOX_HEAD_PART}.{name}", m.in_features, m.out_features, rois)
        for name, m in box_head.named_children()
        if isinstance(m, nn.Linear)
    }
    resolution = roi_heads.box_pooler.output_size
    solved = [box_head.get_submodule(n) for n in fcs]
    fixed += rois * sum(
        m.weight.numel() * (math.prod(resolution) if isinstance(m, nn.Conv2d) else 1)
        for m in [*box_head.modules(), *roi_heads.box_predictor.modules()]
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not any(m is s for s in solved)
    )
    return Heads(rpn, fcs, int(fixed))


def rpn_maps(model):
    """The RPN conv's inputs from a backbone: its feature maps at the RPN's levels."""
    levels = list(model.proposal_generator.in_features)

    def maps(backbone, images):
        features = backbone(images)
        return [features[f] for f in levels]

    return maps


@dataclass
class HeadSamples:
    """What the heads are planned and solved from: the RPN conv's sampler and original responses,
    fc1's original responses at the RoIs, and each's held-out rows and eigenvalues."""

    rpn: Optional[SharedConvSampler] = None
    rpn_truth: Optional[torch.Tensor] = None
    rpn_heldout: Optional[torch.Tensor] = None
    fc_truth: Optional[torch.Tensor] = None
    fc_heldout: Optional[torch.Tensor] = None
    eigenvalues: Dict[str, torch.Tensor] = field(default_factory=dict)
    spectra: Dict[str, torch.Tensor] = field(default_factory=dict)


def sample_heads(
    model, heads: Heads, images: DetectorImages, options, device, progress: bool
) -> HeadSamples:
    """The heads' original responses (the original backbone), their eigenvalues (eq. 13's) and
    held-out rows; draws the RoIs of every image (``images.rois``) from the RPN's proposals."""
    solver = options.solver
    result = HeadSamples()
    if heads.rpn is not None:
        conv = model.proposal_generator.rpn_head.conv
        result.rpn = SharedConvSampler(
            conv, rpn_maps(model), images, solver.samples_per_image, solver.seed, device, progress
        )
        result.rpn_truth, owners = result.rpn.original(model.backbone)
        result.rpn_heldout = split_rows(owners, solver.heldout_fraction, solver.seed, warn=False)
        result.eigenvalues[RPN_CONV] = spectrum(result.rpn_truth[~result.rpn_heldout])
        if solver.solver.spatial:
            result.spectra[RPN_CONV] = kernel_energies(conv.weight)
    if heads.fcs:
        draw_rois(model, images, options.fc_samples_per_image, solver.seed, progress)
        y, owners = fc_responses(model, model.backbone, heads, images, progress)
        result.fc_heldout = split_rows(owners, solver.heldout_fraction, solver.seed, warn=False)
        result.fc_truth = chain_responses(model, heads, y)
        for spec, rows in zip(heads.linears, result.fc_truth):
            result.eigenvalues[spec.name] = spectrum(rows[~result.fc_heldout])
    return result


def spectrum(rows: torch.Tensor) -> torch.Tensor:
    return eigen_descending(covariance(rows)[1])[0]


def draw_rois(model, images: DetectorImages, count: int, seed: int, progress: bool) -> None:
    """``count`` RoIs per image drawn (seeded by image) from the proposals the RPN gives it at
    test time: the boxes the box head scores."""
    images.rois = []
    with torch.inference_mode():
        for number in tqdm(range(len(images)), desc="RPN proposals", disable=not progress):
            image = images.images[number].to(model.device)
            batched = model.preprocess_image([{"image": image}])
            proposals, _ = model.proposal_generator(batched, model.backbone(batched.tensor))
            boxes = proposals[0].proposal_boxes.tensor.cpu()
            rng = np.random.default_rng([seed, images.indices[number]])
            picked = np.sort(rng.permutation(len(boxes))[:count])
            images.rois.append(boxes[torch.from_numpy(picked).long()])


def fc_input(box_head: nn.Module, pooled: torch.Tensor, first: str) -> torch.Tensor:
    """The input of the box head's first fc ``first``: its layers before it (convs, flatten)."""
    x = pooled
    for name, module in box_head.named_children():
        if name == first:
            return x
        x = module(x)
    raise AccelDetError(f"the box head has no layer {first}")


def fc_responses(model, backbone, heads: Heads, images: DetectorImages, progress: bool):
    """The first fc's responses W x + b at every image's RoIs, with ``backbone``'s features, and
    the image of every row (under torch.distributed those of all processes)."""
    roi_heads = model.roi_heads
    first = next(iter(heads.fcs))
    fc = roi_heads.box_head.get_submodule(first)
    rows, owners = [], []
    with torch.inference_mode():
        for number in tqdm(range(len(images)), desc="fc responses", disable=not progress):
            features = backbone(images.preprocessed(number))
            maps = [features[f] for f in roi_heads.box_in_features]
            boxes = [Boxes(images.rois[number].to(maps[0].device))]
            x = fc_input(roi_heads.box_head, roi_heads.box_pooler(maps, boxes), first)
            rows.append(fc(x).float().cpu())
            owners.append(torch.full((len(x),), images.indices[number], dtype=torch.long))
    stacked = torch.cat(rows) if rows else torch.zeros(0, fc.out_features)
    owned = torch.cat(owners) if owners else torch.zeros(0, dtype=torch.long)
    return gather_samples(stacked, owned)


def chain_responses(model, heads: Heads, first: torch.Tensor) -> List[torch.Tensor]:
    """Every fc's original responses, from the first's (each fc reads the ReLU of the one
    before)."""
    box_head = model.roi_heads.box_head
    result = [first]
    with torch.inference_mode():
        for name in list(heads.fcs)[1:]:
            fc = box_head.get_submodule(name)
            result.append(fc(result[-1].clamp(min=0).to(fc.weight)).float().cpu())
    return result


def solve_heads(model, heads: Heads, samples: HeadSamples, plan, images, options, progress) -> None:
    """Solve the heads' layers the plan factorizes, on the approximated backbone (already in
    ``model``), and put them in ``model``; their plan entries get their errors and part."""
    solver = options.solver
    if heads.rpn is not None:
        start = time.perf_counter()
        entry = plan["layers"][RPN_CONV]
        head = model.proposal_generator.rpn_head
        if entry["structure"] != "original" or entry.get("rank") is not None:
            layer, (entry["error"], entry["heldout_error"]), _ = solve_layer(
                heads.rpn, entry, head.conv, model.backbone, samples.rpn_truth, samples.rpn,
                solver, None, samples.rpn_heldout,
            )  # fmt: skip
            broadcast_parameters(layer)
            head.conv = with_activation_of(head.conv, layer)
        entry["seconds"] = round(time.perf_counter() - start, 3)
        log_layer(RPN_CONV, entry)
    if heads.fcs:
        start = time.perf_counter()
        box_head = model.roi_heads.box_head
        linears = {spec.name: box_head.get_submodule(n) for n, spec in heads.fcs.items()}
        regressed, _ = fc_responses(model, model.backbone, heads, images, progress)
        layers = compress_linear_chain(
            linears, plan["layers"], samples.fc_truth[0], regressed, get_method(options.fc_method),
            solver, samples.fc_heldout,
        )  # fmt: skip
        for module, spec in heads.fcs.items():
            broadcast_parameters(layers[spec.name])
            setattr(box_head, module, layers[spec.name])
            entry = plan["layers"][spec.name]
            entry["seconds"] = round((time.perf_counter() - start) / len(heads.fcs), 3)
            log_layer(spec.name, entry)


def mark_head_parts(plan, heads: Heads) -> None:
    """The heads' entries of ``plan`` name their part and their module within it
    (:func:`accel_det.plan.part_plan`), which is how the accelerated heads find them."""
    if heads.rpn is not None and heads.rpn.name in plan["layers"]:
        plan["layers"][heads.rpn.name].update(part=RPN_HEAD_PART, module="conv")
    for module, spec in heads.fcs.items():
        if spec.name in plan["layers"]:
            plan["layers"][spec.name].update(part=BOX_HEAD_PART, module=module)
