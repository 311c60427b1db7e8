"""accel_det.utils.io's writers when the disk is full or a file size limit is hit: one error that
names the file and the cause, the earlier file byte-identical, no temporary file left; fsync before
the rename; OUT.pth and OUT.json never a half pair; the temporaries of killed runs swept. (The
tools' side of it is in tests/test_errors.py.)"""

import errno
import json
import os
import subprocess
import sys

import pytest
import torch

from accel_det.errors import AccelDetError
from accel_det.utils import io
from tests.write_fault import failing_writes

CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EFBIG: "file too large",
    errno.EDQUOT: "disk quota exceeded",
}
WRITERS = {
    "torch": lambda path: io.atomic_torch_save({"w": torch.arange(1000.0)}, str(path)),
    "json": lambda path: io.atomic_write_json({"records": list(range(1000))}, str(path)),
    "text": lambda path: io.atomic_write_text("x" * 1000, str(path)),
}


@pytest.mark.parametrize("code", sorted(CAUSES))
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_write_out_of_room_is_one_error_and_the_earlier_file_stays(
    writer, code, tmp_path, monkeypatch
):
    path = tmp_path / "out.bin"
    path.write_bytes(b"earlier output")
    failing_writes(monkeypatch, "out.bin", code)
    with pytest.raises(AccelDetError) as raised:
        WRITERS[writer](path)
    assert str(raised.value) == f"cannot write {path}: {CAUSES[code]}"
    assert path.read_bytes() == b"earlier output" and os.listdir(tmp_path) == ["out.bin"]


