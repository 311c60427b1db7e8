"""The second demo (``tools/demo.py --model r18-fpn``): a Faster R-CNN with a ResNet-18-FPN,
trained from scratch on the synthetic set and compressed as a whole detector.

:func:`run_fpn_demo` runs the stages of :class:`FPNDemoRun`, each reused when run again with the
same settings, as the VGG demo's (:mod:`.stages`) are:

1. the synthetic VOC-format set (the VGG demo's, shared with it; no selective search: the RPN
   makes the proposals);
2. the baseline, ``configs/demo/faster_rcnn_R_18_FPN_synthetic.yaml``, trained from scratch with
   batch norms, then the same detector with them folded into its convs (an all-``original`` plan
   through ``build_accel_backbone``): the one the accelerated models are timed against;
3. for each speedup, :func:`~accel_det.workflows.detector_compression.compress_detector` with its
   default target (the whole detector under one budget, §3.4), evaluated, fine-tuned briefly
   (``configs/demo/faster_rcnn_accel_R_18_FPN_synthetic.yaml`` with the overrides the compression
   records) and evaluated again;
4. eager latency of the whole detector and of its backbone, one thread, at the test size;
5. :func:`.fpn_report.write_fpn_report`: ``report.md`` (AP50 and paired ΔAP50 with intervals
   before and after fine-tuning, the targets), ``mAP_vs_speedup.png``, ``results.json``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import List, Optional

import torch
from detectron2.data import DatasetCatalog
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from detectron2.utils.env import seed_all_rng
from torch import nn

from ...detection.accel_backbone import accelerated_weights
from ...detection.config import load_config
from ...evaluation.ap import records_path
from ...solver import SolverOptions
from ...solver.planning import plan_from_structures
from ...solver.targets import find_targets
from ...utils.io import atomic_torch_save, atomic_write_json, load_torch_file
from ..detector_compression import DetectorCompressOptions, compress_detector
from ..detector_compression.backbone import padded
from .cache import cached_record, file_digest, stage_key
from .evaluation import evaluate, load_model
from .fpn_report import write_fpn_report
from .latency import measure_detectors, timing_input
from .options import DemoOptions, DemoStage
from .pretrain import pretrain_on_crops
from .stages import DemoRun, run_stages

logger = logging.getLogger("accel_det.demo")


def run_fpn_demo(options: DemoOptions) -> dict:
    """Run every stage; returns the summary also written to ``<output>/results.json``."""
    return run_stages(FPNDemoRun(options))


class CropResNet(nn.Module):
    """The detector's ResNet (``build_resnet_backbone``, every stage trainable) with global
    average pooling of its last stage and one linear layer: the crop classifier of
    :meth:`FPNDemoRun.pretrain`."""

    def __init__(self, cfg, num_classes: int):
        super().__init__()
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.BACKBONE.FREEZE_AT = 0
        self.bottom_up = build_resnet_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))
        self.last, shape = list(self.bottom_up.output_shape().items())[-1]
        self.fc = nn.Linear(shape.channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bottom_up(x)[self.last].mean(dim=(2, 3)))


class FPNDemoRun(DemoRun):
    """One run of the ResNet-FPN demo: the VGG demo's run with its own data, baseline, stages
    and timings."""

    folded = None  # (config, weights) of the baseline with its batch norms folded

    def make_data(self) -> None:
        """The synthetic set, registered (no proposal files: the RPN makes proposals)."""
        self.make_images()
        self.data_opts = [
            "DATASETS.TRAIN", "('synthetic_voc_trainval',)",
            "DATASETS.TEST", "('synthetic_voc_test',)",
            "SEED", str(self.options.seed),
        ]  # fmt: skip

    def pretrain(self) -> Optional[dict]:
        """The ResNet's pre-training as a classifier of object and background crops
        (:func:`.pretrain.pretrain_on_crops`, the VGG demo's stand-in for ImageNet), written as a
        Detectron2 checkpoint of the backbone (the FPN's convs as initialized); None with
        ``pretrain_iterations`` 0."""
        cfg, o = self.base_cfg, self.options
        if not o.pretrain_iterations:
            return None
        out = os.path.join(self.out, "pretrain")
        os.makedirs(out, exist_ok=True)
        weights, record_path = (
            os.path.join(out, "resnet_crops_d2.pth"),
            os.path.join(out, "result.json"),
        )
        records = DatasetCatalog.get("synthetic_voc_trainval")
        key = stage_key(cfg.MODEL.RESNETS.dump(), list(cfg.MODEL.PIXEL_MEAN),
                        list(cfg.MODEL.PIXEL_STD), cfg.INPUT.FORMAT, o.pretrain_iterations,
                        o.pretrain_lr, o.seed, len(records),
                        file_digest(records[0]["file_name"]))  # fmt: skip
        cached = cached_record(record_path, key, o.force)
        if cached is not None and os.path.isfile(weights):
            logger.info("pre-training: reusing %s (held-out crop accuracy %.3f)", weights,
                        cached["held_out_accuracy"])  # fmt: skip
            return cached
        seed_all_rng(o.seed)
        resnet = CropResNet(cfg, cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1)
        result = pretrain_on_crops(
            records, cfg.MODEL.ROI_HEADS.NUM_CLASSES, width=1.0, pixel_mean=cfg.MODEL.PIXEL_MEAN,
            pixel_std=cfg.MODEL.PIXEL_STD, input_format=cfg.INPUT.FORMAT,
            iterations=o.pretrain_iterations, lr=o.pretrain_lr, seed=o.seed,
            progress=o.progress, model=resnet,
        )  # fmt: skip
        backbone = build_backbone(cfg)  # the FPN's convs as Detectron2 initializes them
        backbone.bottom_up.load_state_dict(resnet.bottom_up.state_dict())
        state = {f"backbone.{k}": v.detach().clone() for k, v in backbone.state_dict().items()}
        atomic_torch_save({"model": state, "__author__": "accel-det demo (crop pre-training)",
                           "matching_heuristics": False}, weights)  # fmt: skip
        record = {"weights": weights, "key": key, **{k: result[k] for k in
                  ("held_out_accuracy", "seconds", "iterations", "final_loss")}}  # fmt: skip
        atomic_write_json(record, record_path)
        return record

    def train(self, pretrained: Optional[dict] = None) -> dict:
        """The baseline, from the crop-pre-trained ResNet (or from scratch without one)."""
        opts = list(self.options.opts) + self.data_opts
        opts += ["OUTPUT_DIR", os.path.join(self.out, "baseline" + self.suffix("train")),
                 "SEED", str(self.options.seeds()["train"])]  # fmt: skip
        if pretrained is not None:
            opts += ["MODEL.WEIGHTS", pretrained["weights"]]
        cfg = load_config(self.options.config, opts)
        extra = {"theoretical_speedup": 1.0, "baseline": True, "pretrain": pretrained}
        record = self.train_stage(cfg, "baseline", extra)
        logger.info("baseline AP50 %.1f", record["ap50"])
        self.fold_for_timing(record)
        return record

    def write_report(self, records: List[dict]) -> dict:
        """report.md, the plot and results.json (:func:`write_fpn_report`)."""
        return write_fpn_report(
            self.out, records, self.options, self.base_cfg, self.timings, self.data_dir
        )

    def fold_for_timing(self, record: dict) -> None:
        """The baseline with its batch norms folded into its convs: an all-``original`` plan
        through ``build_accel_backbone`` (the same network the solver starts from, §3.3), written
        next to the baseline; the model the accelerated ones are timed against."""
        cfg = self.configs[record["name"]]
        plan_path = os.path.join(record["output_dir"], "folded_plan.json")
        weights = os.path.join(record["output_dir"], "model_folded.pth")
        folded = load_config(self.options.accel_config, list(self.options.opts) + self.data_opts)
        folded.merge_from_list(["MODEL.ACCEL.BACKBONE_NAME", cfg.MODEL.BACKBONE.NAME,
                                "MODEL.ACCEL.PLAN", plan_path, "MODEL.WEIGHTS", weights,
                                "OUTPUT_DIR", record["output_dir"]])  # fmt: skip
        self.folded = (folded, weights)
        key = stage_key(record["key"], "folded")
        if cached_record(plan_path, key, self.options.force) and os.path.isfile(weights):
            return
        model = load_model(cfg, record["weights"])
        hw = padded((cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST), model.backbone)
        plan = plan_from_structures(find_targets(model.backbone, hw).specs, {}, method="original")
        atomic_write_json(dict(plan, key=key), plan_path)
        state = load_torch_file(record["weights"])["model"]
        folded_state = accelerated_weights(folded, state, plan=plan)
        atomic_torch_save({"model": folded_state, "__author__": "accel-det demo (folded)"}, weights)

    def stages(self) -> List[DemoStage]:
        """The whole-detector models (the compression's default target), then any conv-only
        ones (``speedups``: the backbone's convs alone, as in the paper)."""
        o = self.options
        stages = [DemoStage(f"detector_{s:g}x", s, o.method, "asym", "network")
                  for s in o.detector_speedups]  # fmt: skip
        return stages + [DemoStage(f"{o.method}_{s:g}x", s, o.method, "none", "conv")
                         for s in o.speedups]  # fmt: skip

    def stage_config(self, overrides, output_dir: str):
        """The fine-tuning config with the compression's ``config_overrides``."""
        o = self.options
        cfg = load_config(o.accel_config, list(o.opts) + self.data_opts)
        cfg.merge_from_list(list(overrides) + ["OUTPUT_DIR", output_dir])
        return cfg

    def compress(self, stage: DemoStage, baseline: dict, stage_dir: str) -> dict:
        """The baseline compressed as ``stage`` says and evaluated (reused when done)."""
        o = self.options
        out = os.path.join(stage_dir, "compressed")
        key = stage_key(self.configs[baseline["name"]].dump(), file_digest(baseline["weights"]),
                        stage, o.compress_images, o.samples_per_image, o.round_ranks_to, o.seed,
                        self.test_set)  # fmt: skip
        path = os.path.join(stage_dir, "compressed.json")
        compressed = cached_record(path, key, o.force)
        if compressed is not None:
            return compressed
        start = time.perf_counter()
        solver = SolverOptions(speedup=stage.speedup, method=stage.method, seed=o.seed,
                               samples_per_image=o.samples_per_image,
                               round_ranks_to=o.round_ranks_to)  # fmt: skip
        plan = compress_detector(DetectorCompressOptions(
            config_file=baseline["config"], output=out, solver=solver,
            opts=["MODEL.WEIGHTS", baseline["weights"], "MODEL.DEVICE", "cpu"],
            target=None if stage.target == "network" else stage.target,
            num_images=o.compress_images, overwrite=True, progress=o.progress,
        ))  # fmt: skip
        seconds = time.perf_counter() - start
        overrides = list(plan["config_overrides"])
        before = os.path.join(stage_dir, "eval_before_ft.json")
        cfg = self.stage_config(overrides, stage_dir)
        compressed = {
            "key": key,
            "ap50": evaluate(cfg, cfg.MODEL.WEIGHTS, before),
            "detections": records_path(before),
            "seconds": seconds,
            "plan": os.path.join(out, "plan.json"),
            "config_overrides": overrides,
            "theoretical_speedup": plan["theoretical_speedup"],
            "theoretical_speedup_detector": plan.get(
                "theoretical_speedup_detector", plan.get("theoretical_speedup_network")
            ),
            "speedup_target": plan.get("speedup_target"),
        }
        atomic_write_json(compressed, path)
        return compressed

    def accelerate(self, stage: DemoStage, baseline: dict) -> dict:
        """The baseline compressed (:meth:`compress`), evaluated, fine-tuned and evaluated."""
        o = self.options
        stage_dir = os.path.join(self.out, stage.name + self.suffix("train"))
        compressed = self.compress(stage, baseline, stage_dir)
        cfg = self.stage_config(compressed["config_overrides"], stage_dir + self.suffix("finetune"))
        cfg.merge_from_list(["SEED", str(o.seeds()["finetune"])] + list(o.finetune_opts))
        record = self.train_stage(cfg, stage.name, {
            "theoretical_speedup": compressed["theoretical_speedup"],
            "theoretical_speedup_detector": compressed["theoretical_speedup_detector"],
            "speedup_target": compressed["speedup_target"],
            "ap50_before_ft": compressed["ap50"],
            "detections_before_ft": compressed["detections"],
            "plan": compressed["plan"],
            "compress_seconds": compressed["seconds"],
            "stage": dict(stage.__dict__),
        })  # fmt: skip
        logger.info("%s: AP50 %.1f before fine-tuning, %.1f after", stage.name,
                    record["ap50_before_ft"], record["ap50"])  # fmt: skip
        return record

    def measure(self, records: List[dict]) -> None:
        """Eager latency of every final model (the baseline folded), written into its record;
        also the largest difference of the folded baseline's backbone features from the trained
        one's (relative to the largest feature of each level)."""
        models = {}
        for record in records:
            cfg, weights = (self.folded if record.get("baseline")
                            else (self.configs[record["name"]], record["weights"]))  # fmt: skip
            cfg = cfg.clone()
            cfg.defrost()
            cfg.MODEL.DEVICE = "cpu"
            cfg.freeze()
            models[record["name"]] = (cfg, load_model(cfg, weights), record.get("plan"))
        item = timing_input(next(iter(models.values()))[0])
        latency = measure_detectors(models, item, self.options)
        base = records[0]
        trained = load_model(self.configs[base["name"]], base["weights"])
        image = trained.preprocess_image([item]).tensor
        with torch.inference_mode():
            a, b = trained.backbone(image), models[base["name"]][1].backbone(image)
        base["folded_max_difference"] = max(
            float((a[k] - b[k]).abs().max() / a[k].abs().max().clamp(min=1e-12)) for k in a
        )
        for record in records:
            record["latency"] = latency[record["name"]]
            atomic_write_json(record, os.path.join(record["output_dir"], "result.json"))
