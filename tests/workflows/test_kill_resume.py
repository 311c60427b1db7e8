"""tools/compress_backbone.py survives ``kill -9``: a run killed (a real SIGKILL) before its first
layer and again after a later one, resumed each time with --resume, ends bit-identical to an
uninterrupted run. Determinism: the same seed gives the same plan and weights."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from tests.workflows.test_imagenet_tools import COMPRESS, REPO, THREADS, run, work  # noqa: F401  (work: a module fixture)

TIMINGS = (
    "total_seconds",
    "created",
    "outputs",
    "command",
)  # what differs between two equal runs (and "seconds")


def start(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO), **THREADS)
    return subprocess.Popen(
        [sys.executable, str(REPO / "tools" / "compress_backbone.py"), *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(REPO),
    )


def done_layers(checkpoint: Path):
    """The layers the checkpoint records as finished (it is replaced atomically: always whole)."""
    if not checkpoint.exists():
        return []
    try:
        return torch.load(checkpoint, weights_only=True)["done"]
    except FileNotFoundError:  # replaced between exists() and open()
        return []


def kill_when(process, ready, timeout=120):
    """SIGKILL ``process`` as soon as ``ready()`` holds (polled); fails if it ended first."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, (
            f"the run ended before it could be killed:\n{process.stderr.read()}"
        )
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    process.stderr.close()


def comparable(record):
    record = {k: v for k, v in record.items() if k not in TIMINGS}
    record["options"] = {k: v for k, v in record["options"].items() if k != "output"}
    record["layers"] = {
        name: {k: v for k, v in entry.items() if k != "seconds"}
        for name, entry in record["layers"].items()
    }
    return record


def test_kill_9_twice_then_resume_is_bit_identical(work, tmp_path):  # noqa: F811
    out = tmp_path / "killed"
    checkpoint, info = Path(f"{out}.checkpoint.pth"), Path(f"{out}.checkpoint.json")
    common = ["--weights", work["weights"], "--images", work["images"], "--output", out, *COMPRESS]

    # 1. killed before any layer is finished: as soon as it has recorded its inputs
    kill_when(start(*common), lambda: info.exists())
    assert not Path(f"{out}.pth").exists() and len(done_layers(checkpoint)) <= 1

    # 2. resumed (from nothing, or after conv1_1), killed again once conv3_1 is checkpointed
    kill_when(start(*common, "--resume"), lambda: "conv3_1" in done_layers(checkpoint))
    done = done_layers(checkpoint)
    assert "conv3_1" in done and "conv5_3" not in done and not Path(f"{out}.pth").exists()

    # 3. resumed to the end
    resumed = run("compress_backbone.py", *common, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after conv1_1, conv1_2, conv2_1, conv2_2, conv3_1" in resumed.stderr
    reference = torch.load(f"{work['out']}.pth", weights_only=True)
    state = torch.load(f"{out}.pth", weights_only=True)
    assert state.keys() == reference.keys() and all(
        torch.equal(state[k], reference[k]) for k in reference
    )
    record = json.loads(Path(f"{out}.json").read_text())
    assert (
        comparable(record)["layers"]
        == comparable(json.loads(Path(f"{work['out']}.json").read_text()))["layers"]
    )
    assert not checkpoint.exists() and not info.exists()


def test_same_seed_same_plan_and_weights(work, tmp_path):  # noqa: F811
    """A second run (with --deterministic, which only concerns GPU kernels) is bit-identical."""
    again = run(
        "compress_backbone.py",
        "--weights",
        work["weights"],
        "--images",
        work["images"],
        "--output",
        tmp_path / "again",
        *COMPRESS,
        "--deterministic",
    )
    assert again.returncode == 0, again.stderr
    first = json.loads(Path(f"{work['out']}.json").read_text())
    second = json.loads((tmp_path / "again.json").read_text())
    assert (
        second["options"].pop("deterministic") is True
        and first["options"].pop("deterministic") is False
    )
    assert comparable(second) == comparable(first)
    a = torch.load(f"{work['out']}.pth", weights_only=True)
    b = torch.load(tmp_path / "again.pth", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
