"""``OUTPUT_DIR`` as the folder of one run: whether a new run may start in a folder that holds an
earlier one, and moving the earlier run's files aside when it starts.

Detectron2 writes into ``OUTPUT_DIR`` whatever is there: ``default_setup`` replaces
``config.yaml``, a training run its checkpoints, an evaluation ``eval_results.json``. A folder
whose results then describe another model is worse than a refused command, so
``tools/train_net.py`` refuses (:func:`check_run_folder`) a folder that holds a finished run
(``model_final.pth`` or ``eval_results.json``) or an interrupted one (``last_checkpoint``),
unless the new run continues it (``--resume``), evaluates its own model again (``--eval-only``
with ``MODEL.WEIGHTS`` in the folder, or the weights its ``config.yaml`` names), or ``--overwrite``
asks to start over; and only a run that starts moves what it would replace to
``OUTPUT_DIR/previous_runs/<time>/`` (:func:`start_run`): nothing is deleted.
"""

from __future__ import annotations

import datetime
import logging
import os
import shutil
from typing import List, Optional, Sequence

from ..errors import AccelDetError
from ..utils.io import sweep_temporaries
from .checkpoint import LAST_CHECKPOINT, REMOTE_PREFIXES, weights_file

logger = logging.getLogger(__name__)

RESULTS_FILE = "eval_results.json"  # in OUTPUT_DIR: what tools/report.py reads
DETECTIONS_FILE = "eval_results.detections.npz"  # its per-image detections (VOC evaluations)
FINAL_WEIGHTS = "model_final.pth"
CONFIG_FILE = "config.yaml"  # written by Detectron2's default_setup
PREVIOUS = "previous_runs"

# what start_run does: nothing to move / the earlier results (their model stays) / everything
NEW, CONTINUE, OVERWRITE = "new", "continue", "overwrite"


def earlier_run(folder: str) -> Optional[str]:
    """What run ``folder`` holds, in words (``"a finished run (model_final.pth,
    eval_results.json)"``, ``"an interrupted run (last_checkpoint: model_0004999.pth)"``), or
    None."""
    if not os.path.isdir(folder):
        return None
    finished = [n for n in (FINAL_WEIGHTS, RESULTS_FILE) if os.path.isfile(os.path.join(folder, n))]
    if finished:
        return f"a finished run ({', '.join(finished)})"
    last = os.path.join(folder, LAST_CHECKPOINT)
    if os.path.isfile(last):
        return f"an interrupted run ({LAST_CHECKPOINT}: {_read(last) or '?'})"
    return None


def check_run_folder(cfg, *, eval_only: bool, resume: bool, overwrite: bool) -> str:
    """Whether a run of ``cfg`` may start in ``cfg.OUTPUT_DIR``: :data:`NEW` (nothing there),
    :data:`CONTINUE` (``resume``, or ``eval_only`` of the folder's own model: its earlier results
    are moved aside), :data:`OVERWRITE` (the whole earlier run is moved aside); else one
    :class:`AccelDetError` that says what is there and what to pass."""
    folder = cfg.OUTPUT_DIR
    what = earlier_run(folder)
    if what is None:
        return NEW
    if resume:
        return CONTINUE
    weights = cfg.MODEL.WEIGHTS
    if overwrite:
        if weights and _inside(weights, folder):
            raise AccelDetError(
                f"MODEL.WEIGHTS {weights} is in OUTPUT_DIR {folder}, whose earlier run --overwrite "
                "would move aside: copy the weights out of it, or give this run another OUTPUT_DIR"
            )
        return OVERWRITE
    aside = os.path.join(folder, PREVIOUS, "<time>")
    if eval_only:
        if weights and (_inside(weights, folder) or _same_file(weights, _config_weights(folder))):
            return CONTINUE  # its own model evaluated again
        raise AccelDetError(
            f"OUTPUT_DIR {folder} holds {what} of another model than MODEL.WEIGHTS "
            f"{weights or '(empty)'}: evaluating there would replace its {CONFIG_FILE} and "
            f"{RESULTS_FILE}. Give the evaluation its own OUTPUT_DIR (KEY VALUE: OUTPUT_DIR "
            f"{os.path.join(folder.rstrip(os.sep) or '.', 'eval')}), or pass --overwrite to move "
            f"the earlier run to {aside}/ first"
        )
    advice = "continue it" if what.startswith("an interrupted") else "continue its training"
    raise AccelDetError(
        f"OUTPUT_DIR {folder} holds {what}: give this run another OUTPUT_DIR, pass --resume to "
        f"{advice}, or --overwrite to start over (the earlier run is moved to {aside}/)"
    )


def start_run(folder: str, action: str, in_use: Sequence[str] = ()) -> str:
    """What the main process does when a run starts in ``folder`` (after every check): remove the
    temporaries of killed runs and move aside, to ``folder/previous_runs/<time>/``, the earlier
    results (:data:`CONTINUE`: ``eval_results.json``, its per-image detections and the
    ``config.yaml`` that describes them)
    or the whole earlier run (:data:`OVERWRITE`); files ``in_use`` (the run's own config file,
    which Detectron2 reads again) are copied instead. Returns what was moved where, in words
    ("" for nothing)."""
    if not os.path.isdir(folder):
        return ""
    sweep_temporaries(folder)
    names: List[str] = []
    if action == OVERWRITE:
        names = sorted(n for n in os.listdir(folder) if n != PREVIOUS)
    elif action == CONTINUE and os.path.isfile(os.path.join(folder, RESULTS_FILE)):
        names = [
            n
            for n in (RESULTS_FILE, DETECTIONS_FILE, CONFIG_FILE)
            if os.path.exists(os.path.join(folder, n))
        ]
    if not names:
        return ""
    target = _new_previous(folder)
    kept = {os.path.realpath(p) for p in in_use if p}
    for name in names:
        source = os.path.join(folder, name)
        if os.path.realpath(source) in kept:
            shutil.copy2(source, os.path.join(target, name))
        else:
            shutil.move(source, os.path.join(target, name))
    return f"moved the earlier run's {', '.join(names)} to {target}"


def _new_previous(folder: str) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join(folder, PREVIOUS, stamp)
    target, number = base, 1
    while os.path.exists(target):
        number += 1
        target = f"{base}-{number}"
    os.makedirs(target)
    return target


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _config_weights(folder: str) -> str:
    """``MODEL.WEIGHTS`` of the ``config.yaml`` in ``folder`` ("" when there is none)."""
    import yaml

    try:
        with open(os.path.join(folder, CONFIG_FILE), encoding="utf-8") as f:
            config = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return ""
    model = config.get("MODEL") if isinstance(config, dict) else None
    return str((model or {}).get("WEIGHTS") or "") if isinstance(model, dict) else ""


def _local(path: str) -> Optional[str]:
    """The real path of the file Detectron2 loads for the ``MODEL.WEIGHTS`` ``path``
    (:func:`weights_file`: URL query removed, no ``~`` expanded); None for a remote or odd one."""
    if not path or path.startswith(REMOTE_PREFIXES):
        return None
    try:
        return os.path.realpath(weights_file(path))
    except AccelDetError:
        return None


def _inside(path: str, folder: str) -> bool:
    """Whether ``path`` is a file of the run in ``folder`` (not of its ``previous_runs``)."""
    local, folder = _local(path), os.path.realpath(folder)
    return (
        local is not None
        and local.startswith(folder + os.sep)
        and not local.startswith(os.path.join(folder, PREVIOUS) + os.sep)
    )


def _same_file(a: str, b: str) -> bool:
    return _local(a) is not None and _local(a) == _local(b)
