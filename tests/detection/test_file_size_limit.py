"""Detectron2's evaluation under a file size limit (``ulimit -f``): data loader workers hand
batches over in shared memory, which such a limit forbids (the worker's ftruncate fails and the
evaluation stopped with a traceback, or waited forever); the loaders then run without workers."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("detectron2")

from tests.detection.test_pickles import CONFIG, hostile  # noqa: F401
from tests.helpers import REPO

EVALUATE = """
import sys
import accel_det.detection
from detectron2.modeling import build_model
from accel_det.detection.checkpoint import load_detector_weights
from accel_det.detection.config import load_config
from accel_det.detection.trainer import Trainer
cfg = load_config(sys.argv[1], sys.argv[3:])
model = build_model(cfg)
load_detector_weights(model, sys.argv[2])
print("AP50", Trainer.test(cfg, model.eval())["bbox"]["AP50"])
"""


def test_evaluation_under_a_file_size_limit_runs_without_workers(hostile):  # noqa: F811
    """tools/evaluate_exported.py and tools/train_net.py --eval-only evaluate with Trainer.test;
    here under ``ulimit -f 1`` with DATALOADER.NUM_WORKERS 2."""
    opts = [*hostile["opts"], "DATALOADER.NUM_WORKERS", "2", "MODEL.WEIGHTS", ""]
    command = [sys.executable, "-c", EVALUATE, CONFIG, str(hostile["weights"]), *opts]
    env = dict(
        os.environ, PYTHONPATH=str(REPO), DETECTRON2_DATASETS=str(hostile["datasets"]),
        OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
    )  # fmt: skip
    result = subprocess.run(
        ["bash", "-c", 'ulimit -f 1; exec "$@"', "-", *command],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0 and "AP50 " in result.stdout, result.stderr[-2000:]
    assert "loading data without worker processes (DATALOADER.NUM_WORKERS 2 ignored)" in (
        result.stderr
    )
