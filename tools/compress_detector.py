#!/usr/bin/env python3
"""Compress a trained Detectron2 detector as a whole by the paper's data-driven solver, under one
multiply-add budget: the VGG-16 Fast R-CNN's conv layers and fc6/fc7; any other GeneralizedRCNN's
backbone (ResNet C4, ResNet-FPN: every conv of the ResNet and the FPN, batch norms folded) with,
for a Faster R-CNN, the RPN head's conv and the box head's fcs.

    tools/compress_detector.py --config-file vgg16_voc.yaml --speedup 4 --output output/frcnn_4x \\
        MODEL.WEIGHTS output/vgg16_voc/model_final.pth

compresses on images and proposals of the config's DATASETS.TRAIN and writes DIR/model_final.pth
(a Detectron2 checkpoint of the accelerated detector) and DIR/plan.json as a pair (the plan
records the weights' sha256), and DIR/plan.png; evaluate or fine-tune with the accelerated
config, each run in its own OUTPUT_DIR:

    tools/train_net.py --config accel_vgg16_voc.yaml --eval-only \\
        MODEL.WEIGHTS output/frcnn_4x/model_final.pth MODEL.ACCEL.PLAN output/frcnn_4x/plan.json \\
        OUTPUT_DIR output/frcnn_4x/eval

--speedup is the theoretical speedup of the whole detector (all multiply-adds of one image at the
test size and --rois-per-image RoIs); --speedup-of conv gives the paper's conv-layer target; a
speedup the layers' shapes cannot reach is refused before any image is read. Every solved conv
layer is checkpointed to DIR/compression.checkpoint.pth: --resume continues (or, when writing the
outputs failed, finishes) an interrupted run; a checkpoint is never thrown away without
--overwrite, and existing outputs are replaced only with --overwrite.
Under torchrun (or --num-gpus N) each process reads a shard of the images.

A ResNet(-FPN) Faster R-CNN (configs/faster_rcnn_R_50_FPN.yaml, R101: MODEL.RESNETS.DEPTH 101;
Detectron2's zoo configs) is compressed from DATASETS.TRAIN's images and the proposals its own RPN
gives them (no proposal files); --speedup is of the whole detector at the test size and
MODEL.RPN.POST_NMS_TOPK_TEST proposals (--speedup-of conv: of the backbone alone; a C4 detector's
res5 head is kept, so it takes --speedup-of conv). Evaluate with the same config and the overrides
the plan records (config_overrides, also logged):

    tools/train_net.py --config faster_rcnn_R_50_FPN.yaml --eval-only \\
        MODEL.BACKBONE.NAME build_accel_backbone \\
        MODEL.ACCEL.BACKBONE_NAME build_resnet_fpn_backbone \\
        MODEL.RPN.HEAD_NAME build_accel_rpn_head MODEL.ACCEL.RPN_HEAD_NAME StandardRPNHead \\
        MODEL.ROI_BOX_HEAD.NAME build_accel_box_head \\
        MODEL.ACCEL.BOX_HEAD_NAME FastRCNNConvFCHead \\
        MODEL.ACCEL.PLAN output/r50_2x/plan.json MODEL.WEIGHTS output/r50_2x/model_final.pth \\
        OUTPUT_DIR output/r50_2x/eval
"""

from __future__ import annotations

import argparse
import sys

import bootstrap  # noqa: F401  (accel_det from this checkout, in its .venv)

