"""Compress any Detectron2 ``GeneralizedRCNN`` other than the VGG-16 Fast R-CNN (ResNet C4,
ResNet-FPN, ...): the other half of ``tools/compress_detector.py`` (the VGG-16 Fast R-CNN is
compressed by :mod:`.compress`).

Every conv of ``model.backbone`` the layer graph follows (a ResNet's stem, blocks and shortcuts,
the FPN's lateral and output convs) is a target, its batch norm folded first. With
``--speedup-of detector`` (the default) a Faster R-CNN's heads share the budget
(:mod:`.heads`: the RPN head's conv over all levels, the box head's fcs at the test proposal
count) and ``--speedup`` is of the whole detector's multiply-adds; with ``--speedup-of conv``, of
the backbone's convs alone, the heads kept. Ranks come from one selection (eq. 14); responses are
sampled on training images as the detector sees them at test time; the backbone's layers are
solved shallow to deep on the approximated network's inputs (asymmetric, §3.3; eq. 5 where a
ReLU follows, eq. 12 without r where a residual add or the output does), then the heads on the
approximated backbone. The outputs are those of the VGG path: ``DIR/model_final.pth`` (the whole
detector, keys as ``build_accel_backbone`` and the accelerated heads name them) and
``DIR/plan.json``, which records the config overrides that build it (``config_overrides``:
``MODEL.BACKBONE.NAME build_accel_backbone`` with ``MODEL.ACCEL.BACKBONE_NAME`` the config's
backbone, and the head builders).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from ...detection.accel_heads import BOX_HEAD_PART, RPN_HEAD_PART
from ...errors import AccelDetError
from ...plan import Plan
from ...solver import compress
from ...solver.joint import check_network_reachable, make_network_plan
from ...solver.options import skipped_layers
from ...solver.planning import check_reachable
from ...solver.targets import find_targets
from ...utils.dist import barrier
from ...utils.io import check_writable_folder
from .heads import Heads, find_heads, mark_head_parts, sample_heads, solve_heads
from .images import DetectorImages, sample_detector_images
from .outputs import run_record, write_outputs

logger = logging.getLogger(__name__)


@dataclass
class BackboneRun:
    """What :func:`prepare_backbone_run` checked and read, for :func:`compress_backbone`."""

    cfg: object
    model: object
    options: object  # DetectorCompressOptions, target resolved
    group: object
    input_hw: Tuple[int, int]
    images: DetectorImages
    heads: Optional[Heads] = None  # the heads in the budget (--speedup-of detector)


def prepare_backbone_run(cfg, model, options, group) -> BackboneRun:
    """Refuse what only the VGG-16 Fast R-CNN takes (fc options, a whole-detector target) and a
    speedup the backbone's layers cannot reach, before any image is read; then read the images."""
    backbone = cfg.MODEL.BACKBONE.NAME
    if options.fc_ranks:
        raise AccelDetError(
            f"--fc-ranks: only the VGG-16 Fast R-CNN's fc6/fc7 are compressed; this detector has "
            f"{cfg.MODEL.ROI_BOX_HEAD.NAME}, whose layers are kept (its backbone {backbone} is "
            "compressed)"
        )
    input_hw = padded(
        options.input_hw or (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST), model.backbone
    )
    targets = find_targets(model.backbone, input_hw)
    solver = options.solver.replace(skip=skipped_layers(options.solver, list(targets.names)))
    options = dataclasses.replace(options, target=options.target or "network", solver=solver)
    heads = None
    if options.target == "network":
        rois = int(options.rois_per_image or cfg.MODEL.RPN.POST_NMS_TOPK_TEST)
        heads = find_heads(model, input_hw, rois)
        check_network_reachable(
            [*targets.specs, *heads.convs], heads.linears, solver,
            fixed_macs=heads.fixed_macs,
        )  # fmt: skip
    else:
        check_reachable(targets.specs, solver)
    images = sample_detector_images(
        cfg, model, options.num_images, 0, seed=options.solver.seed,
        shard=(group.rank, group.world_size), progress=options.progress and group.is_main,
    )  # fmt: skip
    return BackboneRun(cfg, model, options, group, input_hw, images, heads)


