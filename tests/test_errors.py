"""The bad-input matrix: every tool, given a bad input, exits with a non-zero code and one line
``error: ...`` on stderr (no traceback unless --debug), and an earlier output in the output
location is still there, byte for byte. Besides the error line stderr holds only log records
(e.g. the warnings that name each unreadable image before "too few readable images").

The accel-det tools without Detectron2 run in this process through ``run_tool`` (what their
command line calls; log records go to pytest's log capture, not to stderr); the Detectron2 tools
run as real processes, with ``DETECTRON2_DATASETS`` pointing at a tiny synthetic VOC set.
Write failures are injected: a file that runs out of room after a few bytes (``fail_write``:
the file's name and ENOSPC or EFBIG, see tests/write_fault.py) or a real file size limit
(``fsize_kb``: the process runs under ``ulimit -f``).
``python tests/test_errors.py`` writes the errors table of docs/errors.md from the cases below;
``test_errors_doc_is_current`` checks that the table there is current.
"""

import errno
import fnmatch
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import pytest
import torch

# ``python tests/test_errors.py`` (docs/errors.md's table) runs it as a script: the checkout first
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accel_det.errors import AccelDetError
from tests.detection.test_accel_backbone import TINY_R50_FPN
from tests.helpers import REPO, TINY_DETECTOR
from tests.workflows.test_imagenet_tools import COMPRESS, SMALL, THREADS, run_in_process, work  # noqa: F401
from tests.write_fault import failing_writes

