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

A classifier takes ``images`` (N×3×H×W, normalised as the weights expect) and returns ``logits``
or, with --backbone, ``features`` (VGG-16's conv layers; a ResNet up to its last stage). A
detector takes ``image`` (3×H×W float32, raw 0-255 pixels in INPUT.FORMAT order, resized as
Detectron2's test-time resize does) and ``proposals`` (N×4 XYXY boxes in that image) and returns
``scores`` (N×(K+1)) and ``boxes`` (N×4K); score threshold and NMS run after it, in Python
(tools/evaluate_exported.py). The exported model is run on sample inputs (ONNX Runtime for onnx,
OpenVINO for openvino) and refused, with nothing written, when its outputs differ from PyTorch's
by more than --tolerance (relative to each output's largest value).
Next to it, ``X.onnx.json`` (``X.xml.json``) records what it was made from and expects: input
size and pixel format, normalization, classes, plan, precision (fp32), weights, config keys, and
the sha256 of the files; tools/evaluate_exported.py checks a detector's against its config.
"""

import argparse
import os
import sys

import bootstrap  # noqa: F401  (accel_det from this checkout, in its .venv)

from accel_det.models.classifier import ARCHS  # noqa: E402
from accel_det.utils.cli import (  # noqa: E402
    IMAGE_SIDE,
    NON_NEGATIVE_FLOAT,
    NON_NEGATIVE_INT,
    add_common_arguments,
    run_tool,
)


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
    add_common_arguments(parser)
    return parser


def main(args) -> int:
    from accel_det.deploy.export import OPSET, check_output, export_graph
    from accel_det.deploy.runtime import DISPLAY_NAMES
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
    check_output(args.output, args.format, args.overwrite)
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
    else:
        import accel_det.detection  # noqa: F401  (registers the backbones and the box head)
        from accel_det.deploy.detector import detector_graph
        from accel_det.detection.config import load_config, resolve_config_file

        graph = detector_graph(load_config(args.config_file, args.opts))
        graph.provenance["config_file"] = os.path.abspath(resolve_config_file(args.config_file))
        graph.provenance["config_overrides"] = list(args.opts)
    result = export_graph(
        graph,
        args.output,
        args.format,
        tolerance=args.tolerance,
        threads=args.threads,
        overwrite=args.overwrite,
    )
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
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, build_parser()))