def padded(input_hw, backbone) -> Tuple[int, int]:
    """``input_hw`` padded as Detectron2 pads images for ``backbone`` (to a multiple of its
    ``size_divisibility``: 32 for an FPN, whose top-down sums need it)."""
    multiple = max(1, int(getattr(backbone, "size_divisibility", 0) or 0))
    return tuple(-(-int(side) // multiple) * multiple for side in input_hw)


def compress_backbone(
    run: BackboneRun, paths: dict, replace: bool, argv: Optional[Sequence[str]], started: float
) -> Plan:
    """Solve the backbone's layers, swap the accelerated backbone into the detector and write the
    outputs; returns the record written to ``DIR/plan.json``."""
    options, group, model = run.options, run.group, run.model
    if group.is_main:
        check_writable_folder(paths["folder"])
        if not options.resume and os.path.exists(paths["checkpoint"]):
            os.remove(paths["checkpoint"])  # --overwrite: a stale checkpoint is never resumed
    barrier()

    def on_layer_done(name: str, entry: dict) -> None:
        if options.stop_after == name:
            raise KeyboardInterrupt(f"stopped after {name} (--stop-after)")

    progress = options.progress and group.is_main
    planner, samples = None, None
    if run.heads is not None:
        samples = sample_heads(model, run.heads, run.images, options, group.device, progress)
        planner = detector_planner(run.heads, samples, options.solver)
    result = compress(
        model.backbone, run.images, options.solver, device=group.device, progress=progress,
        input_hw=run.input_hw, checkpoint=paths["checkpoint"], resume=options.resume,
        on_layer_done=on_layer_done, planner=planner,
    )  # fmt: skip
    model.backbone = result.model.to(group.device)
    if run.heads is not None:
        solve_heads(model, run.heads, samples, result.plan, run.images, options, progress)
    record = backbone_record(result.plan, run, paths, argv, started)
    if group.is_main:
        write_outputs(model, record, paths, options.plot, replace)
    barrier()
    return record


def detector_planner(heads: Heads, samples, solver):
    """The planner of :func:`~accel_det.solver.compress` that puts the backbone's convs and the
    heads' layers under one budget (:func:`~accel_det.solver.joint.make_network_plan`)."""

    def planner(specs, eigenvalues, spatial_spectra=None):
        convs = [*specs, *heads.convs]
        spectra = None if spatial_spectra is None else {**spatial_spectra, **samples.spectra}
        plan = make_network_plan(
            convs, heads.linears, {**eigenvalues, **samples.eigenvalues}, solver,
            fixed_macs=heads.fixed_macs, spatial_spectra=spectra,
        )  # fmt: skip
        mark_head_parts(plan, heads)
        return plan

    return planner


def config_overrides(cfg, paths: dict, parts=()) -> list:
    """The config overrides that evaluate or fine-tune the output with the same config file
    (with the head builders of the ``parts`` the plan has entries of)."""
    heads = {
        RPN_HEAD_PART: ["MODEL.RPN.HEAD_NAME", "build_accel_rpn_head",
                        "MODEL.ACCEL.RPN_HEAD_NAME", cfg.MODEL.RPN.HEAD_NAME],
        BOX_HEAD_PART: ["MODEL.ROI_BOX_HEAD.NAME", "build_accel_box_head",
                        "MODEL.ACCEL.BOX_HEAD_NAME", cfg.MODEL.ROI_BOX_HEAD.NAME],
    }  # fmt: skip
    return [
        "MODEL.BACKBONE.NAME", "build_accel_backbone",
        "MODEL.ACCEL.BACKBONE_NAME", cfg.MODEL.BACKBONE.NAME,
        *[value for part in heads if part in parts for value in heads[part]],
        "MODEL.ACCEL.PLAN", paths["plan"],
        "MODEL.WEIGHTS", paths["weights"],
    ]  # fmt: skip


def backbone_record(plan, run: BackboneRun, paths: dict, argv, started: float) -> Plan:
    """``DIR/plan.json``: the plan extended with how it was obtained."""
    cfg, options = run.cfg, run.options
    record = Plan(plan)
    parts = {e.get("part") for e in plan["layers"].values()}
    if run.heads is not None:
        record.update(
            theoretical_speedup_detector=plan["theoretical_speedup_network"],
            rois_per_image=next(iter(run.heads.fcs.values())).rois if run.heads.fcs else None,
        )
    record.update(
        speedup_target="whole detector" if run.heads is not None else "backbone conv layers",
        backbone_name=cfg.MODEL.BACKBONE.NAME,
        config_overrides=config_overrides(cfg, paths, parts),
        input_hw=list(run.input_hw),
        sampled_input_hw=plan.get("input_hw"),
        images={"datasets": list(cfg.DATASETS.TRAIN), "num_images": options.num_images},
        **run_record(options, argv, cfg, started),
    )
    record["layers"] = record.pop("layers")
    return record
