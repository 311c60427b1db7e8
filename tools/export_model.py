#!/usr/bin/env python3
"""Export a classifier (VGG-16 or a torchvision ResNet, plain or accelerated) or a Detectron2 Fast
R-CNN detector to ONNX or OpenVINO.

    # the classifier, or only its conv layers (--backbone), of tools/compress_backbone.py's output
    tools/export_model.py --format onnx --weights output/vgg16_4x.pth --plan output/vgg16_4x.json \\
        --output output/vgg16_4x.onnx
    tools/export_model.py --format openvino --weights output/vgg16_4x.pth --backbone --dynamic \\
        --input-size 600 1000 --output output/vgg16_4x_features.xml
    tools/export_model.py --format onnx --weights output/resnet50_2x.pth --output resnet50_2x.onnx
    # a detector: its config and KEY VALUE overrides, as for tools/train_net.py
    tools/export_model.py --format onnx --output output/accel_vgg16_voc.onnx \\
        --config-file accel_vgg16_voc.yaml MODEL.WEIGHTS output/accel_vgg16_voc/model_final.pth
    # int8, calibrated on 32 images of a folder (a detector: of its DATASETS.TRAIN, with proposals)
    tools/export_model.py --precision int8 --calibration 32 --images /data/imagenet/train \\
        --weights output/vgg16_4x.pth --output output/vgg16_4x_int8.onnx
    # bf16: the float32 file, run by OpenVINO in bfloat16 (the record says bf16)
    tools/export_model.py --precision bf16 --format openvino --output output/accel_voc_bf16.xml \\
        --config-file accel_vgg16_voc.yaml MODEL.WEIGHTS output/accel_vgg16_voc/model_final.pth

A classifier takes ``images`` (N×3×H×W, normalised as the weights expect) and returns ``logits``
or, with --backbone, ``features`` (VGG-16's conv layers; a ResNet up to its last stage). A
detector takes ``image`` (3×H×W float32, raw 0-255 pixels in INPUT.FORMAT order, resized as
Detectron2's test-time resize does) and ``proposals`` (N×4 XYXY boxes in that image) and returns
``scores`` (N×(K+1)) and ``boxes`` (N×4K); score threshold and NMS run after it, in Python
(tools/evaluate_exported.py). The exported model is run on sample inputs (ONNX Runtime for onnx,
OpenVINO for openvino) and refused, with nothing written, when its outputs differ from PyTorch's
by more than --tolerance (relative to each output's largest value).

--precision int8: post-training static quantization (ONNX Runtime's quantize_static, QDQ ONNX,
int8 weights per output channel, uint8 activations; its QDQ file runs in ONNX Runtime and in
OpenVINO, the fastest CPU form measured; no other dependency) of the checked float32 graph,
calibrated on --calibration real inputs drawn with --seed: for a classifier from --images (the
draw of tools/compress_backbone.py), for a detector from DATASETS.TRAIN with their precomputed
proposals. --precision bf16: the file stays float32 and its record says bf16, so that
tools/evaluate_exported.py and accel_det.deploy.load_runtime run it in OpenVINO with
INFERENCE_PRECISION_HINT bf16 (not OpenVINO's compress_to_fp16, which stores float16 weights). An
int8 or bf16 model cannot equal PyTorch to 1e-3: it is run on the sample inputs (none of them a
calibration input) and refused, with nothing written, when it disagrees with the float32 model
beyond the bounds (a detector: --min-top-class, --max-score-difference, --max-box-difference; a
classifier or backbone: --max-relative-error, --min-top1).
Next to it, ``X.onnx.json`` (``X.xml.json``) records what it was made from and expects: input
size and pixel format, normalization, classes, plan, precision (with the quantizer's settings, the
calibration images' sha256 and the agreement with float32), weights, config keys, and the sha256
of the files; tools/evaluate_exported.py checks a detector's against its config.
"""

import argparse
import os
import sys

import bootstrap  # noqa: F401  (accel_det from this checkout, in its .venv)

from accel_det.deploy.agreement import Bounds
from accel_det.models.classifier import ARCHS
from accel_det.utils.cli import (
    FRACTION,
    IMAGE_SIDE,
    NON_NEGATIVE_FLOAT,
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    SEED,
    add_common_arguments,
    run_tool,
)