def test_torch_save_under_a_real_file_size_limit(tmp_path):
    """torch.save reports EFBIG as "[enforce fail at inline_container.cc] unexpected pos"; the
    writer finds the cause. A real process under ``ulimit -f``, as a user would hit it."""
    path = tmp_path / "big.pth"
    path.write_bytes(b"earlier")
    code = (
        "import sys, torch; from accel_det.utils.io import atomic_torch_save\n"
        "try:\n    atomic_torch_save({'w': torch.zeros(100000)}, sys.argv[1])\n"
        "except Exception as e:\n    print(type(e).__name__, e)"
    )
    result = subprocess.run(
        ["bash", "-c", 'ulimit -f 100; exec "$@"', "-", sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert result.stdout.strip() == f"AccelDetError cannot write {path}: file too large", (
        result.stdout + result.stderr
    )
    assert path.read_bytes() == b"earlier" and os.listdir(tmp_path) == ["big.pth"]


def test_the_temporary_is_flushed_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(source, target):
        events.append(("replace", str(source)))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    io.atomic_write_text("data", str(tmp_path / "out.txt"))
    temporary = events[1][1]
    assert os.path.basename(temporary).startswith(".out.txt.") and temporary.endswith(".tmp")
    assert events == [("fsync", temporary), ("replace", temporary), ("fsync", str(tmp_path))]


def pair(tmp_path, value):
    weights, record = tmp_path / "out.pth", tmp_path / "out.json"
    written = io.atomic_save_pair(
        {"w": torch.full((3,), float(value))}, str(weights), {"run": value}, str(record)
    )
    return weights, record, written


def test_the_record_goes_in_last_and_carries_the_weights_sha256(tmp_path, monkeypatch):
    weights, record, written = pair(tmp_path, 1)
    assert json.loads(record.read_text()) == written
    assert written["outputs"]["weights_sha256"] == io.sha256_file(str(weights))
    earlier = weights.read_bytes()
    # killed between the two renames: the weights are new, the record is gone (never the old one)
    real_replace, calls = os.replace, []

    def replace(source, target):
        calls.append(target)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        pair(tmp_path, 2)
    assert [os.path.basename(c) for c in calls] == ["out.pth", "out.json"]
    assert weights.read_bytes() != earlier and not record.exists()
    assert sorted(os.listdir(tmp_path)) == ["out.pth"]


@pytest.mark.parametrize("name", ["out.pth", "out.json"])
def test_a_pair_that_cannot_be_written_leaves_the_earlier_pair(tmp_path, monkeypatch, name):
    weights, record, _ = pair(tmp_path, 1)
    earlier = weights.read_bytes(), record.read_bytes()
    failing_writes(monkeypatch, name, errno.ENOSPC)
    with pytest.raises(AccelDetError, match=f"cannot write .*{name}: no space left on device"):
        pair(tmp_path, 2)
    assert (weights.read_bytes(), record.read_bytes()) == earlier
    assert sorted(os.listdir(tmp_path)) == ["out.json", "out.pth"]


def test_temporaries_of_killed_runs_are_swept_and_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {
            "dead": f".out.pth.{io.HOST}-{dead.pid}.abc123.tmp",
            "live": f".out.pth.{io.HOST}-{live.pid}.abc123.tmp",
            "mine": f".out.json.{io.HOST}-{os.getpid()}.abc123.tmp",
            "other host": f".out.pth.0badc0de-{dead.pid}.abc123.tmp",
            "not ours": ".out.pth.abc123.tmp",
            "output": "out.pth",
        }
        for name in names.values():
            (tmp_path / name).write_bytes(b"")
        io.check_writable_folder(str(tmp_path))  # what a tool does first with its output folder
        kept = set(os.listdir(tmp_path))
    finally:
        live.kill()
        live.wait()
    assert kept == {name for what, name in names.items() if what != "dead"}


def test_a_temporary_name_says_which_process_writes_it(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda s, t: (seen.append(s), real_replace(s, t)))
    io.atomic_write_text("x", str(tmp_path / "out.txt"))
    match = io.TEMPORARY.match(os.path.basename(seen[0]))
    assert match and match["name"] == "out.txt" and int(match["pid"]) == os.getpid()


def test_finetune_points_to_resume_when_its_outputs_sit_beside_a_checkpoint(tmp_path):
    """model_final.pth without model_final.json: a run stopped while writing them; --resume
    finishes it, --overwrite would throw the checkpoint away."""
    from accel_det.workflows.imagenet.training import CHECKPOINT, FINAL_WEIGHTS, check_output

    (tmp_path / FINAL_WEIGHTS).write_bytes(b"weights")
    (tmp_path / CHECKPOINT).write_bytes(b"checkpoint")
    with pytest.raises(AccelDetError, match="model_final.pth already exists; .* or --resume"):
        check_output(str(tmp_path), resume=False, overwrite=False)


def test_an_append_to_the_metrics_log_out_of_room_names_the_file(tmp_path, monkeypatch):
    from accel_det.workflows.imagenet.training import MetricsLog

    log = MetricsLog(str(tmp_path), None, enabled=True, tensorboard=False)
    log.write(1, {"train/loss": 1.0})
    failing_writes(monkeypatch, "metrics.json", errno.ENOSPC)
    with pytest.raises(AccelDetError, match="metrics.json: no space left on device"):
        log.write(2, {"train/loss": 0.5})


# --------------------------------------------------------------------------- sets of files
def old_pair(tmp_path):
    xml, bin_ = tmp_path / "model.xml", tmp_path / "model.bin"
    xml.write_bytes(b"old xml")
    bin_.write_bytes(b"old bin")
    return xml, bin_


def write_pair(xml, bin_, replace=True):
    with io.atomic_files([str(xml), str(bin_)], replace=replace) as (new_xml, new_bin):
        with open(new_xml, "wb") as f:
            f.write(b"new xml")
        with open(new_bin, "wb") as f:
            f.write(b"new bin")


def test_openvino_pair_killed_between_renames_is_never_mixed(tmp_path, monkeypatch):
    """OpenVINO reads X.bin beside X.xml: the entry point X.xml goes last, and an existing one is
    removed first, so a kill between the renames leaves no X.xml, never the old one beside the new
    X.bin."""
    xml, bin_ = old_pair(tmp_path)
    real_replace, calls = os.replace, []

    def replace(source, target):
        calls.append(os.path.basename(target))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process dies here
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        write_pair(xml, bin_)
    assert calls == ["model.bin", "model.xml"]
    assert not xml.exists() and bin_.read_bytes() == b"new bin"
    monkeypatch.undo()
    write_pair(xml, bin_)
    assert (xml.read_bytes(), bin_.read_bytes()) == (b"new xml", b"new bin")
    assert sorted(os.listdir(tmp_path)) == ["model.bin", "model.xml"]


def test_a_set_is_flushed_before_it_is_published_and_its_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
        real_fsync(fd)

    def replace(source, target):
        events.append(("replace", os.path.basename(target)))
        real_replace(source, target)

    xml, bin_ = old_pair(tmp_path)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_pair(xml, bin_)
    staging = events[2][1]
    assert staging.startswith(".model.xml.") and staging.endswith(".tmp")
    assert events == [
        ("fsync", "model.xml"),  # the staged files
        ("fsync", "model.bin"),
        ("fsync", staging),
        ("fsync", tmp_path.name),  # the old X.xml removed first
        ("replace", "model.bin"),
        ("replace", "model.xml"),
        ("fsync", tmp_path.name),
    ]


def test_a_killed_export_folder_is_swept_by_the_next_run(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    staging = tmp_path / f".model.xml.{io.HOST}-{dead.pid}.abc123.tmp"
    staging.mkdir()
    (staging / "model.bin").write_bytes(b"a full model")
    io.check_writable_folder(str(tmp_path))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("first", [True, False], ids=["entry-point-appears", "data-appears"])
def test_without_replace_a_file_that_appears_meanwhile_is_kept(tmp_path, first):
    """Another run writes one of the outputs while this one works: without --overwrite this one
    is refused with one line, keeps nothing of its own and leaves the other run's file."""
    xml, bin_ = tmp_path / "model.xml", tmp_path / "model.bin"
    theirs = xml if first else bin_
    with pytest.raises(AccelDetError) as error:
        with io.atomic_files([str(xml), str(bin_)], replace=False) as (new_xml, new_bin):
            for path in (new_xml, new_bin):
                with open(path, "wb") as f:
                    f.write(b"mine")
            theirs.write_bytes(b"theirs")
    assert str(error.value) == (
        f"output {theirs} already exists (another run wrote it meanwhile); pass --overwrite to "
        "replace it"
    )
    assert os.listdir(tmp_path) == [theirs.name] and theirs.read_bytes() == b"theirs"


@pytest.mark.parametrize("links", [True, False], ids=["hard-link", "renameat2"])
def test_a_pair_without_replace_is_refused_if_its_record_appears(tmp_path, monkeypatch, links):
    weights, record = tmp_path / "out.pth", tmp_path / "out.json"
    if not links:  # a file system without hard links: renameat2(RENAME_NOREPLACE)
        monkeypatch.setattr(os, "link", lambda *a: (_ for _ in ()).throw(OSError(errno.EPERM, "")))
    real_save = io._torch_save

    def save_then_another_run_writes(state, temporary, path):
        real_save(state, temporary, path)
        record.write_text("theirs")

    monkeypatch.setattr(io, "_torch_save", save_then_another_run_writes)
    with pytest.raises(AccelDetError, match="out.json already exists .*pass --overwrite"):
        io.atomic_save_pair({"w": torch.zeros(2)}, str(weights), {}, str(record), replace=False)
    assert os.listdir(tmp_path) == ["out.json"] and record.read_text() == "theirs"
    monkeypatch.undo()
    io.atomic_save_pair({"w": torch.zeros(2)}, str(weights), {}, str(record), replace=True)
    assert json.loads(record.read_text())["outputs"]["weights_sha256"] == io.sha256_file(
        str(weights)
    )