from accel_det.errors import AccelDetError
from accel_det.utils.cli import (
    FRACTION,
    IMAGE_SIDE,
    POSITIVE_INT,
    add_common_arguments,
    run_main,
    run_tool,
    setup_logging,
)
from accel_det.utils.dist import shutdown, under_launcher
from accel_det.utils.launch import launch
from accel_det.workflows.detector_compression import (
    FC_METHODS,
    DetectorCompressOptions,
    compress_detector,
)
from accel_det.workflows.options import add_solver_arguments, solver_options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config-file", required=True, help="the trained detector's config (with MODEL.WEIGHTS)"
    )
    parser.add_argument(
        "--output", required=True, help="output folder: model_final.pth, plan.json, plan.png"
    )
    add_solver_arguments(parser)
    parser.add_argument(
        "--speedup-of",
        choices=("detector", "conv"),
        help="what --speedup is of: the whole detector (default) or its conv layers (the "
        "paper's target; for a detector other than the VGG-16 Fast R-CNN, its backbone's)",
    )
    parser.add_argument(
        "--fc-method",
        choices=FC_METHODS,
        default="asym",
        help="fc6/fc7: asym (data-driven, default), svd (Girshick's truncated SVD of the "
        "weights), none (kept); nonlinear and linear as for convs",
    )
    parser.add_argument(
        "--fc-ranks",
        type=POSITIVE_INT,
        nargs=2,
        metavar=("FC6", "FC7"),
        help="fixed ranks of fc6 and fc7 instead of rank selection (e.g. 1024 256, Fast R-CNN's)",
    )
    parser.add_argument(
        "--num-images", type=POSITIVE_INT, default=500, help="training images (default: 500)"
    )
    parser.add_argument(
        "--rois-per-image",
        type=POSITIVE_INT,
        help="RoIs per image the budget counts (default: DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST)",
    )
    parser.add_argument(
        "--fc-samples-per-image",
        type=POSITIVE_INT,
        default=64,
        help="RoIs per image whose fc6/fc7 responses are sampled (default: 64)",
    )
    parser.add_argument(
        "--foreground-fraction",
        type=FRACTION,
        default=0.0,
        help="share of the sampled RoIs taken among those with IoU >= 0.5 to an object",
    )
    parser.add_argument(
        "--input-size",
        type=IMAGE_SIDE,
        nargs=2,
        metavar=("H", "W"),
        help="input size the multiply-adds are counted at (default: INPUT.MIN/MAX_SIZE_TEST)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue (or finish writing) the run of DIR/compression.checkpoint.pth",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing outputs (and start over)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--num-gpus", type=POSITIVE_INT, default=1, help="processes to start, one per GPU"
    )
    parser.add_argument("--no-plot", action="store_true", help="do not write plan.png")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--stop-after", help=argparse.SUPPRESS
    )  # test hook: interrupt after a layer
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, default=[], help="config overrides, KEY VALUE ..."
    )
    return add_common_arguments(parser)


def options_from(args) -> DetectorCompressOptions:
    return DetectorCompressOptions(
        config_file=args.config_file,
        output=args.output,
        opts=list(args.opts),
        solver=solver_options(args),
        fc_method=args.fc_method,
        fc_ranks=dict(zip(("fc6", "fc7"), args.fc_ranks)) if args.fc_ranks else None,
        target={None: None, "conv": "conv", "detector": "network"}[args.speedup_of],
        num_images=args.num_images,
        rois_per_image=args.rois_per_image,
        fc_samples_per_image=args.fc_samples_per_image,
        foreground_fraction=args.foreground_fraction,
        input_hw=tuple(args.input_size) if args.input_size else None,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        plot=not args.no_plot,
        device=args.device,
        stop_after=args.stop_after,
    )


def run_in_group(options: DetectorCompressOptions, argv) -> int:
    try:
        compress_detector(options, argv)
    finally:
        shutdown()
    return 0


def run_process(options: DetectorCompressOptions, argv, debug: bool) -> int:
    """One process of ``--num-gpus N``: logging, and errors as one line, as the tool itself."""
    setup_logging()
    return run_main(lambda _: run_in_group(options, argv), argparse.Namespace(debug=debug))


def main(args) -> int:
    if args.num_gpus < 1:
        raise AccelDetError(f"--num-gpus must be >= 1, got {args.num_gpus}")
    options = options_from(args)
    options.check()
    if args.num_gpus > 1 and not under_launcher():
        return launch(run_process, args.num_gpus, (options, sys.argv[1:], args.debug))
    return run_in_group(options, sys.argv[1:])


if __name__ == "__main__":
    sys.exit(run_tool(main, build_parser()))
