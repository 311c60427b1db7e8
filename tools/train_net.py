#!/usr/bin/env python3
"""Train and evaluate Fast R-CNN / Faster R-CNN with a plain or accelerated VGG-16 (Detectron2).

    tools/train_net.py --config accel_vgg16_voc.yaml                        # train, then evaluate
    tools/train_net.py --config accel_vgg16_voc.yaml --eval-only \\
        MODEL.WEIGHTS output/accel_vgg16_voc/model_final.pth
    tools/train_net.py --config-file configs/vgg16_voc.yaml --num-gpus 8 SOLVER.IMS_PER_BATCH 16

Detectron2's usual command line (``default_argument_parser``: ``--resume``, ``--eval-only``,
``--num-gpus``, ``KEY VALUE`` overrides). A bare config name is looked up in ``configs/``, and
``--config`` is accepted for ``--config-file``. Evaluation results go to
``OUTPUT_DIR/eval_results.json`` as well as to the log. Checkpoints are written atomically.

Everything is checked before Detectron2 writes anything (``OUTPUT_DIR/config.yaml``): the config,
the plan against it, the weights the run loads (``MODEL.WEIGHTS``, or with ``--resume`` the last
checkpoint) against the model, the data and the proposal files. An OUTPUT_DIR that holds another
run (``model_final.pth``, ``eval_results.json`` or ``last_checkpoint``) is refused, unless
``--resume`` continues it, ``--eval-only`` evaluates its own model again (MODEL.WEIGHTS in it),
or ``--overwrite`` starts over; a run that starts moves what it replaces (the earlier results,
with ``--overwrite`` the whole earlier run) to ``OUTPUT_DIR/previous_runs/<time>/``.
"""

import logging
import os
import sys

import bootstrap  # noqa: F401  (accel_det from this checkout, in its .venv)

from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm

import accel_det.detection  # noqa: F401  (registers the backbones, box head and data sets)
from accel_det.detection.checkpoint import load_detector_weights
from accel_det.detection.config import load_config, resolve_config_file
from accel_det.detection.run_folder import (
    RESULTS_FILE,
    check_run_folder,
    start_run,
)
from accel_det.detection.trainer import Trainer, by_dataset, check_inputs, save_results
from accel_det.errors import AccelDetError
from accel_det.utils.cli import (
    ignore_file_size_signal,
    one_line_parser_errors,
    printable,
)
from accel_det.utils.io import write_failure

# under Detectron2's logger, which default_setup configures (to the console and OUTPUT_DIR/log.txt)
logger = logging.getLogger("detectron2.train_net")


def setup(args):
    """The frozen config of a run (accel-det keys, config file, command-line overrides), its
    inputs and OUTPUT_DIR checked and the earlier run's files moved aside before Detectron2's
    default_setup writes config.yaml and starts logging."""
    args.config_file = resolve_config_file(args.config_file)
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    moved = ""
    if args.num_gpus * args.num_machines == 1:  # else run() did this once, before launching
        moved = prepare_run(cfg, args)
    default_setup(cfg, args)
    if moved:
        logger.info(moved)
    return cfg


def prepare_run(cfg, args, start: bool = True) -> str:
    """Check the inputs and OUTPUT_DIR of a run (:func:`check_inputs`, :func:`check_run_folder`);
    when ``start``, move aside what the run replaces (:func:`start_run`). Returns what was
    moved, in words."""
    check_inputs(cfg, train=not args.eval_only, resume=args.resume)
    action = check_run_folder(
        cfg, eval_only=args.eval_only, resume=args.resume, overwrite=args.overwrite
    )
    return start_run(cfg.OUTPUT_DIR, action, in_use=[args.config_file]) if start else ""


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        load_detector_weights(
            model, cfg.MODEL.WEIGHTS, save_dir=cfg.OUTPUT_DIR, resume=args.resume, complete=True
        )
        results = Trainer.test(cfg, model)
    else:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        # evaluates on DATASETS.TEST after the last iteration (Detectron2's EvalHook)
        trainer.train()
        results = getattr(trainer, "_last_eval_results", None)
    if comm.is_main_process() and results:
        path = os.path.join(cfg.OUTPUT_DIR, RESULTS_FILE)
        save_results(by_dataset(cfg, results), path)
        logger.info("evaluation results written to %s", path)
    return results


def build_parser():
    """Detectron2's ``default_argument_parser`` with ``--overwrite`` and ``--debug``."""
    parser = default_argument_parser()
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in an OUTPUT_DIR that holds another run (model_final.pth, "
        "eval_results.json or last_checkpoint, which are refused without it): the earlier run "
        "is moved to OUTPUT_DIR/previous_runs/<time>/ when this one starts (--resume continues "
        "it instead)",
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser


def run(main_function=main, argv=None) -> int:
    """Parse, launch (one process per GPU), and turn accel-det's errors into one line, exit 2."""
    ignore_file_size_signal()
    try:
        args = one_line_parser_errors(build_parser()).parse_args(argv)
    except AccelDetError as error:
        print(f"error: {printable(str(error))}", file=sys.stderr)
        return 2
    try:
        if args.num_gpus * args.num_machines > 1:
            # launch spawns processes: check here, so that bad input is one line, not a child's
            # traceback, and move the earlier run aside once (a single process runs main here,
            # whose setup() does both inside this try)
            args.config_file = resolve_config_file(args.config_file)
            moved = prepare_run(
                load_config(args.config_file, args.opts), args, start=args.machine_rank == 0
            )
            if moved:
                print(moved)
        launch(
            main_function,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except (AccelDetError, FileNotFoundError) as error:
        if args.debug:
            raise
        print(f"error: {printable(str(error))}", file=sys.stderr)
        return 2
    except OSError as error:  # out of room in a write Detectron2 makes itself (its logs)
        failure = write_failure(error.filename, error)
        if failure is None or args.debug:
            raise
        print(f"error: {printable(str(failure))}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run())
