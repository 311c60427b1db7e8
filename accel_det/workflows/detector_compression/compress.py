"""Compress a trained Fast R-CNN detector as a whole: the library side of
``tools/compress_detector.py``.

The conv layers and fc6/fc7 take one budget (:func:`accel_det.solver.joint.make_network_plan`):
the target is the theoretical speedup of the whole detector at its test input size and
``rois_per_image`` RoIs (or, as in the paper, of its conv layers). Responses are sampled on
training images preprocessed as the detector sees them at test time: the conv layers' at random
positions, fc6/fc7's at RoIs drawn from the image's top test-time proposals. The convs are solved
first (asymmetric, shallow to deep), then fc6 from the approximated backbone, then fc7 from the
approximated fc6; the box predictor is kept. Writes ``DIR/model_final.pth`` (a Detectron2
checkpoint of the whole accelerated detector), ``DIR/plan.json`` (the plan and how it was made)
and ``DIR/plan.png``, for ``MODEL.WEIGHTS`` and ``MODEL.ACCEL.PLAN`` of the accelerated config.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field, fields
from typing import Mapping, Optional, Sequence, Tuple

import torch
from detectron2.modeling import build_model

from ...detection.checkpoint import load_detector_weights
from ...detection.config import load_config
from ...errors import AccelDetError
from ...nn.chain import conv_names
from ...nn.factorized import is_rank, rank_limits
from ...plan import Plan
from ...solver import SolverOptions, compress, conv_specs, get_method
from ...solver.channel import covariance, eigen_descending
from ...solver.complexity import LinearSpec
from ...solver.heldout import split_rows
from ...solver.joint import check_network_reachable, make_network_plan
from ...solver.linear import compress_linear_chain
from ...solver.options import skipped_layers
from ...solver.pipeline import log_layer
from ...utils.dist import agreed_errors, barrier, broadcast_parameters, init_distributed
from ...utils.io import check_writable_folder
from .backbone import compress_backbone, prepare_backbone_run
from .images import sample_detector_images
from .outputs import check_outputs, output_paths, run_record, write_outputs
from .responses import fc6_responses, fc_targets

logger = logging.getLogger(__name__)

FC_METHODS = ("asym", "nonlinear", "linear", "svd", "none")
FC_LAYERS = ("fc6", "fc7")


@dataclass
class DetectorCompressOptions:
    """Everything ``tools/compress_detector.py`` accepts."""

    config_file: str
    output: str
    opts: Sequence[str] = ()
    solver: SolverOptions = field(default_factory=lambda: SolverOptions(speedup=4.0))
    fc_method: str = "asym"
    fc_ranks: Optional[Mapping[str, int]] = None  # fixed fc6/fc7 ranks instead of selected ones
    # "network": the whole detector; "conv": its conv layers (the paper); None: "network" for the
    # VGG-16 Fast R-CNN, "conv" (the backbone's) for any other detector
    target: Optional[str] = None
    num_images: int = 500
    rois_per_image: Optional[int] = None  # R of the budget; default the config's test top-k
    fc_samples_per_image: int = 64  # RoIs per image whose fc responses are sampled
    foreground_fraction: float = 0.0
    input_hw: Optional[Tuple[int, int]] = None  # default (MIN_SIZE_TEST, MAX_SIZE_TEST)
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    plot: bool = True
    device: str = "auto"
    stop_after: Optional[str] = (
        None  # test hook: behave like a Ctrl-C after this layer is checkpointed
    )

    def record(self) -> dict:
        tool = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("solver", "progress", "stop_after")
        }
        tool["opts"] = list(self.opts)
        return {**tool, **self.solver.record()}

    def check(self) -> None:
        if self.fc_method not in FC_METHODS:
            raise AccelDetError(
                f"unknown fc method {self.fc_method!r}; expected one of {', '.join(FC_METHODS)}"
            )
        if self.num_images < 1 or self.fc_samples_per_image < 1:
            raise AccelDetError("--num-images and --fc-samples-per-image must be at least 1")
        if not 0.0 <= self.foreground_fraction <= 1.0:
            raise AccelDetError(
                f"--foreground-fraction must be in [0, 1], got {self.foreground_fraction}"
            )
        if self.rois_per_image is not None and self.rois_per_image < 1:
            raise AccelDetError(f"--rois-per-image must be at least 1, got {self.rois_per_image}")
        for name, rank in (self.fc_ranks or {}).items():
            if not is_rank(rank):
                raise AccelDetError(
                    f"--fc-ranks: the rank of {name} must be at least 1, got {rank}"
                )


def is_vgg_fast_rcnn(cfg) -> bool:
    """Whether ``cfg`` is the VGG-16 Fast R-CNN, compressed as a whole (conv and fc layers);
    any other detector has its backbone compressed (:mod:`.backbone`)."""
    return (
        cfg.MODEL.BACKBONE.NAME == "build_vgg16_backbone"
        and cfg.MODEL.ROI_BOX_HEAD.NAME == "VGG16BoxHead"
    )


def load_detector(options: DetectorCompressOptions, device):
    """The config and the trained plain detector it names (``MODEL.WEIGHTS``, checked)."""
    cfg = load_config(options.config_file, list(options.opts) + ["MODEL.DEVICE", str(device)])
    if cfg.MODEL.META_ARCHITECTURE != "GeneralizedRCNN" or cfg.MODEL.BACKBONE.NAME.startswith(
        "build_accel_"
    ):
        raise AccelDetError(
            "compress_detector takes a plain GeneralizedRCNN: the VGG-16 Fast R-CNN "
            "(MODEL.BACKBONE.NAME build_vgg16_backbone, ROI_BOX_HEAD.NAME VGG16BoxHead) as a "
            "whole, or the backbone of any other (build_resnet_backbone, "
            f"build_resnet_fpn_backbone, ...); this config has {cfg.MODEL.META_ARCHITECTURE}, "
            f"{cfg.MODEL.BACKBONE.NAME}"
        )
    if cfg.MODEL.BACKBONE.NAME == "build_vgg16_backbone" and cfg.MODEL.VGG.NORM:
        raise AccelDetError("MODEL.VGG.NORM is set: fold the batch norms into the convs first")
    if not cfg.MODEL.WEIGHTS:
        raise AccelDetError("MODEL.WEIGHTS is empty: compress a trained detector")
    cfg.freeze()
    model = build_model(cfg)
    load_detector_weights(model, cfg.MODEL.WEIGHTS, complete=True)
    return cfg, model.eval()


def check_fc_ranks(model, fc_ranks: Optional[Mapping[str, int]]) -> None:
    """Refuse fixed fc6/fc7 ranks above the layers' full ranks, or above the break-even rank
    c·d / (c + d) below it, where the two factors cost more than the layer, before any work."""
    head = model.roi_heads.box_head
    for name, rank in (fc_ranks or {}).items():
        layer = getattr(head, name)
        c, d = layer.in_features, layer.out_features
        limit = rank_limits(c, d)[0]
        if rank > limit:
            raise AccelDetError(
                f"--fc-ranks: {name} has rank {rank}, larger than its full rank {limit} ({c}→{d})"
            )
        even = (c * d - 1) // (c + d)  # the largest rank whose two factors cost less than c·d
        if even < rank < limit:
            raise AccelDetError(
                f"--fc-ranks: {name} at rank {rank} costs more than the layer itself ({c}→{d}): "
                f"give at most {even}, or {limit} to keep it whole"
            )


def linear_specs(model, rois: int) -> Tuple[list, int]:
    """fc6 and fc7 as :class:`LinearSpec` at ``rois`` RoIs per image, and the multiply-adds per
    image of the box predictor (kept as it is)."""
    head = model.roi_heads.box_head
    specs = [
        LinearSpec(n, getattr(head, n).in_features, getattr(head, n).out_features, rois)
        for n in FC_LAYERS
    ]
    predictor = model.roi_heads.box_predictor
    fixed = rois * sum(
        m.in_features * m.out_features
        for m in predictor.modules()
        if isinstance(m, torch.nn.Linear)
    )
    return specs, fixed


def compress_detector(
    options: DetectorCompressOptions, argv: Optional[Sequence[str]] = None
) -> dict:
    """Run the whole compression; returns the record written to ``DIR/plan.json``."""
    started = time.perf_counter()
    options.check()
    with agreed_errors():
        group = init_distributed(options.device)
        paths = output_paths(options.output)
        replace = check_outputs(paths, options)
        cfg, model = load_detector(options, group.device)
        if not is_vgg_fast_rcnn(cfg):
            run = prepare_backbone_run(cfg, model, options, group)
    if not is_vgg_fast_rcnn(cfg):
        return compress_backbone(run, paths, replace, argv, started)
    options = dataclasses.replace(options, target=options.target or "network")
    with agreed_errors():
        check_fc_ranks(model, options.fc_ranks)
        names = list(conv_names(model.backbone.features))
        solver = options.solver.replace(skip=skipped_layers(options.solver, names))
        options = dataclasses.replace(options, solver=solver)
        rois = int(options.rois_per_image or cfg.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST)
        input_hw = tuple(options.input_hw or (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST))
        linears, fixed = linear_specs(model, rois)
        check_network_reachable(
            conv_specs(model.backbone.features, input_hw), linears, options.solver,
            fixed_macs=fixed, target=options.target, fc_ranks=options.fc_ranks,
            select_fc=options.fc_method != "none",
        )  # fmt: skip
        progress = options.progress and group.is_main
        images = sample_detector_images(
            cfg, model, options.num_images, options.fc_samples_per_image,
            foreground_fraction=options.foreground_fraction, seed=options.solver.seed,
            shard=(group.rank, group.world_size), progress=progress,
        )  # fmt: skip
    if group.is_main:
        check_writable_folder(paths["folder"])
        if not options.resume and os.path.exists(paths["checkpoint"]):
            os.remove(paths["checkpoint"])  # --overwrite: a stale checkpoint is never resumed
    barrier()
    fc_method = None if options.fc_method == "none" else get_method(options.fc_method)
    fc_eigenvalues = {}
    if fc_method is not None:
        y6, owners = fc6_responses(model, model.backbone.features, images, progress)
        heldout = split_rows(
            owners, options.solver.heldout_fraction, options.solver.seed, warn=False
        )
        y6, y7 = fc_targets(model, y6)
        fc_eigenvalues = {
            n: eigen_descending(covariance(y[~heldout])[1])[0] for n, y in zip(FC_LAYERS, (y6, y7))
        }

    def planner(specs, eigenvalues, spatial_spectra=None):
        return make_network_plan(
            specs, linears, {**eigenvalues, **fc_eigenvalues}, options.solver, fixed_macs=fixed,
            target=options.target, fc_ranks=options.fc_ranks, spatial_spectra=spatial_spectra,
        )  # fmt: skip

    def on_layer_done(name: str, entry: dict) -> None:
        if options.stop_after == name:
            raise KeyboardInterrupt(f"stopped after {name} (--stop-after)")

    result = compress(
        model.backbone.features, images, options.solver, device=group.device, progress=progress,
        input_hw=input_hw, checkpoint=paths["checkpoint"], resume=options.resume, planner=planner,
        on_layer_done=on_layer_done,
    )  # fmt: skip
    plan = result.plan
    head = model.roi_heads.box_head
    model.backbone.features = result.model.to(group.device)
    if fc_method is not None and any(plan["layers"][n]["rank"] for n in FC_LAYERS):
        start = time.perf_counter()
        regressed, _ = fc6_responses(model, model.backbone.features, images, progress)
        layers = compress_linear_chain(
            {n: getattr(head, n) for n in FC_LAYERS},
            plan["layers"],
            y6,
            regressed,
            fc_method,
            options.solver,
            heldout,
        )
        for name, layer in layers.items():
            broadcast_parameters(layer)
            setattr(head, name, layer)
            plan["layers"][name]["seconds"] = round((time.perf_counter() - start) / len(layers), 3)
            log_layer(name, plan["layers"][name])
    record = detector_record(plan, options, argv, cfg, images, rois, input_hw, started)
    if group.is_main:
        write_outputs(model, record, paths, options.plot, replace)
    barrier()
    return record


def detector_record(plan, options, argv, cfg, images, rois, input_hw, started) -> Plan:
    """``DIR/plan.json``: the plan extended with how it was obtained."""
    record = Plan(plan)
    record.update(
        theoretical_speedup_detector=plan["theoretical_speedup_network"],
        fc_method=options.fc_method,
        rois_per_image=rois,
        input_hw=list(input_hw),
        sampled_input_hw=plan.get("input_hw"),
        fc_samples_per_image=options.fc_samples_per_image,
        images={
            "datasets": list(cfg.DATASETS.TRAIN),
            "num_images": options.num_images,
            "rois": images.num_rois,
        },
        **run_record(options, argv, cfg, started),
    )
    record["layers"] = record.pop("layers")
    return record
