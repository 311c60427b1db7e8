"""The bad-input matrix: every tool, given a bad input, exits with a non-zero code and one line
``error: ...`` on stderr (no traceback unless --debug), and an earlier output in the output
location is still there, byte for byte. Besides the error line stderr holds only log records
(e.g. the warnings that name each unreadable image before "too few readable images").

The accel-det tools without Detectron2 run in this process through ``run_tool`` (what their
command line calls; log records go to pytest's log capture, not to stderr); the Detectron2 tools
run as real processes, with ``DETECTRON2_DATASETS`` pointing at a tiny synthetic VOC set.
``python tests/test_errors.py`` prints the README's "Errors" table from the cases below.
"""

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import pytest
import torch

from accel_det.errors import AccelDetError
from tests.helpers import REPO  # noqa: E402

sys.path.insert(0, str(REPO))

from tests.workflows.test_imagenet_tools import COMPRESS, SMALL, THREADS, run_in_process, work  # noqa: E402,F401

# Lines of the environment, not of the tools: torch warns on import when nvcc exists but no GPU.
ENVIRONMENT_NOISE = re.compile(r"^[WI]\d{4} .*cpp_extension\.py:\d+\] No CUDA runtime is found")
# accel_det.utils.cli's log format ([12:00:00 accel_det.x] WARNING ...)
LOG_RECORD = re.compile(r"^\[\d\d:\d\d:\d\d [\w.]+\] (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


@dataclass
class Case:
    id: str
    situation: str  # for the README table
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
    # new files allowed in an earlier output's folder (none so far)
    allowed_new: Sequence[str] = ()


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


def prev(p):
    return [p["out"] / "prev.pth", p["out"] / "prev.json"]


def d2_prev(p):
    return [p["d2out"] / "model_final.pth", p["d2out"] / "eval_results.json"]


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
        ", fewer than the 50 asked for",
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
        "checkpoint-other-inputs",
        "--resume with a checkpoint of other inputs",
        "compress_backbone",
        lambda p: compress(p, "stopped", "--resume", "--seed", "1", overwrite=False),
        "was made with another images sha256",
        lambda p: [p["out"] / "stopped.checkpoint.pth", p["out"] / "stopped.checkpoint.json"],
    ),
    Case(
        "output-unwritable",
        "output folder not writable",
        "compress_backbone",
        lambda p: compress(p, "x", "--output", p["unwritable"] / "new" / "o"),
        "is not writable",
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
        "d2-bad-key",
        "unknown config key",
        "train_net",
        lambda p: d2(p, "demo/vgg16_synthetic", "MODEL.NOPE", "1"),
        "Non-existent key: MODEL.NOPE",
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
]


@pytest.fixture(scope="module")
def paths(work, tmp_path_factory):  # noqa: F811
    """Bad inputs, earlier outputs, a tiny synthetic VOC set and its proposal files."""
    from accel_det.data import make_image_folder

    root = tmp_path_factory.mktemp("errors")
    p = {
        "root": root,
        "weights": work["weights"],
        "images": work["images"],
        "reference": work["out"],
        "out": root / "out",
        "ft": root / "ft",
        "d2out": root / "d2out",
        "empty": root / "empty",
        "flat": root / "flat",
        "unreadable": root / "unreadable",
        "garbage": root / "garbage.pth",
        "resnet": root / "resnet.pth",
        "nan": root / "nan.pth",
        "evil": root / "evil.pth",
    }
    for folder in ("out", "ft", "d2out", "empty"):
        p[folder].mkdir()
    make_image_folder(str(p["flat"]), num_classes=2, images_per_class=1, size=32, layout="flat")
    make_image_folder(str(p["unreadable"]), num_classes=2, images_per_class=1, size=72)
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
    # earlier outputs that must survive
    shutil.copy(f"{work['out']}.pth", p["out"] / "prev.pth")
    shutil.copy(f"{work['out']}.json", p["out"] / "prev.json")
    for name, data in (
        ("eval.json", b'{"earlier": true}\n'),
        ("d2.pth", b"earlier checkpoint"),
        ("props.pkl", b"earlier proposals"),
    ):
        (p["out"] / name).write_bytes(data)
    (p["ft"] / "model_final.pth").write_bytes(b"earlier fine-tuning")
    (p["d2out"] / "model_final.pth").write_bytes(b"earlier detector")
    (p["d2out"] / "eval_results.json").write_bytes(b'{"bbox": {"AP50": 1.0}}\n')
    code = run_tool_quietly(
        "compress_backbone", compress(p, "stopped", "--stop-after", "conv1_2", overwrite=False)
    )
    assert code == 1 and (p["out"] / "stopped.checkpoint.pth").exists()
    # unwritable: a read-only folder, or for root a kernel folder
    if os.geteuid() != 0:
        p["unwritable"] = root / "readonly"
        p["unwritable"].mkdir(mode=0o500)
    else:
        p["unwritable"] = Path("/sys/kernel")
    _synthetic_voc(p)
    yield p
    if os.geteuid() != 0:
        p["unwritable"].chmod(0o700)


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
    from accel_det.detection.proposals import write_proposal_file

    p["datasets"] = p["root"] / "datasets"
    make_synthetic_voc(
        str(p["datasets"] / "synthetic_voc"),
        num_trainval=3,
        num_test=2,
        image_size=64,
        progress=False,
    )
    box = np.array([[0, 0, 20, 20]], dtype=np.float32)
    for name, ids in (
        ("trainval", ["000001", "000002", "000003"]),
        ("test", ["000004", "000005"]),
        ("partial", ["000004"]),
    ):
        p[f"proposals_{name}"] = p["root"] / f"{name}.pkl"
        write_proposal_file(str(p[f"proposals_{name}"]), ids, [box] * len(ids))
    images = np.empty((1,), dtype=object)
    images[0] = "000004"
    boxes = np.empty((1,), dtype=object)
    boxes[0] = np.array([[1, 1, 10, 10]], dtype=np.float64)
    p["partial_mat"] = p["root"] / "partial.mat"
    scipy.io.savemat(str(p["partial_mat"]), {"images": images, "boxes": boxes})