# Lines of the environment, not of the tools: torch warns on import when nvcc exists but no GPU.
# So does torch.fx when Detectron2's model first runs.
ENVIRONMENT_NOISE = re.compile(
    r"^[WI]\d{4} .*(cpp_extension\.py:\d+\] No CUDA runtime is found"
    r"|_symbolic_trace\.py:\d+\] is_fx_tracing will return true)"
)
# accel_det.utils.cli's log format ([12:00:00 accel_det.x] WARNING ...)
LOG_RECORD = re.compile(r"^\[\d\d:\d\d:\d\d [\w.]+\] (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
# the rows of a table a log record holds (Detectron2's class histogram of a data set)
LOG_TABLE_ROW = re.compile(r"^\|.*\|$")


@dataclass
class Case:
    id: str
    situation: str  # for the table of docs/errors.md
    tool: str
    argv: Callable[[dict], Sequence]  # paths -> arguments
    message: str  # a fragment of the one error line (paths left out)
    earlier: Callable[[dict], Sequence[Path]] = (
        lambda p: []
    )  # outputs of an earlier run that must survive
    process: bool = (
        False  # a real process (Detectron2 tools: their data sets are registered on import)
    )
    env: Callable[[dict], dict] = lambda p: {}
    xfail: Optional[str] = None
    code: int = 2
    # files (fnmatch patterns) that may come or go in an earlier output's folder
    allowed_new: Sequence[str] = ()
    # files that must not exist afterwards (what a pickle that runs code would have made)
    absent: Callable[[dict], Sequence[Path]] = lambda p: []
    fail_write: Optional[Tuple[str, int]] = None  # writes to this file name fail with this errno
    fsize_kb: Optional[int] = None  # a real process under ulimit -f (file size limit, KiB)


def compress(p, output="prev", *extra, overwrite=True):
    return [
        "--weights",
        p["weights"],
        "--images",
        p["images"],
        "--output",
        p["out"] / output,
        *COMPRESS,
        *(["--overwrite"] if overwrite else []),
        *extra,
    ]


def d2(p, config="demo/vgg16_synthetic", *opts, eval_only=True):
    return [
        "--config-file",
        config,
        *(["--eval-only"] if eval_only else []),
        "MODEL.DEVICE",
        "cpu",
        "OUTPUT_DIR",
        p["d2out"],
        "DATALOADER.NUM_WORKERS",
        "0",
        "MODEL.WEIGHTS",
        "",
        "DATASETS.PROPOSAL_FILES_TRAIN",
        f"('{p['proposals_trainval']}',)",
        "DATASETS.PROPOSAL_FILES_TEST",
        f"('{p['proposals_test']}',)",
        *opts,
    ]


# tools/train_net.py checks its inputs before Detectron2's default_setup writes config.yaml, log.txt
D2_SETUP = ()
# what a Detectron2 run that started writes, and the earlier run's results it removes
D2_RUN = ("config.yaml", "log.txt", "metrics.json", "events.out.tfevents.*", "eval_results.json")
# a tiny detector: 1 training iteration takes seconds
D2_TINY = (
    *TINY_DETECTOR,
    "SOLVER.MAX_ITER",
    "1",
    "SOLVER.WARMUP_ITERS",
    "1",
    "SOLVER.STEPS",
    "()",
)
# the VOC evaluator divides by zero for a class without test boxes (2 test images) and warns
D2_QUIET = {"PYTHONWARNINGS": "ignore::RuntimeWarning"}
# OUT.checkpoint.* of a compression whose outputs could not be written: kept for --resume
KEPT_CHECKPOINT = ("full.checkpoint.pth", "full.checkpoint.json")
# where tools/train_net.py moves what a run replaces (OUTPUT_DIR/previous_runs/<time>/)
PREVIOUS_RUNS = "previous_runs"


# the allow-list unpickler's refusal of os.system (posix.system on Linux)
UNPICKLE_REFUSED = f": it names the global {os.system.__module__}.system, which is not plain data"


def export(p, *args, overwrite=True):
    output = ["--output", p["out"] / "exported.onnx"] + (["--overwrite"] if overwrite else [])
    if "--config-file" in args:  # KEY VALUE overrides come last
        return [*output, *args, "MODEL.DEVICE", "cpu"]
    return [*output, "--input-size", "32", "32", *args]


def exported(p):
    return [p["out"] / "exported.onnx"]


def evaluate(p, model):
    return [
        "--config-file",
        "demo/vgg16_synthetic",
        "--model",
        model,
        "--output",
        p["d2out"] / "eval_results.json",
        "--overwrite",
        "MODEL.DEVICE",
        "cpu",
        "DATALOADER.NUM_WORKERS",
        "0",
        "DATASETS.PROPOSAL_FILES_TEST",
        f"('{p['proposals_test']}',)",
    ]


def prev(p):
    return [p["out"] / "prev.pth", p["out"] / "prev.json"]


def stopped(p):
    return [p["out"] / "stopped.checkpoint.pth", p["out"] / "stopped.checkpoint.json"]


def d2_prev(p):
    return [p["d2out"] / "model_final.pth", p["d2out"] / "eval_results.json"]


def full(p):
    return [p["out"] / "full.pth", p["out"] / "full.json"]


CASES = [
    # ----------------------------------------------------------------- tools/compress_backbone.py
    Case(
        "weights-missing",
        "weights file missing",
        "compress_backbone",
        lambda p: compress(p, "prev", "--weights", p["root"] / "nope.pth"),
        "VGG-16 weights file not found: ",
        prev,
    ),
    Case(
        "weights-corrupt",
        "weights file corrupt (not a torch file)",
        "compress_backbone",
        lambda p: compress(p, "prev", "--weights", p["garbage"]),
        "cannot read VGG-16 weights file ",
        prev,
    ),
    Case(
        "weights-pickle-code",
        "weights file that would run code when unpickled",
        "compress_backbone",
        lambda p: compress(p, "prev", "--weights", p["evil"]),
        "cannot read VGG-16 weights file ",
        prev,
    ),
    Case(
        "wrong-architecture",
        "weights of another architecture (a ResNet)",
        "compress_backbone",
        lambda p: compress(p, "prev", "--weights", p["resnet"]),
        "does not fit the model at layer conv1_1: key "
        "features.0.weight is missing (expected shape (64, 3, 3, 3))",
        prev,
    ),
    Case(
        "nan-weights",
        "weights holding NaN",
        "compress_backbone",
        lambda p: compress(p, "prev", "--weights", p["nan"]),
        ": features.5.weight holds NaN or Inf values",
        prev,
    ),
    Case(
        "already-accelerated",
        "weights already accelerated",
        "compress_backbone",
        lambda p: compress(p, "prev", "--weights", f"{p['reference']}.pth"),
        "is already an accelerated VGG-16",
        prev,
    ),
    Case(
        "impossible-speedup",
        "impossible speedup",
        "compress_backbone",
        lambda p: compress(p, "prev", "--speedup", "500"),
        "speedup 500 is impossible for method asym3d: at most ",
        prev,
    ),
    Case(
        "images-empty",
        "empty image folder",
        "compress_backbone",
        lambda p: compress(p, "prev", "--images", p["empty"]),
        "no images (JPEG/PNG/...) found in ",
        prev,
    ),
    Case(
        "images-short",
        "fewer images than --num-images",
        "compress_backbone",
        lambda p: compress(p, "prev", "--num-images", "50"),
        ", fewer than the 50 asked for (--num-images)",
        prev,
    ),
    Case(
        "images-unreadable",
        "too few readable images",
        "compress_backbone",
        lambda p: compress(p, "prev", "--images", p["unreadable"]),
        "are readable (18 unreadable), fewer than the 20 asked for",
        prev,
    ),
    Case(
        "image-list-missing-images",
        "--image-list naming images the folder does not have",
        "compress_backbone",
        lambda p: compress(p, "prev", "--image-list", p["image_list"]),
        "1 of the 2 images listed in ",
        prev,
    ),
    Case(
        "too-few-samples",
        "fewer sampled responses than filters",
        "compress_backbone",
        lambda p: compress(p, "prev", "--num-images", "10"),
        "10 images x 5 samples give 50 responses of conv4_1, fewer than its 64 filters",
        prev,
    ),
    Case(
        "outputs-exist",
        "outputs exist (no --overwrite)",
        "compress_backbone",
        lambda p: compress(p, "prev", overwrite=False),
        "already exists; pass --overwrite to replace it",
        prev,
    ),
    Case(
        "checkpoint-other-options",
        "--resume with a checkpoint of other options (another seed)",
        "compress_backbone",
        lambda p: compress(p, "stopped", "--resume", "--seed", "1", overwrite=False),
        "was made with seed=0 (this run: 1); start over with --overwrite instead of --resume",
        stopped,
    ),
    Case(
        "checkpoint-other-images",
        "--resume with a checkpoint of other images (same file names, other bytes)",
        "compress_backbone",
        lambda p: compress(p, "stopped", "--resume", "--images", p["same_names"], overwrite=False),
        "was made from other images (sha256 of the names, sizes and bytes of the files used)",
        stopped,
    ),
    Case(
        "checkpoint-other-weights",
        "--resume with a checkpoint of other weights (same architecture)",
        "compress_backbone",
        lambda p: compress(
            p, "stopped", "--resume", "--weights", p["other_weights"], overwrite=False
        ),
        "was made from other weights (sha256 of the file)",
        stopped,
    ),
    Case(
        "output-unwritable",
        "output folder not writable",
        "compress_backbone",
        lambda p: compress(p, "x", "--output", p["unwritable"] / "new" / "o"),
        "is not writable",
    ),
    Case(
        "outputs-with-checkpoint",
        "outputs exist beside the checkpoint of a run stopped while writing them",
        "compress_backbone",
        lambda p: compress(p, "unfinished", overwrite=False),
        "holds an interrupted run: pass --resume to finish it",
        lambda p: [p["out"] / f"unfinished{e}" for e in (".pth", ".checkpoint.pth")],
    ),
    Case(
        "disk-full-weights",
        "disk full while writing OUT.pth",
        "compress_backbone",
        lambda p: compress(p, "full"),
        "full.pth: no space left on device; the solved layers stay in ",
        full,
        allowed_new=KEPT_CHECKPOINT,
        fail_write=("full.pth", errno.ENOSPC),
    ),
    Case(
        "disk-full-record",
        "disk full while writing OUT.json (OUT.pth done)",
        "compress_backbone",
        lambda p: compress(p, "full"),
        "full.json: no space left on device",
        full,
        allowed_new=KEPT_CHECKPOINT,
        fail_write=("full.json", errno.ENOSPC),
    ),
    Case(
        "file-size-limit",
        "file size limit (ulimit -f) while writing OUT.pth",
        "compress_backbone",
        lambda p: compress(p, "full"),
        "full.pth: file too large",
        full,
        allowed_new=KEPT_CHECKPOINT,
        fsize_kb=1000,  # the checkpoint (280 KB), OUT.json and OUT.png fit, OUT.pth (7.8 MB) not
        process=True,
    ),
    # ----------------------------------------------------------------- tools/eval_imagenet.py
    Case(
        "plan-mismatch",
        "plan that does not fit the weights",
        "eval_imagenet",
        lambda p: [
            "--weights",
            p["weights"],
            "--plan",
            f"{p['reference']}.json",
            "--val",
            p["images"],
            "--output",
            p["out"] / "eval.json",
            "--overwrite",
            *SMALL,
        ],
        "at layer conv1_2",
        lambda p: [p["out"] / "eval.json"],
    ),
    Case(
        "val-no-layout",
        "flat image folder without a label file",
        "eval_imagenet",
        lambda p: [
            "--weights",
            p["weights"],
            "--val",
            p["flat"],
            "--output",
            p["out"] / "eval.json",
            "--overwrite",
            *SMALL,
        ],
        "has no class folders: pass a label file (--labels FILE)",
        lambda p: [p["out"] / "eval.json"],
    ),
    Case(
        "plan-corrupt",
        "plan file corrupt",
        "eval_imagenet",
        lambda p: [
            "--weights",
            p["weights"],
            "--plan",
            p["garbage"],
            "--val",
            p["images"],
            "--output",
            p["out"] / "eval.json",
            "--overwrite",
            *SMALL,
        ],
        "cannot read plan file ",
        lambda p: [p["out"] / "eval.json"],
    ),
    # ----------------------------------------------------------------- tools/finetune_imagenet.py
    Case(
        "finetune-outputs-exist",
        "fine-tuning outputs exist (no --overwrite)",
        "finetune_imagenet",
        lambda p: ["--weights", p["weights"], "--train", p["images"], "--output", p["ft"], *SMALL],
        "model_final.pth already exists; pass --overwrite",
        lambda p: [p["ft"] / "model_final.pth"],
    ),
    # ----------------------------------------------------------------- tools/convert_vgg16.py
    Case(
        "convert-plan-mismatch",
        "converting weights with a plan that does not fit",
        "convert_vgg16",
        lambda p: [
            "--source",
            p["weights"],
            "--plan",
            f"{p['reference']}.json",
            "--output",
            p["out"] / "d2.pth",
            "--overwrite",
        ],
        "does not fit plan ",
        lambda p: [p["out"] / "d2.pth"],
    ),
    Case(
        "convert-output-exists",
        "converted checkpoint exists (no --overwrite)",
        "convert_vgg16",
        lambda p: ["--source", p["weights"], "--output", p["out"] / "d2.pth"],
        "already exists; pass --overwrite",
        lambda p: [p["out"] / "d2.pth"],
    ),
    Case(
        "convert-disk-full",
        "disk full while writing the checkpoint",
        "convert_vgg16",
        lambda p: ["--source", p["weights"], "--output", p["out"] / "d2.pth", "--overwrite"],
        "d2.pth: no space left on device",
        lambda p: [p["out"] / "d2.pth"],
        fail_write=("d2.pth", errno.ENOSPC),
    ),
    Case(
        "convert-record-too-large",
        "file size limit while writing its JSON record",
        "convert_vgg16",
        lambda p: ["--source", p["weights"], "--output", p["out"] / "d2.pth", "--overwrite"],
        "d2.pth.json: file too large",
        lambda p: [p["out"] / "d2.pth"],
        fail_write=("d2.pth.json", errno.EFBIG),
    ),
    Case(
        "convert-mixed-pair",
        "OUT.pth that is not the one OUT.json was written with",
        "convert_vgg16",
        lambda p: [
            "--source",
            p["out"] / "mixed.pth",
            "--plan",
            p["out"] / "mixed.json",
            "--output",
            p["out"] / "d2.pth",
            "--overwrite",
        ],
        "mixed.pth are not the weights ",
        lambda p: [p["out"] / "d2.pth"],
    ),
    # -------------------------------------------------------------- tools/train_net.py (Detectron2)
    Case(
        "d2-weights-missing",
        "MODEL.WEIGHTS file missing",
        "train_net",
        lambda p: d2(p, "demo/vgg16_synthetic", "MODEL.WEIGHTS", p["root"] / "nope.pth"),
        "MODEL.WEIGHTS file not found: ",
        d2_prev,
        process=True,
        allowed_new=D2_SETUP,
    ),
    Case(
        "d2-plan-missing",
        "MODEL.ACCEL.PLAN file missing",
        "train_net",
        lambda p: d2(
            p, "demo/accel_vgg16_synthetic", "MODEL.ACCEL.PLAN", p["root"] / "noplan.json"
        ),
        "plan (MODEL.ACCEL.PLAN) file not found: ",
        d2_prev,
        process=True,
        allowed_new=D2_SETUP,
    ),
    Case(
        "d2-plan-other-backbone",
        "MODEL.ACCEL.PLAN made for another backbone (a VGG-16 plan on the ResNet-FPN)",
        "train_net",
        lambda p: d2(p, "faster_rcnn_accel_R_50_FPN", "MODEL.ACCEL.PLAN", f"{p['reference']}.json"),
        "was not made for this backbone: it names layer conv1_1",
        d2_prev,
        process=True,
        allowed_new=D2_SETUP,
    ),
    Case(
        "d2-bad-key",
        "unknown config key",
        "train_net",
        lambda p: d2(p, "demo/vgg16_synthetic", "MODEL.NOPE", "1"),
        "KEY VALUE override on the command line: Non-existent key: MODEL.NOPE",
        d2_prev,
        process=True,
        allowed_new=D2_SETUP,
    ),
    Case(
        "d2-no-voc-layout",
        "data set folder without the VOC layout",
        "train_net",
        lambda p: d2(p, "demo/vgg16_synthetic"),
        "expects a VOC-format folder at ",
        d2_prev,
        process=True,
        allowed_new=D2_SETUP,
        env=lambda p: {"DETECTRON2_DATASETS": str(p["empty"])},
    ),
    Case(
        "d2-proposals-missing-images",
        "proposal file missing images",
        "train_net",
        lambda p: d2(
            p,
            "demo/vgg16_synthetic",
            "DATASETS.PROPOSAL_FILES_TEST",
            f"('{p['proposals_partial']}',)",
        ),
        "misses 1 of the 2 images of data set 'synthetic_voc_test'",
        d2_prev,
        process=True,
        allowed_new=D2_SETUP,
    ),
    Case(
        "d2-proposals-pickle-code",
        "proposal file that would run code when unpickled (--eval-only)",
        "train_net",
        lambda p: d2(
            p,
            "demo/vgg16_synthetic",
            "DATASETS.PROPOSAL_FILES_TEST",
            f"('{p['evil_proposals']}',)",
        ),
        UNPICKLE_REFUSED,
        d2_prev,
        process=True,
        allowed_new=D2_SETUP,
        absent=lambda p: [p["pwned_proposals"]],
    ),
    Case(
        "d2-train-proposals-pickle-code",
        "training proposal file that would run code when unpickled",
        "train_net",
        lambda p: d2(
            p,
            "demo/vgg16_synthetic",
            "DATASETS.PROPOSAL_FILES_TRAIN",
            f"('{p['evil_proposals']}',)",
            eval_only=False,
        ),
        UNPICKLE_REFUSED,
        d2_prev,
        process=True,
        allowed_new=D2_SETUP,
        absent=lambda p: [p["pwned_proposals"]],
    ),
    Case(
        "d2-weights-pickle-code",
        ".pkl MODEL.WEIGHTS that would run code when unpickled",
        "train_net",
        lambda p: d2(p, "demo/vgg16_synthetic", "MODEL.WEIGHTS", p["evil_pkl"]),
        UNPICKLE_REFUSED,
        d2_prev,
        process=True,
        allowed_new=D2_SETUP,
        absent=lambda p: [p["pwned_pkl"]],
    ),
    Case(
        "d2-resume-other-model",
        "--resume with the last checkpoint of another model (OUTPUT_DIR of another plan)",
        "train_net",
        lambda p: [
            "--resume",
            *d2(p, "demo/vgg16_synthetic", *D2_TINY, "OUTPUT_DIR", p["d2resume"], eval_only=False),
        ],
        "model_0000009.pth do not fit the model at backbone layer conv1_1",
        lambda p: [p["d2resume"] / "model_0000009.pth", p["d2resume"] / "last_checkpoint"],
        process=True,
        allowed_new=D2_SETUP,  # refused before Detectron2 writes config.yaml
    ),
    Case(
        "d2-results-disk-full",
        "disk full while writing eval_results.json (its own model evaluated again)",
        "train_net",
        lambda p: d2(
            p,
            "demo/vgg16_synthetic",
            *D2_TINY,
            "OUTPUT_DIR",
            p["d2full"],
            "MODEL.WEIGHTS",
            p["d2full"] / "model_final.pth",
        ),  # fmt: skip
        "eval_results.json: no space left on device",
        lambda p: [p["d2full"] / "model_final.pth"],
        process=True,
        allowed_new=(*D2_RUN, PREVIOUS_RUNS),
        fail_write=("eval_results.json", errno.ENOSPC),
        env=lambda p: D2_QUIET,
    ),
    Case(
        "d2-checkpoint-too-large",
        "file size limit while writing model_final.pth (--resume)",
        "train_net",
        lambda p: [
            "--resume",
            *d2(
                p,
                "demo/vgg16_synthetic",
                *D2_TINY,
                "SOLVER.MAX_ITER",
                "2",
                "OUTPUT_DIR",
                p["d2full"],
                eval_only=False,
            ),
        ],  # fmt: skip
        "model_final.pth: file too large",
        lambda p: [p["d2full"] / "model_final.pth", p["d2full"] / "last_checkpoint"],
        process=True,
        allowed_new=(*D2_RUN, PREVIOUS_RUNS),
        fsize_kb=300,  # log.txt, metrics and config fit, the checkpoint (0.9 MB) not
        env=lambda p: D2_QUIET,  # Detectron2 evaluates after a failed last iteration too
    ),
    Case(
        "d2-truncated-train-image",
        "a truncated JPEG in the training set",
        "train_net",
        lambda p: d2(p, "demo/vgg16_synthetic", "SOLVER.MAX_ITER", "2", eval_only=False),
        "000001.jpg of data set 'synthetic_voc_trainval' cannot be used: it does not decode "
        "(image file is truncated",
        d2_prev,
        process=True,
        env=lambda p: {"DETECTRON2_DATASETS": str(p["broken"]["truncated"])},
    ),
    Case(
        "d2-unreadable-test-image",
        "an unreadable image in the test set (--eval-only)",
        "train_net",
        lambda p: d2(p, "demo/vgg16_synthetic"),
        "000004.jpg of data set 'synthetic_voc_test' cannot be used: it does not decode",
        d2_prev,
        process=True,
        env=lambda p: {"DETECTRON2_DATASETS": str(p["broken"]["unreadable"])},
    ),
    Case(
        "d2-test-xml-without-pose",
        "a test annotation without a field the VOC evaluator reads (`<pose>`)",
        "train_net",
        lambda p: d2(p, "demo/vgg16_synthetic"),
        "000005.xml: object 1 has no <pose>, which PascalVOCDetectionEvaluator reads",
        d2_prev,
        process=True,
        env=lambda p: {"DETECTRON2_DATASETS": str(p["broken"]["no_pose"])},
    ),
    Case(
        "d2-proposals-other-dataset",
        "a proposal file made for another data set whose ids match",
        "train_net",
        lambda p: d2(
            p,
            "demo/vgg16_synthetic",
            "DATASETS.PROPOSAL_FILES_TEST",
            f"('{p['proposals_other']}',)",
        ),
        "was made for other images than those of data set 'synthetic_voc_test' (it records data "
        "set 'other_voc_test'",
        d2_prev,
        process=True,
    ),
    # ----------------------------------------------------------------- tools/make_proposals.py
    Case(
        "proposals-mat-missing-images",
        ".mat proposals missing images of the data set",
        "make_proposals",
        lambda p: [
            "--from-mat",
            p["partial_mat"],
            "--dataset",
            "synthetic_voc_test",
            "--output",
            p["out"] / "props.pkl",
            "--overwrite",
        ],
        "misses 1 of the 2 images of data set 'synthetic_voc_test'",
        lambda p: [p["out"] / "props.pkl"],
        process=True,
    ),
    Case(
        "proposals-unregistered",
        "unknown data set name",
        "make_proposals",
        lambda p: ["--dataset", "nope", "--output", p["out"] / "props.pkl"],
        "data set 'nope' is not registered",
        lambda p: [p["out"] / "props.pkl"],
        process=True,
    ),
    # ----------------------------------------------------------------- tools/export_model.py
    Case(
        "export-plan-missing",
        "accelerated weights with a missing plan",
        "export_model",
        lambda p: export(p, "--weights", f"{p['reference']}.pth", "--plan", p["root"] / "no.json"),
        "plan file not found: ",
        exported,
    ),
    Case(
        "export-plan-mismatch",
        "plan that does not fit the weights",
        "export_model",
        lambda p: export(p, "--weights", p["weights"], "--plan", f"{p['reference']}.json"),
        "does not fit the model at layer conv1_2",
        exported,
    ),
    Case(
        "export-unknown-format",
        "unknown format",
        "export_model",
        lambda p: export(p, "--weights", p["weights"], "--format", "tflite"),
        "unknown export format 'tflite': choose onnx or openvino",
        exported,
    ),
    Case(
        "export-output-exists",
        "exported model exists (no --overwrite)",
        "export_model",
        lambda p: export(p, "--weights", p["weights"], overwrite=False),
        "exported.onnx already exists; pass --overwrite",
        exported,
    ),
    Case(
        "export-check-fails",
        "exported model differs from PyTorch (--tolerance 1e-12)",
        "export_model",
        lambda p: export(p, "--weights", p["weights"], "--tolerance", "1e-12"),
        "above the tolerance 1e-12: nothing written to ",
        exported,
    ),
    Case(
        "export-d2-plan-missing",
        "detector: MODEL.ACCEL.PLAN file missing",
        "export_model",
        lambda p: export(
            p,
            "--config-file",
            "demo/accel_vgg16_synthetic",
            "MODEL.ACCEL.PLAN",
            p["root"] / "noplan.json",
        ),
        "plan (MODEL.ACCEL.PLAN) file not found: ",
        exported,
        process=True,
    ),
    Case(
        "export-unknown-precision",
        "unknown precision",
        "export_model",
        lambda p: export(p, "--weights", p["weights"], "--precision", "fp8"),
        "unknown precision 'fp8': choose fp32, bf16 or int8",
        exported,
    ),
    Case(
        "export-int8-no-calibration",
        "--precision int8 of a classifier without calibration images",
        "export_model",
        lambda p: export(p, "--weights", p["weights"], "--precision", "int8"),
        "--precision int8 needs calibration images: --images FOLDER",
        exported,
    ),
    Case(
        "export-int8-too-few-images",
        "--precision int8 with fewer calibration images than --calibration",
        "export_model",
        lambda p: export(
            p,
            "--weights",
            p["weights"],
            "--precision",
            "int8",
            "--images",
            p["images"],
            "--calibration",
            "1000",
        ),  # fmt: skip
        "fewer than the 1000 asked for (--calibration)",
        exported,
    ),
    Case(
        "export-int8-output-exists",
        "--precision int8, exported model exists (no --overwrite)",
        "export_model",
        lambda p: export(
            p,
            "--weights",
            p["weights"],
            "--precision",
            "int8",
            "--images",
            p["images"],
            overwrite=False,
        ),  # fmt: skip
        "exported.onnx already exists; pass --overwrite",
        exported,
    ),
    Case(
        "export-d2-int8-no-proposals",
        "--precision int8 of a detector whose DATASETS.TRAIN has no proposal file",
        "export_model",
        lambda p: export(
            p,
            "--precision",
            "int8",
            "--config-file",
            "demo/vgg16_synthetic",
            *D2_TINY,
            "DATASETS.PROPOSAL_FILES_TRAIN",
            "()",
        ),  # fmt: skip
        "an int8 detector is calibrated on images of DATASETS.TRAIN",
        exported,
        process=True,
    ),
    # ----------------------------------------------------------------- tools/evaluate_exported.py
    Case(
        "evaluate-model-missing",
        "exported model file missing",
        "evaluate_exported",
        lambda p: evaluate(p, p["root"] / "nope.onnx"),
        "exported model file not found: ",
        d2_prev,
        process=True,
    ),
    Case(
        "evaluate-not-a-detector",
        "exported model that is not a detector",
        "evaluate_exported",
        lambda p: evaluate(p, p["identity_onnx"]),
        "is not an exported detector: it takes x and returns y",
        d2_prev,
        process=True,
    ),
]

# ------------------------------------------------------------ hostile inputs (security)
# Data files that must not run code or corrupt memory, by every route; plans, options, configs and
# paths built to break the tools. The files are made by _hostile_inputs below.
SECURITY_CASES = [
    Case(
        "d2-train-proposals-compress-detector",
        "training proposal file that would run code when unpickled",
        "compress_detector",
        lambda p: [
            "--config-file",
            "demo/vgg16_synthetic",
            "--output",
            p["d2out"] / "compressed",
            "--num-images",
            "2",
            "--no-progress",
            *D2_TINY,
            "MODEL.DEVICE",
            "cpu",
            "MODEL.WEIGHTS",
            p["tiny_detector"],
            "DATASETS.PROPOSAL_FILES_TRAIN",
            f"('{p['evil_proposals_train']}',)",
            "DATASETS.PROPOSAL_FILES_TEST",
            f"('{p['proposals_test']}',)",
        ],  # fmt: skip
        UNPICKLE_REFUSED,
        d2_prev,
        absent=lambda p: [p["pwned_proposals"]],
    ),
    Case(
        "d2-weights-url-query",
        "detector: MODEL.WEIGHTS DIR/w.pkl?x=1, a harmless file beside a DIR/w.pkl that would run "
        "code (Detectron2 reads DIR/w.pkl)",
        "export_model",
        lambda p: export(
            p, "--config-file", "demo/vgg16_synthetic", *D2_TINY, "MODEL.WEIGHTS", p["query_pkl"]
        ),
        "is a file, but Detectron2 reads it as the URL ",
        exported,
        absent=lambda p: [p["pwned_pkl"]],
    ),
    Case(
        "plan-rank-bool",
        'plan with "rank": true',
        "export_model",
        lambda p: export(p, "--weights", p["weights"], "--plan", p["plan_rank_bool"]),
        "has rank=True, expected a positive integer",
        exported,
    ),
    Case(
        "plan-rank-huge",
        'plan with "rank": 25000000 (refused before any layer is built)',
        "export_model",
        lambda p: export(p, "--weights", p["weights"], "--plan", p["plan_rank_huge"]),
        "rank=25000000 is larger than the layer's full rank",
        exported,
    ),
    Case(
        "plan-nested",
        "plan nested 100,000 levels deep",
        "export_model",
        lambda p: export(p, "--weights", p["weights"], "--plan", p["plan_nested"]),
        "nested more than 64 levels deep",
        exported,
    ),
    Case(
        "option-negative-seed",
        "--seed -1",
        "compress_backbone",
        lambda p: compress(p, "prev", "--seed", "-1"),
        "argument --seed: must be at least 0, got -1",
        prev,
    ),
    Case(
        "option-fc-ranks",
        "--fc-ranks -5 3",
        "compress_detector",
        lambda p: ["--config-file", "x", "--output", p["out"] / "x", "--fc-ranks", "-5", "3"],
        "argument --fc-ranks: must be at least 1, got -5",
    ),
    Case(
        "option-input-size",
        "--input-size 0 0",
        "export_model",
        lambda p: export(p, "--weights", p["weights"], "--input-size", "0", "0"),
        "argument --input-size: must be at least 32, got 0",
        exported,
    ),
    Case(
        "weights-sparse",
        "weights holding a sparse tensor",
        "compress_backbone",
        lambda p: compress(p, "prev", "--weights", p["sparse"]),
        "features.0.weight is a sparse or otherwise non-dense tensor",
        prev,
    ),
    Case(
        "path-newline",
        "a path with a newline and an `error:` of its own (printed escaped, on the one line)",
        "compress_backbone",
        lambda p: compress(p, "prev", "--weights", p["root"] / "a\nerror: fake"),
        "VGG-16 weights file not found: ",
        prev,
    ),
    *[
        Case(
            f"config-{name}",
            f"config file {what}",
            "export_model",
            lambda p, name=name: export(p, "--config-file", p["configs"] / name),
            message,
            exported,
        )
        for name, what, message in (
            ("empty.yaml", "empty", "holds nothing, not a mapping of config keys"),
            ("list.yaml", "holding a list", "holds a list, not a mapping of config keys"),
            ("lazy.py", "in Python (LazyConfig)", "is not a YAML file (.yaml)"),
            ("self.yaml", "whose `_BASE_` is itself", "includes itself through _BASE_"),
        )
    ],
    Case(
        "export-disk-full",
        "disk full while writing the exported model",
        "export_model",
        lambda p: export(p, "--weights", p["weights"]),
        "exported.onnx: no space left on device",
        exported,
        fail_write=("exported.onnx", errno.ENOSPC),
    ),
]
CASES += SECURITY_CASES


def _hostile_inputs(p):
    """The files of :data:`SECURITY_CASES`."""
    root = p["root"]
    for name, entry in (
        ("plan_rank_bool", {"conv2_1": {"structure": "channel", "rank": True}}),
        ("plan_rank_huge", {"conv2_1": {"structure": "channel", "rank": 25_000_000}}),
    ):
        p[name] = root / f"{name}.json"
        p[name].write_text(json.dumps({"layers": entry}))
    p["plan_nested"] = root / "plan_nested.json"
    p["plan_nested"].write_text('{"layers": {}, "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    p["sparse"] = root / "sparse.pth"
    torch.save({"features.0.weight": torch.eye(3).to_sparse()}, p["sparse"])
    p["configs"] = root / "configs"
    p["configs"].mkdir()
    for name, text in (("empty.yaml", ""), ("list.yaml", "- 1\n"), ("lazy.py", "x = 1\n"),
                       ("self.yaml", "_BASE_: self.yaml\n")):  # fmt: skip
        (p["configs"] / name).write_text(text)
    (root / "w").mkdir()
    with open(root / "w" / "w.pkl", "wb") as f:
        pickle.dump({"model": _Evil(str(p["pwned_pkl"])), "__author__": "x"}, f)
    p["evil_proposals_train"] = root / "evil_proposals_train.pkl"
    with open(p["evil_proposals_train"], "wb") as f:
        ids = ["000001", "000002", "000003"]
        pickle.dump({"ids": ids, "boxes": _Evil(str(p["pwned_proposals"]))}, f)
    pytest.importorskip("detectron2")
    from detectron2.modeling import build_model

    import accel_det.detection  # noqa: F401
    from accel_det.detection.config import load_config

    cfg = load_config(
        "demo/vgg16_synthetic", [*D2_TINY, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""]
    )
    p["tiny_detector"] = root / "tiny_detector.pth"
    torch.save({"model": build_model(cfg).state_dict()}, p["tiny_detector"])
    p["query_pkl"] = root / "w" / "w.pkl?x=1"  # weights that fit: Detectron2 would load w.pkl
    shutil.copy(p["tiny_detector"], p["query_pkl"])
    p["r50_fpn"] = root / "r50_fpn.pth"  # a tiny plain ResNet-FPN Faster R-CNN
    cfg = load_config("faster_rcnn_R_50_FPN.yaml", [*TINY_R50_FPN, "MODEL.DEVICE", "cpu"])
    torch.save({"model": build_model(cfg).state_dict()}, p["r50_fpn"])
    # the synthetic set in this process too (compress_detector runs here)
    from detectron2.data import MetadataCatalog

    from accel_det.detection.datasets import register_synthetic_voc

    p["registered_before"] = MetadataCatalog.get("synthetic_voc_trainval").dirname
    register_synthetic_voc(str(p["datasets"] / "synthetic_voc"))


# ------------------------------------------------------------------------------------------------
# Checked before the first write; outputs that name their inputs. A refused run leaves every file
# of an earlier run as it was (the whole folder: `d2_run`), and nothing is silently wrong.
# ------------------------------------------------------------------------------------------------


def d2_run(p):
    """Every file of the finished Detectron2 run in d2out (config.yaml included)."""
    return sorted(path for path in p["d2out"].rglob("*") if path.is_file())


def tiny(p, *opts, config="demo/vgg16_synthetic", eval_only=True):
    """tools/train_net.py on the tiny detector (D2_TINY) into d2out."""
    return d2(p, config, *D2_TINY, *opts, eval_only=eval_only)


def resnet_fpn(p, *extra):
    """tools/compress_detector.py on the tiny ResNet-FPN Faster R-CNN."""
    return ["--config-file", "faster_rcnn_R_50_FPN.yaml", "--output", p["out"] / "rx", *extra,
            *TINY_R50_FPN, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", p["r50_fpn"]]  # fmt: skip


def detector(p, output, *extra, opts=()):
    """tools/compress_detector.py on the tiny detector (D2_TINY); KEY VALUE overrides last."""
    return [
        "--config-file",
        "demo/vgg16_synthetic",
        "--output",
        output,
        *("--num-images", "3", "--samples-per-image", "8", "--fc-samples-per-image", "16"),
        *("--iterations", "2", "--no-progress", *extra),
        *("MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0", *D2_TINY),
        *("MODEL.WEIGHTS", p["d2_tiny"]),
        *("DATASETS.PROPOSAL_FILES_TRAIN", f"('{p['proposals_trainval']}',)", *opts),
    ]


def files_of(key):
    return lambda p: sorted(path for path in p[key].iterdir() if path.is_file())


def evaluate_to(p, model, output, *extra):
    """tools/evaluate_exported.py of ``model`` with the demo config, results to ``output``."""
    return [
        *("--config-file", "demo/vgg16_synthetic", "--model", model, "--output", output, *extra),
        *("MODEL.DEVICE", "cpu", "DATASETS.PROPOSAL_FILES_TEST", f"('{p['proposals_test']}',)"),
    ]


CHECKED_FIRST = [
    Case(
        "d2-weights-other-width",
        "MODEL.WEIGHTS of another width, into an OUTPUT_DIR of a finished run",
        "train_net",
        lambda p: tiny(p, "MODEL.WEIGHTS", p["d2_wide"], eval_only=False),
        "do not fit the model at backbone layer conv1_1",
        d2_run,
    ),
    Case(
        "d2-plan-other-width",
        "MODEL.ACCEL.PLAN of another width",
        "train_net",
        lambda p: tiny(p, "MODEL.ACCEL.PLAN", p["plan_wide"], config="demo/accel_vgg16_synthetic"),
        "does not fit VGG-16 at MODEL.VGG.WIDTH=0.0625: plan layer conv1_1: out_channels=8",
        d2_run,
    ),
    Case(
        "d2-weights-json-plan",
        "a JSON plan given as MODEL.WEIGHTS",
        "train_net",
        lambda p: tiny(p, "MODEL.WEIGHTS", p["fc_plan"]),
        "is a JSON plan, not a PyTorch checkpoint: did you mean MODEL.ACCEL.PLAN?",
        d2_run,
    ),
    Case(
        "d2-factorized-fc-without-plan",
        "weights with a factorized fc6/fc7, a plan without fc6/fc7 (--eval-only)",
        "train_net",
        lambda p: tiny(p, "MODEL.WEIGHTS", p["d2_facto"]),
        "do not fit the box head at fc6 (no plan: the model's fc layers are plain)",
        d2_run,
    ),
    Case(
        "d2-unknown-fc-entry",
        "a plan with an fc entry the box head does not have (`fc9`)",
        "train_net",
        lambda p: tiny(p, "MODEL.ACCEL.PLAN", p["fc9_plan"], config="demo/accel_vgg16_synthetic"),
        "has fc entries the box head does not have: fc9",
        d2_run,
    ),
    Case(
        "d2-finished-dir-other-model",
        "--eval-only of another model into the OUTPUT_DIR of a finished run",
        "train_net",
        lambda p: tiny(p, "MODEL.WEIGHTS", p["d2_tiny"]),
        "holds a finished run (model_final.pth, eval_results.json) of another model",
        d2_run,
        process=True,
    ),
    Case(
        "export-factorized-fc-without-plan",
        "detector: weights with a factorized fc6/fc7, no plan for them",
        "export_model",
        lambda p: export(
            p, "--config-file", "demo/vgg16_synthetic", *D2_TINY, "MODEL.WEIGHTS", p["d2_facto"]
        ),  # fmt: skip
        "do not fit the box head at fc6 (no plan: the model's fc layers are plain)",
        exported,
    ),
    Case(
        "convert-json-plan-as-source",
        "a JSON plan given as --source",
        "convert_vgg16",
        lambda p: [
            *("--source", f"{p['reference']}.json", "--output", p["out"] / "d2.pth", "--overwrite")
        ],
        "is a JSON plan, not a PyTorch checkpoint: did you mean --plan? (the weights written",
        lambda p: [p["out"] / "d2.pth"],
    ),
    Case(
        "weights-json-plan",
        "a JSON plan given as --weights",
        "compress_backbone",
        lambda p: compress(p, "prev", "--weights", f"{p['reference']}.json"),
        "is a JSON plan, not a PyTorch checkpoint",
        prev,
    ),
    Case(
        "weights-missing-relative",
        "weights file missing, given relative to the working folder",
        "compress_backbone",
        lambda p: compress(p, "prev", "--weights", "nope/vgg16.pth"),
        "VGG-16 weights file not found: nope/vgg16.pth (relative to the working folder ",
        prev,
    ),
    Case(
        "impossible-speedup-before-images",
        "impossible speedup, refused before the images are read (an empty folder)",
        "compress_backbone",
        lambda p: compress(p, "prev", "--speedup", "500", "--images", p["empty"]),
        "speedup 500 is impossible for method asym3d: at most ",
        prev,
    ),
    Case(
        "detector-impossible-speedup",
        "impossible speedup, refused before the images and proposals are read",
        "compress_detector",
        lambda p: detector(
            p, p["out"] / "dx", "--speedup", "500", opts=("MODEL.LOAD_PROPOSALS", "False")
        ),  # fmt: skip
        "speedup 500 is impossible for method asym3d with these conv and fc layers: at most ",
        prev,  # and no folder dx
    ),
    Case(
        "resnet-fpn-impossible-speedup",
        "a ResNet-FPN Faster R-CNN at an impossible speedup, refused before the images are read",
        "compress_detector",
        lambda p: resnet_fpn(p, "--speedup", "500"),
        "speedup 500 is impossible for method asym3d with these conv and fc layers: at most ",
        prev,  # and no folder rx
    ),
    Case(
        "detector-num-images",
        "fewer training images than --num-images",
        "compress_detector",
        lambda p: detector(p, p["out"] / "dx", "--speedup", "2", "--num-images", "50"),
        "has 3 images, fewer than the 50 asked for (--num-images)",
        prev,
        process=True,
    ),
    Case(
        "detector-resume-finished",
        "--resume on a finished output folder without a checkpoint",
        "compress_detector",
        lambda p: detector(p, p["dfinished"], "--resume"),
        "model_final.pth already exists; pass --overwrite to replace it",
        files_of("dfinished"),
    ),
    Case(
        "detector-checkpoint-not-resumed",
        "a checkpoint of an interrupted run, neither --resume nor --overwrite",
        "compress_detector",
        lambda p: detector(p, p["dstopped"]),
        "holds an interrupted run: pass --resume to continue it or --overwrite to start over",
        files_of("dstopped"),
    ),
    Case(
        "detector-disk-full",
        "disk full while writing model_final.pth",
        "compress_detector",
        lambda p: detector(p, p["dfull"], "--speedup", "2", "--overwrite"),
        "model_final.pth: no space left on device; the solved layers stay in ",
        files_of("dfull"),
        process=True,
        allowed_new=("compression.checkpoint.pth",),
        fail_write=("model_final.pth", errno.ENOSPC),
    ),
    Case(
        "rcnn-benchmark-output",
        "an --output that is not a .json record",
        "benchmark_rcnn",
        lambda p: ["--output", p["out"] / "prev.pth", "--quick", "--threads", "1"],
        "--output must end with .json, got ",
        prev,
    ),
    Case(
        "rcnn-benchmark-output-folder",
        "an --output in a folder that does not exist",
        "benchmark_rcnn",
        lambda p: ["--output", p["out"] / "nope" / "rcnn.json", "--quick"],
        "output folder ",
        prev,
    ),
    Case(
        "proposals-other-settings",
        "a finished proposal file, rerun with another --mode",
        "make_proposals",
        lambda p: [
            "--dataset",
            "synthetic_voc_test",
            "--mode",
            "single",
            "--min-size",
            "4",
            "--workers",
            "1",
            "--output",
            p["out"] / "ss.pkl",
        ],  # fmt: skip
        "is not reused (it was made with mode='fast' (this run: 'single')); pass --overwrite",
        lambda p: [p["out"] / "ss.pkl", p["out"] / "ss.pkl.json"],
        process=True,
    ),
    Case(
        "evaluate-other-test-size",
        "exported detector whose record says another test size than the config",
        "evaluate_exported",
        lambda p: evaluate_to(p, p["det_onnx"], p["out"] / "det_eval.json"),
        "was exported for INPUT.MIN_SIZE_TEST 600 (its record ",
        lambda p: [p["det_onnx"], Path(f"{p['det_onnx']}.json")],
    ),
    Case(
        "evaluate-output-exists",
        "results file exists (no --overwrite)",
        "evaluate_exported",
        lambda p: evaluate_to(p, p["identity_onnx"], p["out"] / "eval.json"),
        "eval.json already exists; pass --overwrite to replace it",
        lambda p: [p["out"] / "eval.json"],
    ),
    Case(
        "evaluate-output-is-model",
        "--output naming the exported model itself (with --overwrite)",
        "evaluate_exported",
        lambda p: evaluate_to(p, p["identity_onnx"], p["identity_onnx"], "--overwrite"),
        "is the exported model (--model), an input of this evaluation",
        lambda p: [p["identity_onnx"]],
    ),
    Case(
        "evaluate-output-is-proposals",
        "--output naming a proposal file of the evaluation (with --overwrite)",
        "evaluate_exported",
        lambda p: evaluate_to(p, p["identity_onnx"], p["proposals_test"], "--overwrite"),
        "is a proposal file (DATASETS.PROPOSAL_FILES_TEST",
        lambda p: [p["proposals_test"]],
    ),
]
CASES += CHECKED_FIRST


def _checked_first(p):
    """The inputs of CHECKED_FIRST: tiny detectors' checkpoints and plans, finished and interrupted
    output folders, a finished proposal file, an exported "detector" with its record."""
    from detectron2.modeling import build_model

    from accel_det.deploy.detector import detector_provenance
    from accel_det.deploy.record import export_record, files_digest
    from accel_det.detection.config import load_config
    from accel_det.detection.proposals import make_proposals

    root, tiny_opts = p["root"], ["MODEL.DEVICE", "cpu", *D2_TINY]
    (p["d2out"] / "config.yaml").write_text("MODEL:\n  WEIGHTS: earlier_model.pth\n")
    torch.manual_seed(0)
    model = build_model(load_config("demo/vgg16_synthetic", tiny_opts))
    p["d2_tiny"] = root / "d2_tiny.pth"
    torch.save({"model": model.state_dict()}, p["d2_tiny"])
    head = model.roi_heads.box_head
    fc = {n: {"in_features": getattr(head, n).in_features, "out_features": 32,
              "structure": "channel", "rank": 4} for n in ("fc6", "fc7")}  # fmt: skip
    for name, layers in (("fc_plan", fc), ("fc9_plan", {"fc9": fc["fc7"]})):
        p[name] = root / f"{name}.json"
        p[name].write_text(json.dumps({"layers": layers}))
    p["plan_wide"] = root / "plan_wide.json"  # conv1_1 of width 0.125 (the tiny one has 4 filters)
    conv = {"in_channels": 3, "out_channels": 8, "kernel_size": [3, 3], "structure": "channel"}
    p["plan_wide"].write_text(json.dumps({"layers": {"conv1_1": {**conv, "rank": 2}}}))
    opts = [*tiny_opts, "MODEL.ACCEL.PLAN", str(p["fc_plan"])]
    p["d2_facto"] = root / "d2_facto.pth"
    torch.save({"model": build_model(load_config("demo/vgg16_synthetic", opts)).state_dict()},
               p["d2_facto"])  # fmt: skip
    p["d2_wide"] = root / "d2_wide.pth"
    torch.save({"model": {"backbone.features.0.weight": torch.zeros(8, 3, 3, 3)}}, p["d2_wide"])
    shutil.copy(p["d2_tiny"], p["d2full"] / "model_final.pth")  # evaluated again, resumed
    for name, files in (
        ("dfinished", ("model_final.pth", "plan.json", "plan.png")),
        ("dstopped", ("compression.checkpoint.pth",)),
        ("dfull", ("model_final.pth", "plan.json")),
    ):
        p[name] = root / name
        p[name].mkdir()
        for file in files:
            (p[name] / file).write_bytes(f"earlier {file}".encode())
    voc = p["datasets"] / "synthetic_voc" / "JPEGImages"
    images = [(i, str(voc / f"{i}.jpg")) for i in ("000004", "000005")]
    make_proposals(images, str(p["out"] / "ss.pkl"), min_size=4, workers=1, progress=False,
                   dataset_name="synthetic_voc_test")  # fmt: skip
    # not a detector, but a record as tools/export_model.py writes it, for a test size of 600
    p["det_onnx"] = root / "det.onnx"
    shutil.copy(p["identity_onnx"], p["det_onnx"])
    cfg = load_config("demo/vgg16_synthetic", ["INPUT.MIN_SIZE_TEST", "600"])
    digest = files_digest([p["det_onnx"]], [p["det_onnx"]])
    record = export_record(
        detector_provenance(cfg), description="Fast R-CNN", export_format="onnx", opset=18,
        files=digest, check={},
    )  # fmt: skip
    Path(f"{p['det_onnx']}.json").write_text(json.dumps(record))


@pytest.fixture(scope="module")
def paths(work, tmp_path_factory):  # noqa: F811
    """Bad inputs, earlier outputs, a tiny synthetic VOC set and its proposal files."""
    from accel_det.data import list_images, make_image_folder
    from accel_det.models.vgg import vgg16

    root = tmp_path_factory.mktemp("errors")
    p = {
        "root": root,
        "weights": work["weights"],
        "images": work["images"],
        "reference": work["out"],
        "out": root / "out",
        "ft": root / "ft",
        "d2out": root / "d2out",
        "d2full": root / "d2full",
        "d2resume": root / "d2resume",
        "empty": root / "empty",
        "flat": root / "flat",
        "unreadable": root / "unreadable",
        "garbage": root / "garbage.pth",
        "resnet": root / "resnet.pth",
        "nan": root / "nan.pth",
        "evil": root / "evil.pth",
    }
    for folder in ("out", "ft", "d2out", "d2full", "d2resume", "empty"):
        p[folder].mkdir()
    make_image_folder(str(p["flat"]), num_classes=2, images_per_class=1, size=32, layout="flat")
    make_image_folder(str(p["unreadable"]), num_classes=2, images_per_class=1, size=72)
    p["same_names"] = root / "same_names"  # the images' file names, other bytes
    make_image_folder(str(p["same_names"]), num_classes=10, images_per_class=2, size=72, seed=1)
    p["image_list"] = root / "image_list.txt"
    p["image_list"].write_text(f"{list_images(str(p['images']))[0]}\nclass_00/nope\n")
    p["other_weights"] = root / "other_weights.pth"
    torch.manual_seed(1)
    torch.save(vgg16(num_classes=10, width=0.125).state_dict(), p["other_weights"])
    for i in range(18):
        (p["unreadable"] / f"broken{i:02d}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    p["garbage"].write_bytes(b"not a checkpoint")
    torch.save(
        {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 512)}, p["resnet"]
    )
    state = torch.load(work["weights"], weights_only=True)
    state["features.5.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, p["nan"])
    p["pwned"] = root / "pwned"
    torch.save({"features.0.weight": _Evil(str(p["pwned"]))}, p["evil"])
    # pickles whose loading would run a command: a proposal file and Detectron2-style .pkl weights
    for name, data in (
        ("proposals", lambda e: {"ids": ["000004", "000005"], "boxes": e}),
        ("pkl", lambda e: {"model": {"backbone.features.0.weight": e}, "__author__": "x"}),
    ):
        p[f"pwned_{name}"] = root / f"pwned_{name}"
        p[f"evil_{name}"] = root / f"evil_{name}.pkl"
        with open(p[f"evil_{name}"], "wb") as f:
            pickle.dump(data(_Evil(str(p[f"pwned_{name}"]))), f)
    # earlier outputs that must survive
    for prefix in ("prev", "full", "unfinished", "mixed"):
        shutil.copy(f"{work['out']}.pth", p["out"] / f"{prefix}.pth")
        shutil.copy(f"{work['out']}.json", p["out"] / f"{prefix}.json")
    mixed = torch.load(p["out"] / "mixed.pth", weights_only=True)  # weights of another run
    mixed["classifier.6.bias"] += 1
    torch.save(mixed, p["out"] / "mixed.pth")
    for name, data in (
        ("eval.json", b'{"earlier": true}\n'),
        ("d2.pth", b"earlier checkpoint"),
        ("props.pkl", b"earlier proposals"),
        ("exported.onnx", b"earlier export"),
    ):
        (p["out"] / name).write_bytes(data)
    (p["ft"] / "model_final.pth").write_bytes(b"earlier fine-tuning")
    (p["d2out"] / "model_final.pth").write_bytes(b"earlier detector")
    (p["d2out"] / "eval_results.json").write_bytes(b'{"bbox": {"AP50": 1.0}}\n')
    for folder in ("d2full", "d2resume"):
        (p[folder] / "model_final.pth").write_bytes(b"earlier detector")
        (p[folder] / "eval_results.json").write_bytes(b'{"bbox": {"AP50": 1.0}}\n')
    (p["d2full"] / "last_checkpoint").write_text("model_final.pth")
    # the last checkpoint of a detector of another width (conv1_1 with 8 filters, not D2_TINY's 4)
    other = {"backbone.features.0.weight": torch.zeros(8, 3, 3, 3)}
    torch.save({"model": other, "iteration": 9}, p["d2resume"] / "model_0000009.pth")
    (p["d2resume"] / "last_checkpoint").write_text("model_0000009.pth")
    code = run_tool_quietly(
        "compress_backbone", compress(p, "stopped", "--stop-after", "conv1_2", overwrite=False)
    )
    assert code == 1 and (p["out"] / "stopped.checkpoint.pth").exists()
    for suffix in (".checkpoint.pth", ".checkpoint.json"):  # stopped while writing its outputs
        shutil.copy(p["out"] / f"stopped{suffix}", p["out"] / f"unfinished{suffix}")
    # unwritable: a read-only folder, or for root a kernel folder
    if os.geteuid() != 0:
        p["unwritable"] = root / "readonly"
        p["unwritable"].mkdir(mode=0o500)
    else:
        p["unwritable"] = Path("/sys/kernel")
    _synthetic_voc(p)
    p["identity_onnx"] = _identity_onnx(root / "identity.onnx")
    _checked_first(p)
    _hostile_inputs(p)
    yield p
    if os.geteuid() != 0:
        p["unwritable"].chmod(0o700)
    _restore_registration(p)


def _restore_registration(p):
    from accel_det.detection.datasets import register_synthetic_voc

    register_synthetic_voc(p["registered_before"])


class _Evil:
    """Unpickling it would run a command (create a file); weights_only=True refuses to."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _synthetic_voc(p):
    import numpy as np
    import scipy.io

    pytest.importorskip("detectron2")
    from accel_det.data.synthetic.voc import make_synthetic_voc
    from accel_det.detection.proposals import dataset_record, write_proposal_file

    p["datasets"] = p["root"] / "datasets"
    voc = p["datasets"] / "synthetic_voc"
    tiny = dict(num_trainval=3, num_test=2, image_size=64, progress=False)
    make_synthetic_voc(str(voc), **tiny)
    other = p["root"] / "other_voc"  # the same ids, other images
    make_synthetic_voc(str(other), **tiny, seed=5)
    box = np.array([[0, 0, 20, 20]], dtype=np.float32)
    for name, ids, folder, dataset in (
        ("trainval", ["000001", "000002", "000003"], voc, "synthetic_voc_trainval"),
        ("test", ["000004", "000005"], voc, "synthetic_voc_test"),
        ("partial", ["000004"], voc, "synthetic_voc_test"),
        ("other", ["000004", "000005"], other, "other_voc_test"),
    ):
        p[f"proposals_{name}"] = p["root"] / f"{name}.pkl"
        images = [(i, str(folder / "JPEGImages" / f"{i}.jpg")) for i in ids]
        record = dataset_record(dataset, images)
        write_proposal_file(str(p[f"proposals_{name}"]), ids, [box] * len(ids), dataset=record)
    # broken copies of the set, one defect each
    p["broken"] = {}
    for defect in ("truncated", "unreadable", "no_pose"):
        p["broken"][defect] = p["root"] / f"broken_{defect}"
        shutil.copytree(voc, p["broken"][defect] / "synthetic_voc")
    image = p["broken"]["truncated"] / "synthetic_voc" / "JPEGImages" / "000001.jpg"
    image.write_bytes(image.read_bytes()[:-200])
    (p["broken"]["unreadable"] / "synthetic_voc" / "JPEGImages" / "000004.jpg").write_bytes(b"?")
    anno = p["broken"]["no_pose"] / "synthetic_voc" / "Annotations" / "000005.xml"
    anno.write_text(re.sub(r"\s*<pose>[^<]*</pose>", "", anno.read_text()))
    images = np.empty((1,), dtype=object)
    images[0] = "000004"
    boxes = np.empty((1,), dtype=object)
    boxes[0] = np.array([[1, 1, 10, 10]], dtype=np.float64)
    p["partial_mat"] = p["root"] / "partial.mat"
    scipy.io.savemat(str(p["partial_mat"]), {"images": images, "boxes": boxes})


def _identity_onnx(path):
    """An ONNX model that is not a detector (y = x)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    value = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in "xy"]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "id", value[:1], value[1:]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def run_tool_quietly(tool, argv):
    from accel_det.utils.cli import run_tool
    from tests.workflows.test_imagenet_tools import load_tool

    module = load_tool(tool)
    return run_tool(module.main, module.build_parser(), [str(a) for a in argv])


def run_process(tool, argv, env, fail_write=None, fsize_kb=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), **THREADS, **env)
    command = [sys.executable, str(REPO / "tools" / f"{tool}.py"), *map(str, argv)]
    if fail_write:
        name, code = fail_write
        command[1:1] = [str(REPO / "tests" / "write_fault.py"), name, str(code)]
    if fsize_kb:
        command = ["bash", "-c", f'ulimit -f {fsize_kb}; exec "$@"', "-", *command]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=str(REPO),
    )
    return result.returncode, result.stderr


def error_lines(stderr, log_messages=()):
    """stderr without log records (in this process: the messages pytest captured) and
    environment noise."""
    logged = set(log_messages)
    return [
        line
        for line in stderr.strip().splitlines()
        if not any(p.match(line) for p in (ENVIRONMENT_NOISE, LOG_RECORD, LOG_TABLE_ROW))
        and line not in logged
    ]


def _marks(case):
    return [pytest.mark.xfail(reason=case.xfail, strict=False)] if case.xfail else []


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=_marks(c)) for c in CASES])
def test_bad_input(case, paths, capsys, caplog, monkeypatch):
    earlier = {path: path.read_bytes() for path in case.earlier(paths)}
    listing = {path: sorted(os.listdir(path)) for path in {e.parent for e in earlier}}
    if case.process:
        env = {"DETECTRON2_DATASETS": str(paths["datasets"]), **case.env(paths)}
        code, stderr = run_process(case.tool, case.argv(paths), env, case.fail_write, case.fsize_kb)
    else:
        if case.fail_write:
            failing_writes(monkeypatch, *case.fail_write)
        code, stderr = run_in_process(case.tool, case.argv(paths), capsys)
        monkeypatch.undo()
    lines = error_lines(stderr, [] if case.process else caplog.messages)
    assert code == case.code, stderr
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert case.message in lines[0], lines[0]
    assert "weights_only" not in lines[0], lines[0]  # torch's advice to load a file unsafely
    for path, data in earlier.items():
        assert path.exists() and path.read_bytes() == data, f"{path} was changed"
    for folder, names in listing.items():  # nothing left behind either (no temporary files)
        assert _kept(os.listdir(folder), case) == _kept(names, case), folder
    for path in case.absent(paths):
        assert not path.exists(), f"{path} exists: the input ran code"


