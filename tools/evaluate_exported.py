#!/usr/bin/env python3
"""Evaluate an exported detector (tools/export_model.py) on the test data sets of its config.

    tools/evaluate_exported.py --config-file accel_vgg16_voc.yaml \\
        --model output/accel_vgg16_voc.onnx [--runtime onnxruntime|openvino] [KEY VALUE ...]

The same evaluation as ``tools/train_net.py --eval-only``: DATASETS.TEST with its precomputed
proposals (DATASETS.PROPOSAL_FILES_TEST), Detectron2's test-time resize (INPUT.MIN_SIZE_TEST,
INPUT.MAX_SIZE_TEST), the data set's evaluator (PascalVOCDetectionEvaluator for VOC), and
Detectron2's score threshold, per-class NMS and top-k (MODEL.ROI_HEADS.SCORE_THRESH_TEST,
NMS_THRESH_TEST, TEST.DETECTIONS_PER_IMAGE) run on the runtime's scores and boxes. Results are
printed and written to eval_results.json next to --model (or to --output).
"""

import argparse
import os
import sys

import bootstrap  # noqa: F401  (accel_det from this checkout, in its .venv)

from accel_det.utils.cli import NON_NEGATIVE_INT, add_common_arguments, run_tool  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, help="the detector's config")
    parser.add_argument("--model", required=True, help="the exported detector: X.onnx or X.xml")
    parser.add_argument(
        "--runtime", help="onnxruntime or openvino (default: openvino for .xml, else onnxruntime)"
    )
    parser.add_argument(
        "--threads", type=NON_NEGATIVE_INT, default=1, help="runtime threads (0: all cores)"
    )
    parser.add_argument(
        "--output", help="results JSON to write (default: eval_results.json next to --model)"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    add_common_arguments(parser)
    return parser


def main(args) -> int:
    import accel_det.detection  # noqa: F401  (registers the data sets)
    from accel_det.deploy.evaluate import evaluate_exported
    from accel_det.detection.config import load_config
    from accel_det.detection.trainer import RESULTS_FILE, save_results
    from accel_det.utils.io import check_writable_folder

    output = args.output or os.path.join(os.path.dirname(os.path.abspath(args.model)), RESULTS_FILE)
    check_writable_folder(os.path.dirname(os.path.abspath(output)), create=False)
    cfg = load_config(args.config_file, args.opts)
    results = evaluate_exported(cfg, args.model, args.runtime, args.threads)
    check_writable_folder(os.path.dirname(os.path.abspath(output)))
    save_results(results, output)
    for name, result in results.items():
        ap = result.get("bbox", {})
        print(
            f"{name}: AP {ap.get('AP', float('nan')):.2f}, AP50 {ap.get('AP50', float('nan')):.2f}"
            f", AP75 {ap.get('AP75', float('nan')):.2f} ({args.model})"
        )
    print(f"results written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, build_parser()))