def run_tool_quietly(tool, argv):
    from accel_det.utils.cli import run_tool
    from tests.workflows.test_imagenet_tools import load_tool

    module = load_tool(tool)
    return run_tool(module.main, module.build_parser(), [str(a) for a in argv])


def run_process(tool, argv, env):
    env = dict(os.environ, PYTHONPATH=str(REPO), **THREADS, **env)
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / f"{tool}.py"), *map(str, argv)],
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
        if not ENVIRONMENT_NOISE.match(line) and not LOG_RECORD.match(line) and line not in logged
    ]


def _marks(case):
    return [pytest.mark.xfail(reason=case.xfail, strict=False)] if case.xfail else []


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=_marks(c)) for c in CASES])
def test_bad_input(case, paths, capsys, caplog):
    earlier = {path: path.read_bytes() for path in case.earlier(paths)}
    listing = {path: sorted(os.listdir(path)) for path in {e.parent for e in earlier}}
    if case.process:
        env = {"DETECTRON2_DATASETS": str(paths["datasets"]), **case.env(paths)}
        code, stderr = run_process(case.tool, case.argv(paths), env)
    else:
        code, stderr = run_in_process(case.tool, case.argv(paths), capsys)
    lines = error_lines(stderr, [] if case.process else caplog.messages)
    assert code == case.code, stderr
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert case.message in lines[0], lines[0]
    for path, data in earlier.items():
        assert path.exists() and path.read_bytes() == data, f"{path} was changed"
    for folder, names in listing.items():  # nothing left behind either (no temporary files)
        assert sorted(set(os.listdir(folder)) - set(case.allowed_new)) == sorted(
            set(names) - set(case.allowed_new)
        ), folder


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


def test_matrix_covers_every_tool():
    assert {c.tool for c in CASES} == {
        "compress_backbone",
        "eval_imagenet",
        "finetune_imagenet",
        "train_net",
        "make_proposals",
        "convert_vgg16",
    }
    assert len(CASES) >= 12 and len({c.id for c in CASES}) == len(CASES)


def markdown_table() -> str:
    """The README's "Errors" table: situation, the message asserted, exit code; known issues
    below."""
    rows = [
        "| Tool | Situation | Message (`error: ...`, one line; a fragment) | Exit code |",
        "|---|---|---|---|",
    ]
    issues = []
    for case in CASES:
        note = ""
        if case.xfail:
            issues.append(f"{len(issues) + 1}. `{case.tool}`, {case.situation}: {case.xfail}.")
            note = f" (known issue {len(issues)})"
        rows.append(
            f"| `{case.tool}` | {case.situation}{note} | `{case.message.strip()}` | {case.code} |"
        )
    return "\n".join(
        rows + ([""] + ["Known issues (tests marked xfail):"] + issues if issues else [])
    )


if __name__ == "__main__":
    print(markdown_table())