def _kept(names, case):
    return sorted(n for n in names if not any(fnmatch.fnmatch(n, a) for a in case.allowed_new))


def test_debug_shows_the_traceback(paths):
    """A real process: one line; with --debug the error propagates (a traceback)."""
    argv = compress(paths, "prev", "--weights", paths["garbage"])
    code, stderr = run_process("compress_backbone", argv, {})
    lines = error_lines(stderr)
    assert (
        code == 2
        and len(lines) == 1
        and lines[0].startswith(f"error: cannot read VGG-16 weights file {paths['garbage']}: ")
    )
    with pytest.raises(
        AccelDetError, match="cannot read VGG-16 weights file"
    ):  # propagates: Python prints the traceback
        run_tool_quietly("compress_backbone", [*argv, "--debug"])


def test_weights_that_would_run_code_are_refused_unrun(paths, capsys):
    code, err = run_in_process(
        "compress_backbone", compress(paths, "prev", "--weights", paths["evil"]), capsys
    )
    assert code == 2 and "Weights only load failed" in err and not paths["pwned"].exists()


def test_resume_writes_the_outputs_a_failed_write_left_undone(paths, capsys, monkeypatch):
    """OUT.json cannot be written: neither output is replaced, the checkpoint stays, the next run
    is pointed to --resume, and --resume writes the pair (the same model as an uninterrupted
    run)."""
    from accel_det.utils.io import sha256_file

    out = paths["out"]
    failing_writes(monkeypatch, "again.json", errno.ENOSPC)
    code, err = run_in_process("compress_backbone", compress(paths, "again"), capsys)
    monkeypatch.undo()
    assert code == 2 and "again.json: no space left on device" in err and "--resume" in err, err
    assert (out / "again.checkpoint.pth").exists() and not (out / "again.pth").exists()
    code, err = run_in_process(
        "compress_backbone", compress(paths, "again", overwrite=False), capsys
    )
    assert code == 2 and "pass --resume to continue it" in err, err
    argv = compress(paths, "again", "--resume", overwrite=False)
    code, err = run_in_process("compress_backbone", argv, capsys)
    assert code == 0, err
    record = json.loads((out / "again.json").read_text())
    assert record["outputs"]["weights_sha256"] == sha256_file(str(out / "again.pth"))
    assert not (out / "again.checkpoint.pth").exists()
    resumed = torch.load(out / "again.pth", weights_only=True)
    reference = torch.load(f"{paths['reference']}.pth", weights_only=True)
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)


