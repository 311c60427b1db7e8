"""What ``tools/compress_detector.py`` writes: ``DIR/model_final.pth`` (a Detectron2 checkpoint of
the whole accelerated detector) and ``DIR/plan.json`` (the plan and how it was made) as a pair,
``DIR/plan.png``, and the solver's checkpoint while it runs; refused before any work when they
cannot be written or would replace another run's."""

from __future__ import annotations

import datetime
import logging
import os
import platform
import time

import torch

from ... import __version__
from ...errors import AccelDetError
from ...plan import Plan
from ...solver.planning import check_plan_pays
from ...utils.io import atomic_save_pair, check_writable_folder, refuse_existing, sha256_file
from ..plots import plan_table, plot_plan

logger = logging.getLogger(__name__)


def output_paths(output: str) -> dict:
    folder = os.path.abspath(os.path.expanduser(output))
    return {
        "folder": folder,
        "weights": os.path.join(folder, "model_final.pth"),
        "plan": os.path.join(folder, "plan.json"),
        "plot": os.path.join(folder, "plan.png"),
        "checkpoint": os.path.join(folder, "compression.checkpoint.pth"),
    }


def check_outputs(paths: dict, options) -> bool:
    """Refuse before any work, as ``tools/compress_backbone.py`` does: an unwritable folder,
    existing outputs (without --overwrite, or --resume with a checkpoint to finish), a checkpoint
    that would be thrown away (without --resume or --overwrite). Returns whether the outputs may
    replace existing files when they are written."""
    check_writable_folder(paths["folder"], create=False)
    finals = [paths[k] for k in ("weights", "plan", "plot") if k != "plot" or options.plot]
    checkpoint = os.path.exists(paths["checkpoint"])
    if checkpoint and not options.resume and not options.overwrite:
        written = [path for path in finals if os.path.exists(path)]
        raise AccelDetError(
            (f"output {written[0]} already exists, but " if written else "")
            + f"{paths['checkpoint']} holds an interrupted run: pass --resume to "
            f"{'finish' if written else 'continue'} it or --overwrite to start over"
        )
    replace = options.overwrite or options.resume and checkpoint
    refuse_existing(finals, replace)
    if options.resume and not checkpoint:
        logger.warning(
            "--resume: no checkpoint %s yet, starting from the first layer", paths["checkpoint"]
        )
    return replace


def write_outputs(model, record: Plan, paths: dict, plot: bool, replace: bool = True) -> None:
    """The checkpoint of the whole accelerated detector and the plan record as a pair (the record
    last, with the weights' sha256; without ``replace``, refused if either exists by then), then
    the plot; the solver's checkpoint is removed only when all are written (else the error says
    that ``--resume`` writes them). A plan with a factorized layer that does not pay is refused
    first (:func:`~accel_det.solver.planning.check_plan_pays`)."""
    check_plan_pays(record, paths["plan"])
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    checkpoint = {"model": state, "__author__": "accel-det compress_detector"}
    try:
        record = Plan(
            atomic_save_pair(checkpoint, paths["weights"], record, paths["plan"], replace)
        )
        if plot:
            plot_plan(record, paths["plot"])
    except AccelDetError as error:
        if not os.path.exists(paths["checkpoint"]):
            raise
        raise AccelDetError(
            f"{error}; the solved layers stay in {paths['checkpoint']}: make room and rerun the "
            "same command with --resume to finish"
        ) from None
    if os.path.exists(paths["checkpoint"]):
        os.remove(paths["checkpoint"])
    print(plan_table(record), flush=True)
    if record.get("theoretical_speedup_network"):
        logger.info(
            "wrote %s and %s: theoretical speedup %.2fx (conv layers), %.2fx (whole detector at "
            "%d RoIs)",
            paths["weights"], paths["plan"], record["theoretical_speedup"],
            record["theoretical_speedup_network"], record["rois_per_image"],
        )  # fmt: skip
    else:
        logger.info(
            "wrote %s and %s: theoretical speedup %.2fx (the backbone's conv layers); evaluate "
            "with %s",
            paths["weights"], paths["plan"], record["theoretical_speedup"],
            " ".join(record.get("config_overrides") or ()),
        )  # fmt: skip


def run_record(options, argv, cfg, started: float) -> dict:
    """The part of ``DIR/plan.json`` every compression of a detector records: its options and
    command, the config, the source weights (with their sha256), the outputs, when, how long,
    the versions."""
    paths = output_paths(options.output)
    return dict(
        options=options.record(),
        command=list(argv) if argv is not None else None,
        config_file=os.path.abspath(options.config_file)
        if os.path.isfile(options.config_file)
        else options.config_file,
        source_weights={
            "path": os.path.abspath(cfg.MODEL.WEIGHTS),
            "sha256": sha256_file(cfg.MODEL.WEIGHTS),
        },
        outputs={
            "weights": paths["weights"],
            "plot": paths["plot"] if options.plot else None,
        },
        created=datetime.datetime.now().isoformat(timespec="seconds"),
        total_seconds=round(time.perf_counter() - started, 2),
        versions={
            "accel_det": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    )
