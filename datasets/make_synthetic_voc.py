#!/usr/bin/env python3
"""Write the synthetic VOC-format data set (not PASCAL VOC: shapes on clutter; see
datasets/README.md).

    python datasets/make_synthetic_voc.py datasets/synthetic_voc --num-trainval 400 --num-test 200

It registers as ``synthetic_voc_{trainval,train,val,test}`` when it sits at
``$DETECTRON2_DATASETS/synthetic_voc``.
"""

import argparse
import json
import os
import sys

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")
)
import bootstrap  # noqa: F401  (accel_det from this checkout, in its .venv)

from accel_det.data.synthetic import DEFAULT_CLASSES, SHAPES, make_synthetic_voc
from accel_det.utils.cli import add_common_arguments, run_tool


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            "Write a synthetic data set in PASCAL VOC format (not PASCAL VOC: shapes on clutter)."
        ),
    )
    parser.add_argument("root", help="output folder, e.g. datasets/synthetic_voc")
    parser.add_argument("--num-trainval", type=int, default=400)
    parser.add_argument("--num-test", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=160, help="image height in pixels")
    parser.add_argument(
        "--classes",
        default=",".join(DEFAULT_CLASSES),
        help=f"comma-separated, among {','.join(SHAPES)}",
    )
    parser.add_argument("--max-objects", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    return add_common_arguments(parser)


def main(args) -> int:
    stamp = make_synthetic_voc(
        args.root,
        num_trainval=args.num_trainval,
        num_test=args.num_test,
        image_size=args.image_size,
        classes=[c for c in args.classes.split(",") if c],
        max_objects=args.max_objects,
        seed=args.seed,
        workers=args.workers,
    )
    print(json.dumps({k: stamp[k] for k in ("objects", "difficult")}))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, build_parser()))