def test_finetune_never_leaves_half_a_pair_and_resume_writes_it(paths, capsys, monkeypatch):
    """model_final.json cannot be written: neither model_final file is there afterwards (no
    weights without their record), the checkpoint is, and --resume writes the pair."""
    from accel_det.utils.io import sha256_file

    out = paths["root"] / "ft_full"
    argv = ["--weights", paths["weights"], "--train", paths["images"], "--output", out]
    argv += ["--max-iters", "2", "--batch-size", "8", "--log-period", "1", *SMALL]
    failing_writes(monkeypatch, "model_final.json", errno.ENOSPC)
    code, err = run_in_process("finetune_imagenet", argv, capsys)
    monkeypatch.undo()
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1, err
    assert lines[0] == f"error: cannot write {out / 'model_final.json'}: no space left on device"
    assert sorted(n for n in os.listdir(out) if n.startswith(".") or "final" in n) == []
    assert (out / "last_checkpoint.pth").exists()
    code, err = run_in_process("finetune_imagenet", argv, capsys)
    assert code == 2 and "or --resume to continue it" in err, err
    code, err = run_in_process("finetune_imagenet", [*argv, "--resume"], capsys)
    assert code == 0, err
    record = json.loads((out / "model_final.json").read_text())
    assert record["outputs"]["weights_sha256"] == sha256_file(str(out / "model_final.pth"))


