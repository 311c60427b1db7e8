"""The main job (``make demo``): AP50 against speedup for Fast R-CNN with an accelerated VGG-16.

:func:`run_demo` runs the stages in order, each reused when run again with the same settings:

1. :meth:`DemoRun.make_data`: a synthetic VOC-format data set (not PASCAL VOC) at
   ``$DETECTRON2_DATASETS/synthetic_voc`` and selective-search proposals for it;
2. :meth:`DemoRun.pretrain`: a stand-in for ImageNet pre-training, the narrow VGG-16's conv
   layers trained as a classifier of object and background crops (:mod:`.pretrain`), converted
   like ImageNet weights;
3. :meth:`DemoRun.train`: the baseline Fast R-CNN from those weights
   (``configs/demo/vgg16_synthetic.yaml``), its batch norms (if any) folded;
4. :meth:`DemoRun.accelerate`: for each speedup, the baseline's backbone compressed with the
   paper's solver on training images preprocessed as the detector's input, evaluated, then
   fine-tuned briefly (``configs/demo/accel_vgg16_synthetic.yaml``) and evaluated again;
5. :meth:`DemoRun.measure`: latency of backbone and whole detector;
6. :func:`.report.write_demo_report`: ``report.md``, ``mAP_vs_speedup.png``, ``results.json``.

The same code path as ``tools/train_net.py`` (configs, registered backbones, ``Trainer``,
``PascalVOCDetectionEvaluator``); the demo only differs through config keys.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Dict, List

import torch
from detectron2.data import DatasetCatalog
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from ...data.synthetic.voc import STAMP_FILE, make_synthetic_voc
from ...detection.config import load_config
from ...detection.convert import vgg16_to_detectron2
from ...detection.datasets import datasets_root, register_synthetic_voc
from ...detection.proposals import check_proposal_file, make_proposals, proposal_stats
from ...detection.trainer import Trainer, by_dataset, check_inputs, save_results
from ...errors import AccelDetError
from ...evaluation.ap import records_path
from ...solver import SolverOptions
from ...utils.io import atomic_torch_save, atomic_write_json, atomic_write_text, json_safe
from ..detector_compression import DetectorCompressOptions, compress_detector
from ..report import eval_ap50
from .cache import cached_record, file_digest, stage_key
from .deployed import deployed_latency, export_detector, exported_ap50
from .evaluation import evaluate, load_model
from .int8 import measure_int8
from .latency import measure_detectors, timing_input
from .options import DemoOptions, DemoStage
from .pretrain import pretrain_on_crops
from .report import write_demo_report

logger = logging.getLogger("accel_det.demo")


def run_demo(options: DemoOptions) -> dict:
    """Run every stage; returns the summary also written to ``<output>/results.json``."""
    return run_stages(DemoRun(options))


def run_stages(run: "DemoRun") -> dict:
    """Every stage of ``run`` (a :class:`DemoRun` or a subclass) in order, then its report."""
    start = time.perf_counter()
    with run.timed("data"):
        run.make_data()
    with run.timed("pretrain"):
        pretrained = run.pretrain()
    with run.timed("baseline"):
        baseline = run.train(pretrained)
    records = [baseline]
    for stage in run.stages():
        with run.timed(stage.name):
            records.append(run.accelerate(stage, baseline))
    with run.timed("latency"):
        run.measure(records)
    run.timings["total"] = time.perf_counter() - start
    return run.write_report(records)


class DemoRun:
    """One run of the demo: its output folder, configs and data, and the stages."""

    def __init__(self, options: DemoOptions):
        self.out = os.path.abspath(options.output)
        os.makedirs(self.out, exist_ok=True)
        setup_logger(self.out, name="detectron2", abbrev_name="d2")
        setup_logger(self.out, name="accel_det")
        torch.set_num_threads(options.threads)
        class_opts = ["MODEL.ROI_HEADS.NUM_CLASSES", str(len(options.classes))]
        self.options = dataclasses.replace(options, opts=class_opts + list(options.opts))
        self.base_cfg = load_config(self.options.config, list(self.options.opts))
        self.data_dir = os.path.abspath(
            options.data_root or os.path.join(datasets_root(), "synthetic_voc")
        )
        self.data_opts: List[str] = []
        self.configs: Dict[str, object] = {}  # name -> the config of each final model
        self.timings: Dict[str, float] = {}
        self.rois = 0  # RoIs per test image the detector budget counts (set with the proposals)
        self.accel_cfg = None  # the fine-tuning config, before the keys of one speedup
        self.test_set = None  # the data's stamp digest: evaluations are redone when it changes

    def suffix(self, which: str) -> str:
        """``""``, or ``_trainseed<n>`` / ``_ftseed<n>`` for a baseline training / fine-tuning
        seed other than ``seed``: the folder of a model trained with another seed."""
        seed = self.options.seeds()[which]
        if seed == self.options.seed:
            return ""
        return f"_{'trainseed' if which == 'train' else 'ftseed'}{seed}"

    def timed(self, name: str):
        """A context that adds the block's wall time to ``timings[name]``."""
        run = self

        class Timer:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                run.timings[name] = time.perf_counter() - self.start

        return Timer()

    # ------------------------------------------------------------------ 1. data and proposals
    def make_data(self) -> None:
        """The synthetic VOC-format set and its selective-search proposals (Detectron2's files)."""
        o = self.options
        self.make_images()
        files = {}
        for split in ("trainval", "test"):
            path = os.path.join(self.data_dir, "proposals", f"selective_search_{split}.pkl")
            name = f"synthetic_voc_{split}"
            images = [(str(d["image_id"]), d["file_name"]) for d in DatasetCatalog.get(name)]
            if o.force or not proposals_ok(path, images, name):
                logger.info("selective search over %s (%d images)", name, len(images))
                make_proposals(
                    images,
                    path,
                    min_size=o.proposal_min_size,
                    workers=o.workers,
                    progress=o.progress,
                    dataset_name=name,
                    overwrite=True,
                )
            files[split] = path
        mean = proposal_stats(files["test"])["mean_boxes"]
        self.rois = int(round(min(mean, self.base_cfg.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST)))
        self.data_opts = [
            "DATASETS.TRAIN",
            "('synthetic_voc_trainval',)",
            "DATASETS.TEST",
            "('synthetic_voc_test',)",
            "DATASETS.PROPOSAL_FILES_TRAIN",
            f"('{files['trainval']}',)",
            "DATASETS.PROPOSAL_FILES_TEST",
            f"('{files['test']}',)",
            "SEED",
            str(o.seed),
        ]

    def make_images(self) -> None:
        """The synthetic VOC-format set (made once, reused while its settings stay), registered."""
        o = self.options
        make_synthetic_voc(
            self.data_dir,
            num_trainval=o.num_trainval,
            num_test=o.num_test,
            image_size=int(self.base_cfg.INPUT.MIN_SIZE_TEST),
            classes=o.classes,
            max_objects=o.max_objects,
            min_object=o.min_object,
            max_object=o.max_object,
            seed=o.seed,
            workers=o.workers,
            progress=o.progress,
        )
        register_synthetic_voc(self.data_dir, replace=True)
        self.test_set = file_digest(os.path.join(self.data_dir, STAMP_FILE))

    # ------------------------------------------------------------------ 2. pre-training
    def pretrain(self) -> dict:
        """Train the crop classifier (:func:`pretrain_on_crops`) on ``synthetic_voc_trainval`` and
        write its conv weights as a Detectron2 checkpoint (backbone only), as ImageNet weights
        are."""
        cfg, o = self.base_cfg, self.options
        out = os.path.join(self.out, "pretrain")
        os.makedirs(out, exist_ok=True)
        weights = os.path.join(out, "vgg16_crops_d2.pth")
        record_path = os.path.join(out, "result.json")
        records = DatasetCatalog.get("synthetic_voc_trainval")
        key = stage_key(
            cfg.MODEL.VGG.WIDTH,
            list(cfg.MODEL.PIXEL_MEAN),
            list(cfg.MODEL.PIXEL_STD),
            cfg.INPUT.FORMAT,
            o.pretrain_iterations,
            o.pretrain_lr,
            o.seed,
            len(records),
            records[0]["file_name"],
            file_digest(records[0]["file_name"]),
        )
        cached = cached_record(record_path, key, o.force)
        if cached is not None and os.path.isfile(weights):
            logger.info(
                "pre-training: reusing %s (held-out crop accuracy %.3f)",
                weights,
                cached["held_out_accuracy"],
            )
            return cached
        seed_all_rng(o.seed)
        result = pretrain_on_crops(
            records,
            cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            width=cfg.MODEL.VGG.WIDTH,
            pixel_mean=cfg.MODEL.PIXEL_MEAN,
            pixel_std=cfg.MODEL.PIXEL_STD,
            input_format=cfg.INPUT.FORMAT,
            iterations=o.pretrain_iterations,
            lr=o.pretrain_lr,
            seed=o.seed,
            progress=o.progress,
        )
        atomic_torch_save(
            result["state_dict"], os.path.join(out, "vgg16_crops.pth")
        )  # torchvision layout
        converted, info = vgg16_to_detectron2(result["state_dict"])
        atomic_torch_save(
            {
                "model": converted,
                "__author__": "accel-det demo (crop pre-training)",
                "matching_heuristics": False,
            },
            weights,
        )
        record = {
            "weights": weights,
            "held_out_accuracy": result["held_out_accuracy"],
            "seconds": result["seconds"],
            "iterations": result["iterations"],
            "final_loss": result["final_loss"],
            "key": key,
            **info,
        }
        atomic_write_json(record, record_path)
        return record

    # ------------------------------------------------------------------ 3. the baseline
    def write_report(self, records: List[dict]) -> dict:
        o = self.options  # report.md, the plot and results.json
        return write_demo_report(self.out, records, o, self.base_cfg, self.timings, self.data_dir)

    def train(self, pretrained: dict) -> dict:
        """The baseline Fast R-CNN, trained from the pre-trained backbone, norms folded."""
        opts = (
            list(self.options.opts)
            + self.data_opts
            + [
                "OUTPUT_DIR",
                os.path.join(self.out, "baseline" + self.suffix("train")),
                "MODEL.WEIGHTS",
                pretrained["weights"],
                "SEED",
                str(self.options.seeds()["train"]),
            ]
        )
        cfg = load_config(self.options.config, opts)
        baseline = self.train_stage(
            cfg, "baseline", {"theoretical_speedup": 1.0, "baseline": True, "pretrain": pretrained}
        )
        if cfg.MODEL.VGG.NORM:
            baseline = self.fold_baseline(baseline, cfg)
        logger.info("baseline AP50 %.1f", baseline["ap50"])
        return baseline

    def train_stage(self, cfg, name: str, extra: dict) -> dict:
        """Train (Detectron2's ``Trainer``) and evaluate one config; reuse a finished identical
        run."""
        self.configs[name] = cfg
        out = cfg.OUTPUT_DIR
        os.makedirs(out, exist_ok=True)
        weights = os.path.join(out, "model_final.pth")
        key = stage_key(
            cfg.dump(), extra.get("plan"), file_digest(cfg.MODEL.WEIGHTS), self.test_set
        )
        record_path = os.path.join(out, "result.json")
        record = cached_record(record_path, key, self.options.force)
        if record is not None and os.path.isfile(weights):
            logger.info("%s: reusing the finished run in %s (AP50 %.1f)", name, out, record["ap50"])
            return record
        cfg.freeze()
        check_inputs(cfg, train=True)
        atomic_write_text(cfg.dump(), os.path.join(out, "config.yaml"))
        seed_all_rng(cfg.SEED)
        start = time.perf_counter()
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
        results = getattr(trainer, "_last_eval_results", None) or Trainer.test(cfg, trainer.model)
        save_results(by_dataset(cfg, results), os.path.join(out, "eval_results.json"))
        record = {
            "name": name,
            **extra,
            "ap50": eval_ap50(results),
            "detections": records_path(os.path.join(out, "eval_results.json")),
            "seed": cfg.SEED,
            "eval": json_safe(results),
            "weights": weights,
            "config": os.path.join(out, "config.yaml"),
            "output_dir": out,
            "train_seconds": time.perf_counter() - start,
            "iterations": cfg.SOLVER.MAX_ITER,
            "key": key,
        }
        del trainer
        atomic_write_json(record, record_path)
        return record

    def fold_baseline(self, record: dict, cfg) -> dict:
        """Fold the baseline's batch norms into its convs (``VGG16Backbone.fold_norms``): a plain
        VGG-16 detector, the one compressed and timed; evaluated again to show nothing changed."""
        out = record["output_dir"]
        path = os.path.join(out, "result_folded.json")
        key = stage_key(record["key"], "folded")
        weights = os.path.join(out, "model_folded.pth")
        plain = cfg.clone()
        plain.defrost()
        plain.MODEL.VGG.NORM = ""
        plain.MODEL.WEIGHTS = weights
        plain.freeze()
        self.configs[record["name"]] = plain
        cached = cached_record(path, key, self.options.force)
        if cached is not None:
            return cached
        model = load_model(cfg, record["weights"])
        model.backbone.fold_norms()
        atomic_torch_save(
            {"model": model.state_dict(), "__author__": "accel-det demo (batch norms folded)"},
            weights,
        )
        config = os.path.join(out, "config_folded.yaml")
        atomic_write_text(plain.dump(), config)
        results = Trainer.test(plain, load_model(plain, weights))
        save_results(by_dataset(plain, results), os.path.join(out, "eval_results_folded.json"))
        folded = dict(
            record,
            detections=records_path(os.path.join(out, "eval_results_folded.json")),
            weights=weights,
            config=config,
            ap50=eval_ap50(results),
            ap50_with_norms=record["ap50"],
            weights_with_norms=record["weights"],
            eval=json_safe(results),
            key=key,
        )
        logger.info(
            "baseline with batch norms folded into the convs: AP50 %.2f (with norms %.2f)",
            folded["ap50"],
            record["ap50"],
        )
        atomic_write_json(folded, path)
        return folded

    # ------------------------------------------------------------------ 4. compress + fine-tune
    def stages(self) -> List[DemoStage]:
        """The accelerated models: the paper's conv-only ones, whole-detector ones (conv + fc,
        data-driven), and fc6/fc7 alone at Girshick's ranks by truncated SVD and by the solver."""
        o = self.options
        stages = [DemoStage(f"{o.method}_{s:g}x", s, o.method, "none", "conv") for s in o.speedups]
        stages += [
            DemoStage(f"detector_{s:g}x", s, o.method, "asym", "network")
            for s in o.detector_speedups
        ]
        if o.fc_rank_fractions:
            width = self.base_cfg.MODEL.ROI_BOX_HEAD.FC_DIM
            ranks = {
                n: max(1, round(f * width)) for n, f in zip(("fc6", "fc7"), o.fc_rank_fractions)
            }
            for fc_method in ("svd", "asym"):
                stages.append(DemoStage(f"fc_{fc_method}", 2.0, "asym", fc_method, "fc", ranks))
        return stages

    def accelerate(self, stage: DemoStage, baseline: dict) -> dict:
        """The baseline compressed as ``stage`` says (reused when done) with
        :func:`~accel_det.workflows.detector_compression.compress_detector`, evaluated, then
        fine-tuned."""
        o = self.options
        stage_dir = os.path.join(self.out, stage.name + self.suffix("train"))
        finetune_dir = stage_dir + self.suffix("finetune")
        compressed_dir = os.path.join(stage_dir, "compressed")
        os.makedirs(compressed_dir, exist_ok=True)
        plan_path = os.path.join(compressed_dir, "plan.json")
        weights_path = os.path.join(compressed_dir, "model_final.pth")
        if self.accel_cfg is None:
            self.accel_cfg = load_config(o.accel_config, list(o.opts) + self.data_opts)
        accel_cfg = self.accel_cfg.clone()
        accel_cfg.merge_from_list(["MODEL.ACCEL.PLAN", plan_path, "MODEL.WEIGHTS", weights_path,
                                   "OUTPUT_DIR", finetune_dir])  # fmt: skip
        cfg = self.configs[baseline["name"]]
        key = stage_key(cfg.dump(), file_digest(baseline["weights"]), stage, o.compress_images,
                        o.samples_per_image, o.fc_samples_per_image, self.rois, o.seed,
                        self.test_set)  # fmt: skip
        compressed = cached_record(os.path.join(stage_dir, "compressed.json"), key, o.force)
        if compressed is None:
            start = time.perf_counter()
            solver = SolverOptions(
                speedup=stage.speedup,
                method=stage.method,
                samples_per_image=o.samples_per_image,
                seed=o.seed,
                round_ranks_to=o.round_ranks_to,
            )
            plan = compress_detector(DetectorCompressOptions(
                config_file=baseline["config"], output=compressed_dir, solver=solver,
                opts=["MODEL.WEIGHTS", baseline["weights"], "MODEL.DEVICE", "cpu"],
                fc_method=stage.fc_method, fc_ranks=stage.fc_ranks, target=stage.target,
                num_images=o.compress_images, rois_per_image=self.rois,
                fc_samples_per_image=o.fc_samples_per_image, overwrite=True, progress=o.progress,
            ))  # fmt: skip
            seconds = time.perf_counter() - start
            before = evaluate(
                accel_cfg, weights_path, os.path.join(stage_dir, "eval_before_ft.json")
            )
            compressed = {
                "key": key,
                "ap50": before,
                "seconds": seconds,
                "plan": plan_path,
                "theoretical_speedup": plan["theoretical_speedup"],
                "theoretical_speedup_detector": plan["theoretical_speedup_detector"],
            }
            atomic_write_json(compressed, os.path.join(stage_dir, "compressed.json"))
        accel_cfg.merge_from_list(["SEED", str(o.seeds()["finetune"])])
        if o.finetune_opts:
            accel_cfg.merge_from_list(list(o.finetune_opts))
        record = self.train_stage(
            accel_cfg,
            stage.name,
            {
                "theoretical_speedup": compressed["theoretical_speedup"],
                "theoretical_speedup_detector": compressed["theoretical_speedup_detector"],
                "ap50_before_ft": compressed["ap50"],
                "plan": plan_path,
                "compress_seconds": compressed["seconds"],
                "stage": dataclasses.asdict(stage),
            },
        )
        logger.info(
            "%s: theoretical speedup %.2fx (conv), %.2fx (detector), AP50 %.1f before fine-tuning, "
            "%.1f after",
            stage.name,
            record["theoretical_speedup"],
            record["theoretical_speedup_detector"],
            record["ap50_before_ft"],
            record["ap50"],
        )
        return record

    # ------------------------------------------------------------------ 5. latency
    def measure(self, records: List[dict]) -> None:
        """Backbone and detector latency of every final model, written into its record."""
        models = {}
        for record in records:
            cfg = self.configs[record["name"]].clone()
            cfg.defrost()
            cfg.MODEL.DEVICE = "cpu"
            cfg.freeze()
            models[record["name"]] = (cfg, load_model(cfg, record["weights"]), record.get("plan"))
        item = timing_input(next(iter(models.values()))[0])
        latency = measure_detectors(models, item, self.options)
        exported = {}
        for record in records:  # deployed: ONNX, checked against PyTorch, evaluated in ONNX Runtime
            cfg, model, _ = models[record["name"]]
            exported[record["name"]] = export_detector(cfg, model, record["output_dir"])
            record["ap50_onnxruntime"] = exported_ap50(
                cfg, exported[record["name"]], record["output_dir"]
            )
        measure_int8(records, models, exported, item, self.options)
        plans = {r["name"]: r.get("plan") for r in records}
        width = self.base_cfg.MODEL.VGG.WIDTH
        deployed = deployed_latency(exported, item, plans, width, self.options)
        for record in records:
            record["latency"] = latency[record["name"]]
            for part, summary in deployed[record["name"]].items():
                record["latency"][f"{part}_onnxruntime"] = summary
            atomic_write_json(record, os.path.join(record["output_dir"], "result.json"))


def proposals_ok(path: str, images, name: str) -> bool:
    """Whether ``path`` is a proposal file made for these ``(id, file name)`` images of data set
    ``name``."""
    if not os.path.isfile(path):
        return False
    try:
        check_proposal_file(path, [i for i, _ in images], name, images)
        return True
    except AccelDetError:
        return False
