#!/usr/bin/env python3
"""Evaluate an exported detector (tools/export_model.py) on the test data sets of its config.

    tools/evaluate_exported.py --config-file accel_vgg16_voc.yaml \\
        --model output/accel_vgg16_voc.onnx [--runtime onnxruntime|openvino] [KEY VALUE ...]

A model runs in the precision its record names (tools/export_model.py --precision): fp32, int8
(the quantized file, in either runtime) or bf16 (OpenVINO with its bf16 hint; the default runtime
of a bf16 model, whatever its suffix).

The same evaluation as ``tools/train_net.py --eval-only``: DATASETS.TEST with its precomputed
proposals (DATASETS.PROPOSAL_FILES_TEST), Detectron2's test-time resize (INPUT.MIN_SIZE_TEST,
INPUT.MAX_SIZE_TEST), the data set's evaluator (PascalVOCDetectionEvaluator for VOC), and
Detectron2's score threshold, per-class NMS and top-k (MODEL.ROI_HEADS.SCORE_THRESH_TEST,
NMS_THRESH_TEST, TEST.DETECTIONS_PER_IMAGE) run on the runtime's scores and boxes. The model's
record (``X.onnx.json``, written by tools/export_model.py) is checked against the config first: a
model exported for another test size, pixel format or classes is refused. Results are printed
and written to ``X.onnx.<runtime>.eval_results.json`` next to the model (one file per model and
runtime; or to --output, which replaces an existing file only with --overwrite, and never the
model, its record, the config or a proposal file), the per-image detections next to them
(``X.detections.npz``). AP50 is printed with its 95 % bootstrap interval over test images;
``--baseline B.detections.npz`` (another evaluation of the same test set, e.g. the PyTorch
model's ``eval_results.detections.npz``) adds the paired ΔAP50 against it.
"""

import argparse
import os
import sys

import bootstrap  # noqa: F401  (accel_det from this checkout, in its .venv)

from accel_det.utils.cli import NON_NEGATIVE_INT, add_common_arguments, run_tool
from accel_det.utils.files import not_found
from accel_det.utils.io import refuse_existing


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, help="the detector's config")
    parser.add_argument("--model", required=True, help="the exported detector: X.onnx or X.xml")
    parser.add_argument(
        "--runtime",
        help="onnxruntime or openvino (default: openvino for .xml and bf16, else onnxruntime)",
    )
    parser.add_argument(
        "--threads", type=NON_NEGATIVE_INT, default=1, help="runtime threads (0: all cores)"
    )
    parser.add_argument(
        "--output",
        help="results JSON to write (default: X.onnx.<runtime>.eval_results.json next to --model)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument(
        "--baseline",
        metavar="NPZ",
        help="per-image detections of another evaluation on the same test set (the "
        "X.detections.npz next to its eval_results.json): print ΔAP50 against it, paired on the "
        "same resampled test images",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    add_common_arguments(parser)
    return parser


def main(args) -> int:
    import accel_det.detection  # noqa: F401  (registers the data sets)
    from accel_det.deploy.evaluate import (
        check_export_record,
        check_results_output,
        evaluate_exported,
        results_path,
    )
    from accel_det.deploy.runtime import check_runtime, recorded_precision
    from accel_det.detection.config import load_config, resolve_config_file
    from accel_det.detection.trainer import save_results
    from accel_det.evaluation import paired_delta, read_records, results_interval
    from accel_det.evaluation.ap import records_path
    from accel_det.utils.io import check_writable_folder

    runtime = check_runtime(args.model, args.runtime)
    baseline = read_records(args.baseline) if args.baseline else None
    output = args.output or results_path(args.model, runtime)
    cfg = load_config(args.config_file, args.opts)
    check_results_output(output, args.model, cfg, resolve_config_file(args.config_file))
    if not os.path.isfile(args.model):
        raise not_found("exported model file", args.model)
    check_export_record(cfg, args.model)
    if baseline is not None:
        check_baseline_images(baseline, cfg, args.baseline)
    refuse_existing([output], args.overwrite)
    check_writable_folder(os.path.dirname(os.path.abspath(output)), create=False)
    results = evaluate_exported(cfg, args.model, runtime, args.threads, check_record=False)
    check_writable_folder(os.path.dirname(os.path.abspath(output)))
    save_results(
        {
            **results,
            "evaluated": {
                "model": os.path.abspath(args.model),
                "runtime": runtime,
                "precision": recorded_precision(args.model),
                "threads": args.threads,
                "config_file": resolve_config_file(args.config_file),
                "config_overrides": list(args.opts),
            },
        },
        output,
        replace=args.overwrite,  # else refused if another run wrote it meanwhile
    )
    for name, result in results.items():
        ap = result.get("bbox", {})
        bounds = results_interval(result)
        ap50 = str(bounds) if bounds else f"{ap.get('AP50', float('nan')):.2f}"
        print(
            f"{name}: AP {ap.get('AP', float('nan')):.2f}, AP50 {ap50} (95 % bootstrap interval "
            f"over test images), AP75 {ap.get('AP75', float('nan')):.2f} ({args.model}, {runtime}, "
            f"{recorded_precision(args.model)})"
        )
        records = getattr(result, "records", None)
        if baseline is not None and records is not None:
            delta = paired_delta(records, baseline)
            print(f"{name}: against {args.baseline}: {delta.delta_text()} (paired)")
    print(f"results written to {output} (per-image detections: {records_path(output)})")
    return 0


def check_baseline_images(baseline, cfg, path: str) -> None:
    """Refuse a --baseline evaluated on other images than this config's one test set."""
    from accel_det.detection.datasets import dataset_image_ids
    from accel_det.errors import AccelDetError

    if len(cfg.DATASETS.TEST) != 1:
        raise AccelDetError("--baseline needs a config with one test set (DATASETS.TEST)")
    ids = dataset_image_ids(cfg.DATASETS.TEST[0])
    if list(baseline.image_ids) != list(ids):
        raise AccelDetError(
            f"--baseline {path} was evaluated on {baseline.num_images} other images than "
            f"{cfg.DATASETS.TEST[0]} ({len(ids)} images): a paired comparison needs the same "
            "test set"
        )


if __name__ == "__main__":
    sys.exit(run_tool(main, build_parser()))