def test_matrix_covers_every_tool():
    assert {c.tool for c in CASES} == {
        "compress_backbone",
        "eval_imagenet",
        "finetune_imagenet",
        "train_net",
        "make_proposals",
        "convert_vgg16",
        "export_model",
        "evaluate_exported",
        "compress_detector",
        "benchmark_rcnn",
    }
    assert len(CASES) >= 12 and len({c.id for c in CASES}) == len(CASES)


ERRORS_DOC = REPO / "docs" / "errors.md"
TABLE_BEGIN = "<!-- BEGIN generated by `python tests/test_errors.py`: do not edit by hand -->"
TABLE_END = "<!-- END generated -->"


def markdown_table() -> str:
    """The errors table of docs/errors.md: situation, the message asserted, exit code; the known
    limitations (cases marked xfail) below."""
    rows = [
        "| Tool | Situation | Message (`error: ...`, one line; a fragment) | Exit code |",
        "|---|---|---|---|",
    ]
    limitations = []
    for case in CASES:
        note = ""
        if case.xfail:
            limitations.append(
                f"{len(limitations) + 1}. `{case.tool}`, {case.situation}: {case.xfail}."
            )
            note = f" (known limitation {len(limitations)})"
        rows.append(
            f"| `{case.tool}` | {case.situation}{note} | `{case.message.strip()}` | {case.code} |"
        )
    return "\n".join(
        rows
        + ([""] + ["Known limitations (tests marked xfail):"] + limitations if limitations else [])
    )


def with_table(doc: str, table: str) -> str:
    """``doc`` with the text between its generated-table markers replaced by ``table``."""
    before, begin, rest = doc.partition(TABLE_BEGIN)
    _, end, after = rest.partition(TABLE_END)
    assert begin and end, f"{ERRORS_DOC} lost its generated-table markers"
    return f"{before}{TABLE_BEGIN}\n{table}\n{TABLE_END}{after}"


def test_errors_doc_is_current():
    """docs/errors.md holds the table of the cases above (``python tests/test_errors.py``
    rewrites it)."""
    doc = ERRORS_DOC.read_text(encoding="utf-8")
    assert doc == with_table(doc, markdown_table()), (
        "docs/errors.md is out of date: run `python tests/test_errors.py`"
    )


if __name__ == "__main__":
    text = ERRORS_DOC.read_text(encoding="utf-8")
    ERRORS_DOC.write_text(with_table(text, markdown_table()), encoding="utf-8")
    print(f"wrote the errors table ({len(CASES)} cases) into {ERRORS_DOC.relative_to(REPO)}")
