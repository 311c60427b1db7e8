"""The detectors the R-CNN speed benchmark times: a Detectron2 R-CNN with random weights whose
batch norms carry realistic statistics, and copies whose backbone follows a solver plan.

Timing only: random weights have flat spectra, so the plans (rank selection, eqs. 13-14, on
eigenvalues of responses sampled on random images) and the factorized layers' weights (random,
each output channel scaled to the mean and spread of the conv it replaces) say nothing about
accuracy. What they keep is what speed depends on: the layers' shapes, the activations' scale (no
layer runs on denormal numbers), and a ReLU sparsity like a trained network's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import torch
from torch import nn

from ..detection.accel_backbone import accelerate_backbone
from ..detection.config import load_config
from ..nn.factorized import FactorizedConv2d
from ..nn.network import prepare
from ..plan import Plan
from ..solver import SolverOptions, conv_specs
from ..solver.joint import make_network_plan
from ..solver.options import skipped_layers
from ..workflows.detector_compression import DetectorCompressOptions
from ..workflows.detector_compression.heads import (
    Heads,
    HeadSamples,
    find_heads,
    mark_head_parts,
    sample_heads,
    solve_heads,
)
from ..workflows.detector_compression.images import DetectorImages
from .plans import sampled_eigenvalues

CALIBRATION_HW = (256, 352)


def random_detector(config_file: str, opts: Sequence[str] = (), seed: int = 0):
    """``(cfg, model)``: the eval-mode Detectron2 model of ``config_file`` (+ ``opts``) on the
    CPU, Detectron2's random initialisation, its backbone's batch norms calibrated
    (:func:`calibrate_batch_norms`)."""
    from detectron2.modeling import build_model

    cfg = load_config(config_file, [*opts, "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"])
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    calibrate_batch_norms(model.backbone, backbone_images(model, 1, seed=seed), seed=seed)
    return cfg, model


@torch.no_grad()
def backbone_images(
    model: nn.Module, count: int, hw: Tuple[int, int] = CALIBRATION_HW, seed: int = 0
) -> torch.Tensor:
    """``count`` random images (0-255 pixels) as ``model``'s backbone sees them: normalized by
    its ``PIXEL_MEAN`` and ``PIXEL_STD`` (Detectron2's R-50 weights take pixels minus the mean,
    unscaled) and padded to its ``size_divisibility``."""
    generator = torch.Generator().manual_seed(seed)
    images = [
        {"image": torch.randint(0, 256, (3, *hw), generator=generator).float()}
        for _ in range(count)
    ]
    return model.preprocess_image(images).tensor


def is_batch_norm(module: nn.Module) -> bool:
    """Detectron2's ``FrozenBatchNorm2d`` or a torch batch norm."""
    return isinstance(module, nn.modules.batchnorm._BatchNorm) or (
        type(module).__name__ == "FrozenBatchNorm2d"
    )


@torch.no_grad()
def calibrate_batch_norms(backbone: nn.Module, images: torch.Tensor, seed: int = 0):
    """Give every batch norm of ``backbone`` the statistics of its input on ``images`` (the
    backbone's input: :func:`backbone_images`; one forward pass, shallow to deep) and a random
    scale in [0.3, 1] and shift N(0, 0.2²), as a trained network's: activations of unit scale,
    about half of every ReLU's outputs zero."""
    generator = torch.Generator().manual_seed(seed)
    norms = [m for m in backbone.modules() if is_batch_norm(m)]

    def calibrate(module, args):
        x = args[0]
        channels = x.shape[1]
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)) + 1e-6)
        module.weight.copy_(0.3 + 0.7 * torch.rand(channels, generator=generator))
        module.bias.copy_(0.2 * torch.randn(channels, generator=generator))

    handles = [m.register_forward_pre_hook(calibrate) for m in norms]
    try:
        backbone.eval()(images)
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class DetectorPlans:
    """Per speedup (``2x``, ``3x``, …) the whole-detector plan, and what its heads are solved
    from (:func:`accelerated_detector`)."""

    plans: Dict[str, Plan]
    heads: Heads
    samples: HeadSamples
    images: DetectorImages
    options: DetectorCompressOptions


