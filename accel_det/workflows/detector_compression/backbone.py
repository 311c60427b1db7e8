"""Compress the backbone of any Detectron2 ``GeneralizedRCNN`` (ResNet C4, ResNet-FPN, ...): the
other half of ``tools/compress_detector.py`` (the VGG-16 Fast R-CNN is compressed as a whole,
:mod:`.compress`).

Every conv of ``model.backbone`` the layer graph follows (a ResNet's stem, blocks and shortcuts,
the FPN's lateral and output convs) is a target, its batch norm folded first; one budget, the
``--speedup`` of the backbone's conv multiply-adds at the test input size, is shared by them
(rank selection, eq. 14); responses are sampled on training images as the detector sees them at
test time, and the layers are solved shallow to deep on the approximated network's inputs
(asymmetric, §3.3; eq. 5 where a ReLU follows, eq. 12 without r where a residual add or the
output does). The heads are kept. The outputs are those of the VGG path: ``DIR/model_final.pth``
(the whole detector, backbone keys as ``build_accel_backbone`` names them) and ``DIR/plan.json``,
for ``MODEL.BACKBONE.NAME build_accel_backbone`` with ``MODEL.ACCEL.BACKBONE_NAME`` the config's
backbone (the plan records the overrides, ``config_overrides``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from ...errors import AccelDetError
from ...plan import Plan
from ...solver import compress
from ...solver.planning import check_reachable
from ...solver.targets import find_targets
from ...utils.dist import barrier
from ...utils.io import check_writable_folder
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
    if options.target == "network":
        raise AccelDetError(
            "--speedup-of detector is the VGG-16 Fast R-CNN's (conv and fc layers under one "
            f"budget); for {backbone}, --speedup is of the backbone's conv layers "
            "(--speedup-of conv)"
        )
    options = dataclasses.replace(options, target="conv")
    input_hw = padded(
        options.input_hw or (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST), model.backbone
    )
    check_reachable(find_targets(model.backbone, input_hw).specs, options.solver)
    images = sample_detector_images(
        cfg, model, options.num_images, 0, seed=options.solver.seed,
        shard=(group.rank, group.world_size), progress=options.progress and group.is_main,
    )  # fmt: skip
    return BackboneRun(cfg, model, options, group, input_hw, images)


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

    result = compress(
        model.backbone, run.images, options.solver, device=group.device,
        progress=options.progress and group.is_main, input_hw=run.input_hw,
        checkpoint=paths["checkpoint"], resume=options.resume, on_layer_done=on_layer_done,
    )  # fmt: skip
    model.backbone = result.model.to(group.device)
    record = backbone_record(result.plan, run, paths, argv, started)
    if group.is_main:
        write_outputs(model, record, paths, options.plot, replace)
    barrier()
    return record


def config_overrides(cfg, paths: dict) -> list:
    """The config overrides that evaluate or fine-tune the output with the same config file."""
    return [
        "MODEL.BACKBONE.NAME", "build_accel_backbone",
        "MODEL.ACCEL.BACKBONE_NAME", cfg.MODEL.BACKBONE.NAME,
        "MODEL.ACCEL.PLAN", paths["plan"],
        "MODEL.WEIGHTS", paths["weights"],
    ]  # fmt: skip


def backbone_record(plan, run: BackboneRun, paths: dict, argv, started: float) -> Plan:
    """``DIR/plan.json``: the plan extended with how it was obtained."""
    cfg, options = run.cfg, run.options
    record = Plan(plan)
    record.update(
        speedup_target="backbone conv layers",
        backbone_name=cfg.MODEL.BACKBONE.NAME,
        config_overrides=config_overrides(cfg, paths),
        input_hw=list(run.input_hw),
        sampled_input_hw=plan.get("input_hw"),
        images={"datasets": list(cfg.DATASETS.TRAIN), "num_images": options.num_images},
        **run_record(options, argv, cfg, started),
    )
    record["layers"] = record.pop("layers")
    return record
