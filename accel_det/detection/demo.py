"""The main job (``make demo``): AP50 against speedup for Fast R-CNN with an accelerated VGG-16.

1. a synthetic VOC-format data set (not PASCAL VOC) at ``$DETECTRON2_DATASETS/synthetic_voc``;
2. selective-search proposals for it (Detectron2 proposal files);
3. a stand-in for ImageNet pre-training: the narrow VGG-16's conv layers trained as a classifier
   of object and background crops of the training images (``pretrain.py``), converted like
   ImageNet weights (``vgg16_to_detectron2``);
   then a baseline Fast R-CNN from those weights (``configs/demo/vgg16_synthetic.yaml``);
4. for each speedup: the baseline's backbone compressed with the paper's solver (asym. 3d, rank
   selection) on training images preprocessed exactly as the detector's input, evaluated, then
   fine-tuned briefly (``configs/demo/accel_vgg16_synthetic.yaml``) and evaluated again;
5. latency of backbone and whole detector (single thread by default, interleaved, median);
6. ``report.md``, ``mAP_vs_speedup.png`` and ``results.json`` in the output folder.

The same code path as ``tools/train_net.py`` (configs, registered backbones, ``Trainer``,
``PascalVOCDetectionEvaluator``); the demo only differs through config keys. Finished stages are
reused when run again with the same settings (``force`` redoes everything).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
import time
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from detectron2.data import DatasetCatalog, DatasetMapper, get_detection_dataset_dicts
from detectron2.modeling import build_model
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from .. import report as report_lib
from ..benchmark.latency import machine, measure_many
from ..errors import AccelDetError
from ..models.vgg import vgg16_features
from ..solver import apply_plan, compress
from ..utils.io import atomic_torch_save, atomic_write_json, atomic_write_text
from .checkpoint import load_detector_weights
from .config import load_config
from .convert import vgg16_to_detectron2
from .datasets import datasets_root, register_synthetic_voc
from .pretrain import pretrain_on_crops
from .proposals import check_proposal_file, make_proposals, proposal_stats
from .synthetic import DEFAULT_CLASSES, make_synthetic_voc
from .trainer import Trainer, _plain, by_dataset, check_inputs, save_results

logger = logging.getLogger("accel_det.demo")


@dataclasses.dataclass
class DemoOptions:
    """Settings of the demo; the model and training recipe live in the two config files."""

    output: str = "output/demo"
    config: str = "demo/vgg16_synthetic.yaml"
    accel_config: str = "demo/accel_vgg16_synthetic.yaml"
    speedups: Sequence[float] = (2.0, 3.0, 4.0)
    method: str = "asym3d"
    data_root: Optional[str] = None  # default $DETECTRON2_DATASETS/synthetic_voc
    num_trainval: int = 800
    num_test: int = 200
    classes: Sequence[str] = DEFAULT_CLASSES  # synthetic shapes; MODEL.ROI_HEADS.NUM_CLASSES follows
    max_objects: int = 3  # per image
    min_object: float = 0.3  # object size as a fraction of the image height
    max_object: float = 0.65
    proposal_min_size: int = 8  # pixels; the images are small
    pretrain_iterations: int = 1000  # crop-classifier iterations (batches of 32 crops, 64×64)
    pretrain_lr: float = 0.05
    compress_images: int = 128  # training images the solver samples responses from
    samples_per_image: int = 20
    threads: int = 1  # torch threads for training and evaluation
    latency_threads: int = 1  # the paper's CPU timings are single-thread
    latency_warmup: int = 5
    latency_repeats: int = 30
    full_width_repeats: int = 5  # also time the plans' structures on a full-width VGG-16 (0: skip)
    workers: int = 2  # processes for data generation and selective search
    seed: int = 0
    opts: Sequence[str] = ()  # config overrides for every stage
    finetune_opts: Sequence[str] = ()  # config overrides for the fine-tuning stages
    force: bool = False
    progress: bool = True


def run_demo(options: DemoOptions) -> dict:
    """Run every stage; returns the summary also written to ``<output>/results.json``."""
    start = time.perf_counter()
    out = os.path.abspath(options.output)
    os.makedirs(out, exist_ok=True)
    setup_logger(out, name="detectron2", abbrev_name="d2")
    setup_logger(out, name="accel_det")
    torch.set_num_threads(options.threads)
    timings: Dict[str, float] = {}

    class_opts = ["MODEL.ROI_HEADS.NUM_CLASSES", str(len(options.classes))]
    options = dataclasses.replace(options, opts=class_opts + list(options.opts))
    base_cfg = load_config(options.config, list(options.opts))
    image_size = int(base_cfg.INPUT.MIN_SIZE_TEST)
    data_dir = os.path.abspath(options.data_root or os.path.join(datasets_root(), "synthetic_voc"))

    # 1-2. data and proposals
    t = time.perf_counter()
    make_synthetic_voc(data_dir, num_trainval=options.num_trainval, num_test=options.num_test,
                       image_size=image_size, classes=options.classes, max_objects=options.max_objects,
                       min_object=options.min_object, max_object=options.max_object, seed=options.seed,
                       workers=options.workers, progress=options.progress)
    register_synthetic_voc(data_dir, replace=True)
    timings["data"] = time.perf_counter() - t
    t = time.perf_counter()
    proposal_files = {}
    for split in ("trainval", "test"):
        path = os.path.join(data_dir, "proposals", f"selective_search_{split}.pkl")
        name = f"synthetic_voc_{split}"
        images = [(str(d["image_id"]), d["file_name"]) for d in DatasetCatalog.get(name)]
        if options.force or not _proposals_ok(path, [i for i, _ in images], name):
            logger.info("selective search over %s (%d images)", name, len(images))
            make_proposals(images, path, min_size=options.proposal_min_size, workers=options.workers,
                           progress=options.progress)
        proposal_files[split] = path
    timings["proposals"] = time.perf_counter() - t
    data_opts = [
        "DATASETS.TRAIN", "('synthetic_voc_trainval',)", "DATASETS.TEST", "('synthetic_voc_test',)",
        "DATASETS.PROPOSAL_FILES_TRAIN", f"('{proposal_files['trainval']}',)",
        "DATASETS.PROPOSAL_FILES_TEST", f"('{proposal_files['test']}',)",
        "SEED", str(options.seed),
    ]

    # 3. pre-training on crops, then the baseline detector
    t = time.perf_counter()
    pretrained = pretrain_stage(base_cfg, os.path.join(out, "pretrain"), options)
    timings["pretrain"] = time.perf_counter() - t
    t = time.perf_counter()
    baseline_dir = os.path.join(out, "baseline")
    cfg = load_config(options.config, list(options.opts) + data_opts + ["OUTPUT_DIR", baseline_dir,
                                                                        "MODEL.WEIGHTS", pretrained["weights"]])
    baseline = _train_stage(cfg, "baseline", options, extra={"theoretical_speedup": 1.0, "baseline": True,
                                                              "pretrain": pretrained})
    if cfg.MODEL.VGG.NORM:
        baseline = fold_baseline(baseline, options)
        cfg = load_config(baseline["config"])
    timings["baseline"] = time.perf_counter() - t
    logger.info("baseline AP50 %.1f", baseline["ap50"])

    # 4. compress + fine-tune at each speedup
    records = [baseline]
    batches = None
    for speedup in options.speedups:
        t = time.perf_counter()
        stage = f"{options.method}_{speedup:g}x"
        stage_dir = os.path.join(out, stage)
        os.makedirs(stage_dir, exist_ok=True)
        plan_path = os.path.join(stage_dir, "plan.json")
        weights_path = os.path.join(stage_dir, "compressed.pth")
        accel_opts = list(options.opts) + data_opts + ["MODEL.ACCEL.PLAN", plan_path, "MODEL.WEIGHTS", weights_path,
                                                       "OUTPUT_DIR", stage_dir]
        compress_key = _key(cfg.dump(), _file_digest(baseline["weights"]), speedup, options.method, options.compress_images,
                            options.samples_per_image, options.seed)
        compressed = _cached(os.path.join(stage_dir, "compressed.json"), compress_key, options.force)
        if compressed is None:
            if batches is None:
                batches = detector_batches(cfg, baseline["weights"], "synthetic_voc_trainval",
                                           options.compress_images, options.seed)
            compressed = compress_detector(cfg, baseline["weights"], batches, speedup, options, plan_path,
                                           weights_path, load_config(options.accel_config, accel_opts))
            compressed["key"] = compress_key
            atomic_write_json(compressed, os.path.join(stage_dir, "compressed.json"))
        ft_cfg = load_config(options.accel_config, accel_opts + list(options.finetune_opts))
        record = _train_stage(ft_cfg, stage, options, extra={
            "theoretical_speedup": compressed["theoretical_speedup"], "ap50_before_ft": compressed["ap50"],
            "plan": plan_path, "compress_seconds": compressed["seconds"],
        })
        records.append(record)
        timings[stage] = time.perf_counter() - t
        logger.info("%s: theoretical speedup %.2fx, AP50 %.1f before fine-tuning, %.1f after",
                    stage, record["theoretical_speedup"], record["ap50_before_ft"], record["ap50"])

    # 5. latency
    t = time.perf_counter()
    latency = measure_detectors(records, options)
    for record in records:
        record["latency"] = latency[record["name"]]
        atomic_write_json(record, os.path.join(record["output_dir"], "result.json"))
    timings["latency"] = time.perf_counter() - t

    # 6. report
    timings["total"] = time.perf_counter() - start
    summary = write_demo_report(out, records, options, base_cfg, timings, data_dir)
    return summary


def _proposals_ok(path: str, ids: Sequence[str], name: str) -> bool:
    if not os.path.isfile(path):
        return False
    try:
        check_proposal_file(path, ids, name)
        return True
    except AccelDetError:
        return False


def _key(*parts) -> str:
    return hashlib.sha1(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def _cached(path: str, key: str, force: bool) -> Optional[dict]:
    if force or not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if record.get("key") == key else None


def _train_stage(cfg, name: str, options: DemoOptions, extra: dict) -> dict:
    """Train (Detectron2's ``Trainer``) and evaluate one config; reuse a finished identical run."""
    out = cfg.OUTPUT_DIR
    os.makedirs(out, exist_ok=True)
    weights = os.path.join(out, "model_final.pth")
    key = _key(cfg.dump(), extra.get("plan"), _file_digest(cfg.MODEL.WEIGHTS))
    record_path = os.path.join(out, "result.json")
    record = _cached(record_path, key, options.force)
    if record is not None and os.path.isfile(weights):
        logger.info("%s: reusing the finished run in %s (AP50 %.1f)", name, out, record["ap50"])
        return record
    cfg.freeze()
    check_inputs(cfg, train=True)
    atomic_write_text(cfg.dump(), os.path.join(out, "config.yaml"))
    seed_all_rng(options.seed)
    start = time.perf_counter()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    results = getattr(trainer, "_last_eval_results", None) or Trainer.test(cfg, trainer.model)
    save_results(by_dataset(cfg, results), os.path.join(out, "eval_results.json"))
    record = {
        "name": name,
        **extra,
        "ap50": report_lib.eval_ap50(results),
        "eval": _plain(results),
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


def _file_digest(path: str) -> str:
    if not path or not os.path.isfile(path):
        return path or ""
    stat = os.stat(path)
    return f"{path}:{stat.st_size}:{int(stat.st_mtime)}"


def pretrain_stage(cfg, out: str, options: DemoOptions) -> dict:
    """Train the crop classifier (:func:`pretrain_on_crops`) on ``synthetic_voc_trainval`` and write
    its conv weights as a Detectron2 checkpoint (backbone only), the way ImageNet weights are."""
    os.makedirs(out, exist_ok=True)
    weights = os.path.join(out, "vgg16_crops_d2.pth")
    record_path = os.path.join(out, "result.json")
    records = DatasetCatalog.get("synthetic_voc_trainval")
    key = _key(cfg.MODEL.VGG.WIDTH, list(cfg.MODEL.PIXEL_MEAN), list(cfg.MODEL.PIXEL_STD), cfg.INPUT.FORMAT,
               options.pretrain_iterations, options.pretrain_lr, options.seed, len(records), records[0]["file_name"],
               _file_digest(records[0]["file_name"]))
    cached = _cached(record_path, key, options.force)
    if cached is not None and os.path.isfile(weights):
        logger.info("pre-training: reusing %s (held-out crop accuracy %.3f)", weights, cached["held_out_accuracy"])
        return cached
    seed_all_rng(options.seed)
    result = pretrain_on_crops(
        records, cfg.MODEL.ROI_HEADS.NUM_CLASSES, width=cfg.MODEL.VGG.WIDTH, pixel_mean=cfg.MODEL.PIXEL_MEAN,
        pixel_std=cfg.MODEL.PIXEL_STD, input_format=cfg.INPUT.FORMAT, iterations=options.pretrain_iterations,
        lr=options.pretrain_lr, seed=options.seed, progress=options.progress,
    )
    atomic_torch_save(result["state_dict"], os.path.join(out, "vgg16_crops.pth"))  # torchvision layout
    converted, info = vgg16_to_detectron2(result["state_dict"])
    atomic_torch_save({"model": converted, "__author__": "accel-det demo (crop pre-training)",
                       "matching_heuristics": False}, weights)
    record = {"weights": weights, "held_out_accuracy": result["held_out_accuracy"], "seconds": result["seconds"],
              "iterations": result["iterations"], "final_loss": result["final_loss"], "key": key, **info}
    atomic_write_json(record, record_path)
    return record


def fold_baseline(record: dict, options: DemoOptions) -> dict:
    """Fold the baseline's batch norms into its convs (``VGG16Backbone.fold_norms``): a plain
    VGG-16 detector, the one compressed and timed; evaluated again to show nothing changed."""
    out = record["output_dir"]
    path = os.path.join(out, "result_folded.json")
    key = _key(record["key"], "folded")
    cached = _cached(path, key, options.force)
    if cached is not None:
        return cached
    cfg = load_config(record["config"])
    cfg.MODEL.WEIGHTS = record["weights"]
    cfg.freeze()
    model = load_model(cfg, record["weights"])
    model.backbone.fold_norms()
    weights = os.path.join(out, "model_folded.pth")
    atomic_torch_save({"model": model.state_dict(), "__author__": "accel-det demo (batch norms folded)"}, weights)
    plain = cfg.clone()
    plain.defrost()
    plain.MODEL.VGG.NORM = ""
    plain.MODEL.WEIGHTS = weights
    plain.freeze()
    config = os.path.join(out, "config_folded.yaml")
    atomic_write_text(plain.dump(), config)
    results = Trainer.test(plain, load_model(plain, weights))
    save_results(by_dataset(plain, results), os.path.join(out, "eval_results_folded.json"))
    folded = dict(record, weights=weights, config=config, ap50=report_lib.eval_ap50(results),
                  ap50_with_norms=record["ap50"], weights_with_norms=record["weights"], eval=_plain(results), key=key)
    logger.info("baseline with batch norms folded into the convs: AP50 %.2f (with norms %.2f)",
                folded["ap50"], record["ap50"])
    atomic_write_json(folded, path)
    return folded


def load_model(cfg, weights: str) -> torch.nn.Module:
    """``build_model(cfg)`` in eval mode with ``weights`` checked and loaded."""
    model = build_model(cfg)
    load_detector_weights(model, weights)
    return model.eval()


def detector_batches(cfg, weights: str, dataset: str, num_images: int, seed: int, batch_size: int = 16) -> List[torch.Tensor]:
    """``num_images`` training images (drawn with ``seed``) exactly as the detector's backbone sees
    them at test time (Detectron2's test-time resize, ``INPUT.FORMAT``, ``(x - MODEL.PIXEL_MEAN) /
    MODEL.PIXEL_STD``), centre-cropped to a square of the short side so that they stack into
    N×3×S×S batches of ``batch_size`` (the solver samples responses at random positions)."""
    model = load_model(cfg, weights)
    dicts = DatasetCatalog.get(dataset)
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(dicts), size=min(num_images, len(dicts)), replace=False))
    mapper = DatasetMapper(cfg, is_train=False)
    images = []
    with torch.no_grad():
        for index in chosen:
            record = copy.deepcopy(dicts[index])
            record.pop("annotations", None)
            x = model.preprocess_image([mapper(record)]).tensor.cpu()
            side = min(x.shape[-2:])
            top, left = (x.shape[-2] - side) // 2, (x.shape[-1] - side) // 2
            images.append(x[..., top:top + side, left:left + side])
    side = min(x.shape[-1] for x in images)
    images = [x[..., :side, :side] for x in images]
    return [torch.cat(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]


def compress_detector(cfg, weights: str, batches, speedup: float, options: DemoOptions, plan_path: str,
                      weights_path: str, accel_cfg) -> dict:
    """Compress the backbone of the detector ``weights`` with the solver, save the plan and the
    accelerated detector (heads unchanged), and evaluate it before fine-tuning."""
    model = load_model(cfg, weights)
    start = time.perf_counter()
    result = compress(model.backbone.features, batches, speedup=speedup, method=options.method,
                      samples_per_image=options.samples_per_image, seed=options.seed, progress=options.progress,
                      input_hw=tuple(batches[0].shape[-2:]))  # MACs counted at the solver's input size
    seconds = time.perf_counter() - start
    plan = dict(result.plan)
    plan["source"] = {"detector": os.path.abspath(weights),
                      "images": f"{sum(len(b) for b in batches)} training images of synthetic_voc_trainval, preprocessed as "
                                "the detector's input (test-time resize, INPUT.FORMAT, PIXEL_MEAN/STD), centre-cropped square"}
    atomic_write_json(plan, plan_path)

    state = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    state.update({f"backbone.features.{k}": v for k, v in result.model.state_dict().items()})
    atomic_torch_save({"model": state, "__author__": "accel-det demo (compressed, not fine-tuned)"}, weights_path)

    accel_cfg = accel_cfg.clone()
    accel_cfg.MODEL.WEIGHTS = weights_path
    accel_cfg.freeze()
    accelerated = load_model(accel_cfg, weights_path)
    results = Trainer.test(accel_cfg, accelerated)
    save_results(by_dataset(accel_cfg, results), os.path.join(os.path.dirname(plan_path), "eval_before_ft.json"))
    ap50 = report_lib.eval_ap50(results)
    logger.info("%gx: compressed in %.0fs, AP50 before fine-tuning %.1f", speedup, seconds, ap50)
    return {"theoretical_speedup": plan["theoretical_speedup"], "ap50": ap50, "seconds": seconds,
            "plan": plan_path, "weights": weights_path}


def measure_detectors(records: Sequence[dict], options: DemoOptions) -> Dict[str, dict]:
    """Latency of each final model's backbone and whole detector (precomputed proposals given, so
    selective search is not included) on the first test image, interleaved across models."""
    models = {}
    for record in records:
        cfg = load_config(record["config"])
        cfg.MODEL.DEVICE = "cpu"
        cfg.freeze()
        models[record["name"]] = (cfg, load_model(cfg, record["weights"]))
    cfg0 = next(iter(models.values()))[0]
    dicts = get_detection_dataset_dicts(list(cfg0.DATASETS.TEST), filter_empty=False,
                                        proposal_files=list(cfg0.DATASETS.PROPOSAL_FILES_TEST))
    inputs = [DatasetMapper(cfg0, is_train=False)(copy.deepcopy(dicts[0]))]
    image = next(iter(models.values()))[1].preprocess_image(inputs).tensor
    settings = dict(warmup=options.latency_warmup, repeats=options.latency_repeats, threads=options.latency_threads)
    backbone = measure_many({n: (lambda m=m: m.backbone(image)) for n, (_, m) in models.items()}, **settings)
    detector = measure_many({n: (lambda m=m: m(inputs)) for n, (_, m) in models.items()}, **settings)
    result = {
        n: {"backbone": backbone[n], "detector": detector[n], "threads": options.latency_threads,
            "input_hw": list(image.shape[-2:]), "proposals": len(inputs[0]["proposals"]), "machine": machine()}
        for n in models
    }
    if options.full_width_repeats:
        width = cfg0.MODEL.VGG.WIDTH
        full = {}
        for record in records:
            plan = None
            if record.get("plan"):
                with open(record["plan"], encoding="utf-8") as f:
                    plan = scale_plan(json.load(f), 1.0 / width)
            features = vgg16_features(1.0)[:-1]
            model = (apply_plan(features, plan) if plan else features).eval()
            # every model in channels_last, oneDNN's fast layout for both (tools/benchmark_speed.py)
            full[record["name"]] = model.to(memory_format=torch.channels_last)
        x = torch.randn(1, 3, *FULL_WIDTH_INPUT)
        timed = measure_many({n: (lambda f=f: f(x)) for n, f in full.items()}, warmup=1,
                             repeats=options.full_width_repeats, threads=options.latency_threads)
        for n in models:
            result[n]["backbone_full_width"] = dict(timed[n], input_hw=list(FULL_WIDTH_INPUT),
                                                    note=f"VGG-16 at width 1 with the plan's ranks scaled by {1 / width:g}")
    return result


FULL_WIDTH_INPUT = (224, 224)  # the paper's single view


def scale_plan(plan: Mapping, factor: float) -> dict:
    """The plan's structures for a VGG-16 ``factor`` times wider: channels and ranks d', d''
    scaled (rounded, at least 1). Used to time the same structures where convs are compute-bound."""
    scaled_plan = copy.deepcopy(dict(plan))
    for entry in scaled_plan["layers"].values():
        for key in ("in_channels", "out_channels", "rank", "spatial_rank"):
            if entry.get(key) and not (key == "in_channels" and entry[key] == 3):
                entry[key] = max(1, int(round(entry[key] * factor)))
    return scaled_plan


def write_demo_report(out: str, records: Sequence[dict], options: DemoOptions, cfg, timings: Dict[str, float],
                      data_dir: str) -> dict:
    """report.md, mAP_vs_speedup.png and results.json in ``out``; returns the summary."""
    rows = report_lib.report_rows(records)
    png = os.path.join(out, "mAP_vs_speedup.png")
    report_lib.plot_map_vs_speedup(rows, png, title="Fast R-CNN, narrow VGG-16, SYNTHETIC data: AP50 vs speedup")
    lat = records[0]["latency"]
    pre = records[0].get("pretrain") or {"iterations": 0, "held_out_accuracy": float("nan")}
    with open(os.path.join(data_dir, "synthetic_voc.json"), encoding="utf-8") as f:
        stamp = json.load(f)
    mean_boxes = proposal_stats(os.path.join(data_dir, "proposals", "selective_search_test.pkl"))["mean_boxes"]
    notes = [
        "**The data is synthetic** (shapes on cluttered backgrounds, made by `accel_det.detection.synthetic`), "
        "**not PASCAL VOC**: these numbers show the pipeline working end to end, not the paper's VOC results "
        "(Table 9: 66.9 mAP baseline; 66.9 / 66.1 / 65.2 at 3× / 4× / 5×).",
        f"Data: {stamp['num_trainval']} trainval / {stamp['num_test']} test images, {len(stamp['classes'])} classes "
        f"({', '.join(stamp['classes'])}), height {stamp['image_size']} px, at most {stamp['max_objects']} objects per image; "
        f"selective-search proposals (OpenCV, fast mode; {mean_boxes:.0f} boxes per test image on average).",
        f"Detector: Fast R-CNN (Detectron2, `{options.config}`), VGG-16 at width {cfg.MODEL.VGG.WIDTH:g} "
        f"(conv1_1 {max(1, round(64 * cfg.MODEL.VGG.WIDTH))} … conv5_3 {max(1, round(512 * cfg.MODEL.VGG.WIDTH))} filters), "
        f"fc6/fc7 {cfg.MODEL.ROI_BOX_HEAD.FC_DIM}, conv1_x/conv2_x frozen (FREEZE_AT {cfg.MODEL.BACKBONE.FREEZE_AT}), "
        f"trained for {records[0]['iterations']} iterations of {cfg.SOLVER.IMS_PER_BATCH} images.",
        f"Pre-training (the demo's stand-in for ImageNet, which is not available here): the convs trained as a "
        f"classifier of object and background crops of the training images ({pre['iterations']} iterations of 32 "
        f"crops, batch norms folded afterwards; held-out crop accuracy {pre['held_out_accuracy']:.1%}), converted "
        f"like ImageNet weights (`vgg16_to_detectron2`).",
        f"Compression: {options.method}, rank selection, conv1_1 kept, on {options.compress_images} training images × "
        f"{options.samples_per_image} sampled responses, preprocessed as the detector's input; then fine-tuned for "
        f"{records[1]['iterations'] if len(records) > 1 else 0} iterations (`{options.accel_config}`).",
        "AP50: `PascalVOCDetectionEvaluator`, VOC07 11-point metric, difficult boxes ignored.",
        f"Latency: `torch.inference_mode`, {lat['threads']} thread(s), {options.latency_warmup} warm-up + "
        f"{options.latency_repeats} timed runs per model, interleaved across models, median; "
        f"input {lat['input_hw'][0]}×{lat['input_hw'][1]}, {lat['proposals']} proposals (selective search itself not timed); "
        f"{lat['machine']['processor']}, {lat['machine']['cpu_count']} CPUs, torch {lat['machine']['torch']}.",
        "Theoretical speedup: multiply-adds of all conv layers (the paper's definition); actual speedup: "
        "baseline median time / model median time.",
        f"Full-width column: the same structures on a VGG-16 of width 1 (every channel count and rank d', d'' "
        f"scaled by {1 / cfg.MODEL.VGG.WIDTH:g}; random weights, timing only), one {FULL_WIDTH_INPUT[0]}×{FULL_WIDTH_INPUT[1]} "
        f"view in channels_last, same thread count, {options.full_width_repeats} timed runs each. At the demo's width the convs have "
        f"8-64 channels and are bound by memory traffic and per-layer overhead, not by multiply-adds, so "
        f"splitting each into three thinner convs gains little there; the paper's actual speedups are for the "
        f"full width.",
    ]
    sections = []
    try:
        from ..plots import plan_table

        for r in records[1:]:
            with open(r["plan"], encoding="utf-8") as f:
                sections.append(f"### Plan of {r['name']}\n\n```\n{plan_table(json.load(f))}\n```")
    except Exception as error:  # the per-layer tables are a bonus; the report stands without them
        logger.warning("no per-layer plan tables: %s", error)
    sections.insert(0, "![AP50 vs speedup](mAP_vs_speedup.png)")
    work = [f"- pre-training on crops: {pre.get('seconds', 0):.0f} s",
            f"- baseline training and evaluation: {records[0].get('train_seconds', 0):.0f} s"]
    work += [f"- {r['name']}: compression {r.get('compress_seconds', 0):.0f} s, fine-tuning and evaluation "
             f"{r.get('train_seconds', 0):.0f} s" for r in records[1:]]
    sections.append(
        "### Time\n\nThis run, wall clock per stage (a stage finished by an earlier run with the same settings is "
        "reused and counts only its check):\n\n" + "\n".join(f"- {k}: {v:.0f} s" for k, v in timings.items())
        + "\n\nCompute time of each stage when it ran:\n\n" + "\n".join(work)
    )
    sections.append(
        "### Reproduce a stage\n\n```\n"
        f"tools/train_net.py --config {records[0]['config']}\n"
        + "\n".join(f"tools/train_net.py --config {r['config']} --eval-only MODEL.WEIGHTS {r['weights']}" for r in records[1:])
        + "\n```"
    )
    report_path = os.path.join(out, "report.md")
    report_lib.write_report(report_path, rows, title="accel-det demo: Fast R-CNN AP50 vs speedup (synthetic data)",
                            notes=notes, sections=sections)
    summary = {"rows": rows, "records": list(records), "timings": timings, "report": report_path, "plot": png,
               "synthetic_data": True, "options": {k: (list(v) if isinstance(v, tuple) else v)
                                                   for k, v in dataclasses.asdict(options).items()}}
    atomic_write_json(summary, os.path.join(out, "results.json"))
    return summary