def detector_plans(
    model: nn.Module,
    speedups: Sequence[float],
    input_hw: Tuple[int, int],
    *,
    method: str = "asym",
    images: int = 4,
    samples_per_image: int = 256,
    seed: int = 0,
) -> DetectorPlans:
    """Per speedup, the plan ``tools/compress_detector.py --speedup`` would follow at
    ``input_hw`` (the backbone's convs, the RPN head's conv and the box head's fcs under one
    budget at the test proposal count; rank selection, eqs. 13-14), from eigenvalues of responses
    sampled on ``images`` random images: the layers' shapes for timing, not a quality
    statement."""
    batch = backbone_images(model, images, seed=seed + 1)
    eigenvalues = sampled_eigenvalues(model.backbone, batch, samples_per_image=samples_per_image)
    specs = conv_specs(model.backbone, input_hw)
    heads = find_heads(model, input_hw, model.proposal_generator.post_nms_topk[False])
    generator = torch.Generator().manual_seed(seed + 3)
    pictures = [torch.randint(0, 256, (3, *CALIBRATION_HW), generator=generator, dtype=torch.uint8)
                for _ in range(images)]  # fmt: skip
    sampled = DetectorImages(model, images=pictures, indices=list(range(images)))
    options = DetectorCompressOptions(
        "", "", solver=SolverOptions(2.0, method=method, samples_per_image=samples_per_image,
                                     heldout_fraction=0, seed=seed),
    )  # fmt: skip
    samples = sample_heads(model, heads, sampled, options, torch.device("cpu"), False)
    plans = {}
    for speedup in speedups:
        solver = options.solver.replace(speedup=speedup)
        solver = solver.replace(skip=skipped_layers(solver, [s.name for s in specs]))
        plan = make_network_plan(
            [*specs, *heads.convs], heads.linears, {**eigenvalues, **samples.eigenvalues}, solver,
            fixed_macs=heads.fixed_macs,
        )  # fmt: skip
        mark_head_parts(plan, heads)
        plans[f"{speedup:g}x"] = plan
    return DetectorPlans(plans, heads, samples, sampled, options)


def accelerated_detector(model: nn.Module, plans: DetectorPlans, name: str, seed: int = 0):
    """A copy of ``model`` that follows the plan ``name``: its backbone's (``accelerate_backbone``:
    batch norms folded, the plan's convs factorized, each matched to the conv it replaces,
    :func:`match_statistics`) and its heads' (solved by the solver on the original backbone's
    features at the sampled images, :func:`~accel_det.workflows.detector_compression.heads.
    solve_heads`)."""
    plan = plans.plans[name]
    accelerated = copy.deepcopy(model)
    accelerated.backbone = accelerate_backbone(model.backbone, plan)
    images = backbone_images(model, 1, seed=seed + 2)
    match_statistics(accelerated.backbone, model.backbone, images)
    with_original_backbone = copy.deepcopy(accelerated)
    with_original_backbone.backbone = model.backbone
    solve_heads(with_original_backbone, plans.heads, plans.samples, copy.deepcopy(plan),
                plans.images, plans.options, False)  # fmt: skip
    accelerated.proposal_generator = with_original_backbone.proposal_generator
    accelerated.roi_heads = with_original_backbone.roi_heads
    return accelerated.eval()


@torch.no_grad()
def match_statistics(accelerated: nn.Module, original: nn.Module, images: torch.Tensor):
    """Scale and shift each output channel of every factorized layer of ``accelerated`` (its last
    conv's weight and bias) so that, on ``images``, it has the mean and spread of the folded conv
    of ``original`` it replaces, given the same input (one forward pass, shallow to deep)."""
    folded, _ = prepare(original)
    layers = {n: m for n, m in accelerated.named_modules() if isinstance(m, FactorizedConv2d)}

    def hook_for(name: str):
        def match(module, args, output):
            target = folded.get_submodule(name)(args[0])
            dims = (0, 2, 3)
            scale = target.std(dim=dims) / output.std(dim=dims).clamp_min(1e-12)
            shift = target.mean(dim=dims) - scale * output.mean(dim=dims)
            last = list(module.children())[-1]
            last.weight.mul_(scale.view(-1, 1, 1, 1))
            last.bias.copy_(scale * last.bias + shift)
            return output * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)

        return match

    handles = [m.register_forward_hook(hook_for(n)) for n, m in layers.items()]
    try:
        accelerated.eval()(images)
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def inference_macs(model: nn.Module, image: torch.Tensor) -> Dict[str, int]:
    """Multiply-adds of the convs and fc layers of one inference of ``model`` on ``image``
    (3×H×W), counted by forward hooks, per part: ``backbone`` (with the FPN),
    ``proposal_generator`` (the RPN head, run once per FPN level), ``roi_heads`` (the box head
    on the RPN's proposals), and ``total``. The whole model's theoretical speedup is the ratio
    of totals: the backbone's share bounds what a backbone plan can give (Amdahl)."""
    counts: Dict[str, int] = {"backbone": 0, "proposal_generator": 0, "roi_heads": 0}

    def hook_for(part: str):
        def count(module, args, output):
            if isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                per_output = module.in_channels // module.groups * kh * kw
            else:
                per_output = module.in_features
            counts[part] += output.numel() * per_output

        return count

    handles = []
    for part in counts:
        for module in getattr(model, part).modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                handles.append(module.register_forward_hook(hook_for(part)))
    try:
        model.eval().inference([{"image": image}], do_postprocess=False)
    finally:
        for handle in handles:
            handle.remove()
    counts["total"] = sum(counts.values())
    return counts
