#!/usr/bin/env python3
"""Precomputed proposals for Fast R-CNN, as Detectron2's proposal file (DATASETS.PROPOSAL_FILES_*).

Selective search (OpenCV contrib, fast mode, in parallel, resumable) over a registered data set:

    tools/make_proposals.py --dataset accel_voc_2007_trainval \
        --output datasets/proposals/selective_search_voc_2007_trainval.pkl --workers 16

or the classic Fast R-CNN selective-search ``.mat`` file (data/selective_search_data/*.mat):

    tools/make_proposals.py --from-mat voc_2007_test.mat --dataset accel_voc_2007_test \
        --output datasets/proposals/selective_search_voc_2007_test.pkl

With ``--dataset`` the result is checked to cover every image of the data set, and it records
the data set's name and, per image id, the file's name and size, so that ``tools/train_net.py``
refuses it for another data set whose ids happen to match. ``OUTPUT.json`` records the settings,
the images and the file's sha256: a finished OUTPUT made with the same settings for the same
images is kept (nothing is computed again); one made otherwise is replaced only with
--overwrite.
"""

import argparse
import json
import os
import sys

import bootstrap  # noqa: F401  (accel_det from this checkout, in its .venv)

from accel_det.utils.cli import NON_NEGATIVE_INT, POSITIVE_INT, add_common_arguments, run_tool


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dataset",
        help="registered data set name, e.g. accel_voc_2007_trainval, synthetic_voc_test",
    )
    parser.add_argument("--output", required=True, help="proposal file to write (.pkl)")
    parser.add_argument(
        "--from-mat",
        metavar="MAT",
        help="convert a Fast R-CNN selective-search .mat instead of searching",
    )
    parser.add_argument(
        "--mode",
        default="fast",
        choices=("fast", "quality", "single"),
        help="selective search strategy",
    )
    parser.add_argument(
        "--min-size",
        type=NON_NEGATIVE_INT,
        default=16,
        help="drop boxes with a side under this many pixels",
    )
    parser.add_argument(
        "--max-boxes",
        type=POSITIVE_INT,
        default=2000,
        help="keep at most this many boxes per image",
    )
    parser.add_argument(
        "--workers", type=POSITIVE_INT, default=os.cpu_count() or 1, help="parallel processes"
    )
    parser.add_argument(
        "--no-resume", action="store_true", help="start over instead of continuing a stopped run"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a finished OUTPUT made with other settings or images",
    )
    add_common_arguments(parser)
    return parser


def main(args) -> int:
    import accel_det.detection  # noqa: F401  (registers the data sets)
    from accel_det.workflows.proposals import ProposalOptions, run

    options = ProposalOptions(
        output=args.output,
        dataset=args.dataset,
        from_mat=args.from_mat,
        mode=args.mode,
        min_size=args.min_size,
        max_boxes=args.max_boxes,
        workers=args.workers,
        resume=not args.no_resume,
        overwrite=args.overwrite,
    )
    print(json.dumps(run(options)))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, build_parser()))
