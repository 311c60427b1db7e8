#!/usr/bin/env python3
"""Convert VGG-16 weights to a Detectron2 checkpoint for the VGG-16 / accelerated VGG-16 backbones.

    # ImageNet VGG-16 from torchvision (downloads vgg16-397923af.pth) or a local copy of it:
    tools/convert_vgg16.py --source torchvision --output output/weights/vgg16_d2.pth
    # the accelerated VGG-16 of tools/compress_backbone.py (OUT.pth + OUT.json):
    tools/convert_vgg16.py --source output/vgg16_4x_ft/model_final.pth \
        --plan output/vgg16_4x_ft/model_final.json --output output/weights/accel_vgg16_4x_d2.pth

The checkpoint holds the backbone (``backbone.features.*``) and fc6/fc7 (from the VGG classifier);
the detector's class and box layers start fresh. torchvision weights take **RGB** images
normalised by the ImageNet mean/std, not Detectron2's BGR default: the tool prints the config
lines that go with the weights (``INPUT.FORMAT RGB``, ``MODEL.PIXEL_MEAN [123.675, 116.28,
103.53]``, ``MODEL.PIXEL_STD [58.395, 57.12, 57.375]``; configs/Base-FastRCNN-VGG16.yaml has
them) and writes them to ``OUTPUT.json``.
"""

import argparse
import os
import sys

import bootstrap  # noqa: F401  (accel_det from this checkout, in its .venv)

from accel_det.utils.cli import add_common_arguments, run_tool


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--source",
        required=True,
        help=(
            "'torchvision' (download), a torchvision-layout VGG-16 .pth, or "
            "tools/compress_backbone.py's OUT.pth"
        ),
    )
    parser.add_argument(
        "--plan", help="the plan JSON that goes with an accelerated --source (OUT.json)"
    )
    parser.add_argument("--output", required=True, help="Detectron2 checkpoint to write (.pth)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    add_common_arguments(parser)
    return parser


def main(args) -> int:
    from accel_det.detection.convert import (
        INPUT_FORMAT,
        PIXEL_MEAN,
        PIXEL_STD,
        config_lines,
        vgg16_to_detectron2,
    )
    from accel_det.errors import AccelDetError
    from accel_det.models.vgg import check_record_weights, load_vgg16_state_dict
    from accel_det.plan import Plan
    from accel_det.utils.io import atomic_save_pair, refuse_existing

    refuse_existing([args.output, args.output + ".json"], args.overwrite)
    plan = Plan.read(args.plan) if args.plan else None
    state = load_vgg16_state_dict(args.source)
    if plan is not None:
        check_record_weights(args.source, plan, args.plan)
    try:
        converted, info = vgg16_to_detectron2(state, plan)
    except AccelDetError as error:
        raise AccelDetError(
            f"{args.source} does not fit {'plan ' + args.plan if plan else 'VGG-16'}: {error}"
        ) from None
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    meta = {
        "source": args.source,
        "plan": os.path.abspath(args.plan) if args.plan else None,
        "input_format": INPUT_FORMAT,
        "pixel_mean": PIXEL_MEAN,
        "pixel_std": PIXEL_STD,
        **info,
        "config": config_lines(info, args.plan),
    }
    checkpoint = {
        "model": converted,
        "__author__": "accel-det tools/convert_vgg16.py",
        "matching_heuristics": False,
    }
    atomic_save_pair(checkpoint, args.output, meta, args.output + ".json", args.overwrite)
    print(
        f"wrote {args.output} ({len(converted)} tensors: "
        f"backbone{' + fc6/fc7' if info['box_head'] else ''})"
    )
    print("use it with these config values (torchvision weights: RGB, ImageNet mean/std):")
    print(f"  MODEL.WEIGHTS {args.output} {meta['config']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, build_parser()))