CALIBRATION_IMAGES = 32


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--format", default="onnx", help="onnx (default) or openvino")
    parser.add_argument(
        "--output", required=True, help="file to write: X.onnx, or X.xml for OpenVINO (and X.bin)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    vgg = parser.add_argument_group("a classifier (VGG-16 or ResNet)")
    vgg.add_argument(
        "--weights", help="torchvision-layout VGG-16 or ResNet weights (plain or accelerated)"
    )
    vgg.add_argument(
        "--arch", choices=ARCHS, help="the network of --weights (default: read off the weights)"
    )
    vgg.add_argument("--plan", help="the plan JSON of accelerated --weights (default: next to it)")
    vgg.add_argument("--backbone", action="store_true", help="export only the conv layers")
    vgg.add_argument(
        "--input-size",
        nargs=2,
        type=IMAGE_SIDE,
        metavar=("H", "W"),
        help="input height and width (224 224)",
    )
    vgg.add_argument(
        "--dynamic",
        action="store_true",
        help="dynamic batch (and, with --backbone, height and width)",
    )
    detector = parser.add_argument_group("a Detectron2 detector")
    detector.add_argument("--config-file", help="its config (a bare name is found in configs/)")
    detector.add_argument(
        "opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides (MODEL.WEIGHTS ...)"
    )
    parser.add_argument(
        "--tolerance",
        type=NON_NEGATIVE_FLOAT,
        default=1e-3,
        help="largest relative difference to PyTorch accepted (default 1e-3)",
    )
    parser.add_argument(
        "--threads", type=NON_NEGATIVE_INT, default=1, help="runtime threads for the check"
    )
    reduced = parser.add_argument_group("reduced precision (int8, bf16)")
    reduced.add_argument(
        "--precision", default="fp32", help="fp32 (default), bf16 (run by OpenVINO) or int8"
    )
    reduced.add_argument(
        "--calibration",
        type=POSITIVE_INT,
        metavar="N",
        help=f"int8: calibration images drawn with --seed (default {CALIBRATION_IMAGES})",
    )
    reduced.add_argument("--images", help="int8 classifier: the folder to draw them from")
    reduced.add_argument(
        "--image-list", metavar="FILE", help="draw only from the images FILE lists (as compress)"
    )
    reduced.add_argument("--seed", type=SEED, default=0, help="the draw's seed (default 0)")
    bounds = Bounds()
    for option, kind, value, text in (
        ("--min-top-class", FRACTION, bounds.min_top_class, "share of RoIs, same top class"),
        ("--max-score-difference", NON_NEGATIVE_FLOAT, bounds.max_score_difference,
         "mean absolute class-probability difference"),
        ("--max-box-difference", NON_NEGATIVE_FLOAT, bounds.max_box_difference,
         "mean box difference, pixels"),
        ("--max-relative-error", NON_NEGATIVE_FLOAT, bounds.max_relative_error,
         "classifier/backbone: |out - fp32| / |fp32|"),
        ("--min-top1", FRACTION, bounds.min_top1, "classifier: share of images, same top-1"),
    ):  # fmt: skip
        reduced.add_argument(
            option,
            type=kind,
            default=value,
            help=f"agreement with fp32: {text} (default {value:g})",
        )
    add_common_arguments(parser)
    return parser


def main(args) -> int:
    from accel_det.deploy.export import check_output, export_graph
    from accel_det.errors import AccelDetError

    if bool(args.weights) == bool(args.config_file):
        raise AccelDetError("give either --weights (a classifier) or --config-file (a detector)")
    if args.config_file and (
        args.plan or args.backbone or args.dynamic or args.input_size or args.arch
    ):
        raise AccelDetError(
            "--plan, --arch, --backbone, --input-size and --dynamic are classifier options; a "
            "detector's plan is MODEL.ACCEL.PLAN, and its image size and number of proposals are "
            "dynamic"
        )
    if args.weights and args.opts:
        raise AccelDetError(f"KEY VALUE overrides go with --config-file, got {args.opts[0]!r}")
    check_precision_options(args)
    check_output(args.output, args.format, args.overwrite)
    graph, cfg = build_graph(args)
    calibration, drawn = calibration_inputs(args, cfg) if args.precision == "int8" else (None, None)
    result = export_graph(
        graph,
        args.output,
        args.format,
        tolerance=args.tolerance,
        threads=args.threads,
        overwrite=args.overwrite,
        precision=args.precision,
        calibration=calibration,
        calibration_record=drawn,
        bounds=Bounds(
            min_top_class=args.min_top_class,
            max_score_difference=args.max_score_difference,
            max_box_difference=args.max_box_difference,
            max_relative_error=args.max_relative_error,
            min_top1=args.min_top1,
        ),
    )
    print_result(args, graph, result)
    return 0


def build_graph(args):
    """The export graph of the classifier (--weights) or detector (--config-file), and the
    detector's config (None for a classifier)."""
    if args.weights:
        from accel_det.deploy.classifier import classifier_graph

        graph = classifier_graph(
            args.weights,
            args.plan,
            arch=args.arch,
            backbone=args.backbone,
            input_size=args.input_size or (224, 224),
            dynamic=args.dynamic,
        )
        return graph, None
    import accel_det.detection  # noqa: F401  (registers the backbones and the box head)
    from accel_det.deploy.detector import detector_graph
    from accel_det.detection.config import load_config, resolve_config_file

    cfg = load_config(args.config_file, args.opts)
    if args.precision == "int8":
        from accel_det.workflows.calibration import check_detector_source

        check_detector_source(cfg)
    graph = detector_graph(cfg)
    graph.provenance["config_file"] = os.path.abspath(resolve_config_file(args.config_file))
    graph.provenance["config_overrides"] = list(args.opts)
    return graph, cfg


def print_result(args, graph, result) -> None:
    """What was written, the check against PyTorch and, for int8 / bf16, the agreement."""
    from accel_det.deploy.agreement import summary
    from accel_det.deploy.export import OPSET
    from accel_det.deploy.runtime import DISPLAY_NAMES

    inputs = ", ".join(
        f"{name} {list(tensor.shape)}" for name, tensor in zip(graph.input_names, graph.samples[0])
    )
    form = (
        f"ONNX opset {OPSET}" if args.format == "onnx" else f"OpenVINO IR (from ONNX opset {OPSET})"
    )
    print(
        f"wrote {' and '.join(result.files)}: {graph.description}, {form}, inputs {inputs}, "
        f"outputs {', '.join(graph.output_names)}, {result.seconds:.1f} s"
    )
    print(
        f"largest relative difference to PyTorch in {DISPLAY_NAMES[result.runtime]}: "
        f"{result.max_difference:.2g} on {len(result.differences)} sample input(s) "
        f"(tolerance {args.tolerance:g})"
    )
    if args.precision != "fp32":
        print(
            f"{args.precision} against float32 in {DISPLAY_NAMES[result.agreement_runtime]} on "
            f"the sample inputs: {summary(result.agreement)}"
        )


def check_precision_options(args) -> None:
    """One line for a precision or calibration option that cannot work, before any work."""
    from accel_det.deploy.precision import check_precision
    from accel_det.errors import AccelDetError

    check_precision(args.precision)
    calibrating = args.images or args.image_list or args.calibration
    if args.precision != "int8":
        if calibrating:
            raise AccelDetError(
                "--calibration, --images and --image-list calibrate an int8 export: add "
                "--precision int8"
            )
        return
    if args.config_file and (args.images or args.image_list):
        raise AccelDetError(
            "an int8 detector is calibrated on its config's DATASETS.TRAIN (with their "
            "proposals), not on --images"
        )
    if args.weights and not args.images:
        raise AccelDetError(
            "--precision int8 needs calibration images: --images FOLDER (and --calibration N, "
            f"default {CALIBRATION_IMAGES})"
        )
    if args.images and not os.path.isdir(args.images):
        from accel_det.utils.files import not_found

        raise not_found("calibration image folder (--images)", args.images)


def calibration_inputs(args, cfg):
    """The int8 calibration inputs and their record (accel_det.workflows.calibration)."""
    from accel_det.workflows import calibration

    count = args.calibration or CALIBRATION_IMAGES
    if cfg is not None:
        return calibration.detector_calibration(cfg, count, seed=args.seed)
    return calibration.classifier_calibration(
        args.images,
        count,
        args.input_size or (224, 224),
        seed=args.seed,
        image_list=args.image_list,
        progress=False,
    )


if __name__ == "__main__":
    sys.exit(run_tool(main, build_parser()))
