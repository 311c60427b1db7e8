"""tools/install_detectron2.py, offline: a small fake ``sal_detectron2`` wheel built here (the
hash refusal, the repack, the record), the pinned official source, the isolated checks. Nothing
is installed: pip and git are replaced by a recorder (the check scripts run for real, they only
import)."""

import base64
import csv
import hashlib
import importlib.util
import io
import json
import re
import subprocess
import sys
import tempfile
import zipfile

import pytest

from tests.helpers import REPO

COMPILED = "detectron2/_C.cpython-310-x86_64-linux-gnu.so"
FAKE_METADATA = """\
Metadata-Version: 2.1
Name: sal-detectron2
Version: 0.7.2
Requires-Python: >=3.7
Requires-Dist: Pillow>=7.1
Requires-Dist: numpy<2
Requires-Dist: fvcore<0.1.6,>=0.1.5
Requires-Dist: dataclasses; python_version < "3.7"
Provides-Extra: all
Requires-Dist: shapely; extra == "all"

Detectron2 is FAIR's next-generation platform for object detection.
"""


@pytest.fixture
def tool():
    """The script as a module (a fresh one each test, so that patches do not leak)."""
    spec = importlib.util.spec_from_file_location(
        "install_detectron2_under_test", REPO / "tools" / "install_detectron2.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def wheel(tmp_path):
    """A small stand-in for sal_detectron2-0.7.2-py3-none-any.whl with the real one's flaws: a
    stray top-level ``tools`` package, a compiled ``_C`` for Python 3.10, ``numpy<2``."""
    path = tmp_path / "sal_detectron2-0.7.2-py3-none-any.whl"
    files = {
        "detectron2/__init__.py": '__version__ = "0.7.2"\n',
        "detectron2/engine/__init__.py": "from .defaults import *  # noqa\n",
        "detectron2/engine/defaults.py": "def default_setup(cfg, args):\n    pass\n",
        "detectron2/model_zoo/__init__.py": "",
        "detectron2/model_zoo/configs/Base-RCNN-FPN.yaml": "MODEL:\n  META_ARCHITECTURE: x\n",
        "detectron2/__pycache__/__init__.cpython-310.pyc": "bytecode",
        COMPILED: "\x7fELF compiled",
        "tools/__init__.py": "",
        "tools/train_net.py": "print('a stray tools package')\n",
        "sal_detectron2-0.7.2.dist-info/METADATA": FAKE_METADATA,
        "sal_detectron2-0.7.2.dist-info/WHEEL": "Wheel-Version: 1.0\nTag: py3-none-any\n",
        "sal_detectron2-0.7.2.dist-info/LICENSE": "Apache License 2.0\n",
        "sal_detectron2-0.7.2.dist-info/top_level.txt": "detectron2\ntools\n",
        "sal_detectron2-0.7.2.dist-info/RECORD": "",
    }
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("detectron2/", "")  # a folder entry
        for name, text in files.items():
            z.writestr(name, text)
    return path


@pytest.fixture
def recorder(tool, monkeypatch):
    """Replace every subprocess of the script: pip "succeeds" (``pip show`` finds nothing), git
    must not be called; the commands are recorded."""
    calls = []

    def run(cmd, **kwargs):
        calls.append(list(cmd))
        assert cmd[0] != "git", cmd
        return subprocess.CompletedProcess(cmd, 1 if "show" in cmd else 0, stdout="")

    monkeypatch.setattr(tool, "_run", lambda cmd, **kwargs: run(cmd, **kwargs))
    monkeypatch.setattr(tool.subprocess, "run", run)
    return calls


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pip_installs(calls):
    return [c[c.index("install") + 1 :] for c in calls if "install" in c]


# --------------------------------------------------------------------------- the fallback wheel


def test_a_wheel_without_the_pinned_hash_is_refused_before_pip_runs(
    tool, wheel, recorder, tmp_path
):
    assert re.fullmatch(r"[0-9a-f]{64}", tool.FALLBACK_SHA256)
    with pytest.raises(
        tool.InstallError, match=rf"sha256 {sha256(wheel)} does not match the pinned"
    ):
        tool.install_fallback_wheel(wheel)
    # a corrupted copy of a wheel whose hash was pinned (here: by the test)
    pinned = sha256(wheel)
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt = tmp_path / "corrupt" / wheel.name
    corrupt.parent.mkdir()
    corrupt.write_bytes(bytes(data))
    with pytest.raises(tool.InstallError, match=rf"does not match the pinned {pinned}; refusing"):
        tool.install_fallback_wheel(corrupt, expected_sha256=pinned)
    assert recorder == []
    # the command line: one line, exit 1, nothing recorded, nothing installed
    record = tmp_path / "source.json"
    argv = ["--source", "wheel", "--wheel-file", str(corrupt), "--force", "--record", str(record)]
    assert tool.main(argv) == 1
    assert not record.exists() and pip_installs(recorder) == []


def test_the_repacked_wheel_has_only_detectron2_and_relaxed_requirements(tool, wheel, tmp_path):
    out, summary = tool.repack_wheel(wheel, tmp_path, sha256(wheel))
    assert out.name == "detectron2-0.7.2+sal-py3-none-any.whl"
    with zipfile.ZipFile(out) as z:
        names = z.namelist()
        files = {n: z.read(n) for n in names}
    dist_info = "detectron2-0.7.2+sal.dist-info"
    assert {n.split("/")[0] for n in names} == {"detectron2", dist_info}
    assert not any(n.startswith("tools/") or "/tools/" in n for n in names)
    assert not any("_C" in n.rsplit("/", 1)[-1] or n.endswith((".so", ".pyc")) for n in names)
    assert "detectron2/model_zoo/configs/Base-RCNN-FPN.yaml" in names and summary["configs"] == 1
    assert summary["dropped_top_level"] == ["tools/"] and summary["dropped_native"] == [COMPILED]

    metadata = files[f"{dist_info}/METADATA"].decode()
    requires = re.findall(r"^Requires-Dist: (.*)$", metadata, flags=re.M)
    assert "numpy" in requires and not any(r.startswith("numpy<") for r in requires)
    assert {"fvcore>=0.1.5", "iopath>=0.1.7", "setuptools<82", "Pillow>=7.1"} <= set(requires)
    assert not any("dataclasses" in r for r in requires)
    assert 'shapely; extra == "all"' in requires and "Provides-Extra: all" in metadata
    assert re.search(r"^Name: detectron2$", metadata, re.M)
    assert b"Root-Is-Purelib: true" in files[f"{dist_info}/WHEEL"]
    provenance = json.loads(files[f"{dist_info}/accel_det_provenance.json"])
    assert provenance["source_sha256"] == sha256(wheel)
    assert provenance["dropped_top_level"] == ["tools/"]

    rows = list(csv.reader(io.StringIO(files[f"{dist_info}/RECORD"].decode())))
    assert {r[0] for r in rows} == set(names)
    for name, digest, size in rows:
        if name.endswith("RECORD"):
            continue
        expected = base64.urlsafe_b64encode(hashlib.sha256(files[name]).digest()).rstrip(b"=")
        assert digest == "sha256=" + expected.decode() and int(size) == len(files[name])


def test_the_fallback_install_and_its_record(tool, wheel, recorder, tmp_path, monkeypatch):
    info = tool.install_fallback_wheel(wheel, tmp_path / "keep", expected_sha256=sha256(wheel))
    (installed,) = pip_installs(recorder)
    assert recorder[-1][:5] == [
        sys.executable,
        "-m",
        "pip",
        "--disable-pip-version-check",
        "install",
    ]
    assert installed[0].endswith("/detectron2-0.7.2+sal-py3-none-any.whl")
    assert (tmp_path / "keep" / "detectron2-0.7.2+sal-py3-none-any.whl").is_file()
    assert info == {
        "source": "sal-detectron2-wheel",
        "pypi": "sal-detectron2==0.7.2",
        "sha256": sha256(wheel),
        "repacked_as": "detectron2==0.7.2+sal",
        "dropped": ["tools/", COMPILED],
        "model_zoo_configs": 1,
    }
    # the whole command line, the pinned hash replaced by the fake wheel's (a test-only patch)
    monkeypatch.setattr(tool, "FALLBACK_SHA256", sha256(wheel))
    check = {"ok": True, "errors": [], "version": "0.7.2", "dist_version": "0.7.2+sal"}
    monkeypatch.setattr(tool, "check_installation", lambda *a, **k: dict(check, has_C=False))
    record = tmp_path / "source.json"
    argv = ["--source", "wheel", "--wheel-file", str(wheel), "--force", "--record", str(record)]
    assert tool.main(argv) == 0
    recorded = json.loads(record.read_text())
    assert {k: recorded[k] for k in info} == info
    assert recorded["dist_version"] == "0.7.2+sal" and recorded["has_C"] is False
    assert recorded["python"] == sys.version.split()[0]


# --------------------------------------------------------------------------- the official source


def test_the_official_source_is_a_pinned_commit_and_recorded_as_such(
    tool, recorder, tmp_path, monkeypatch
):
    assert re.fullmatch(r"[0-9a-f]{40}", tool.OFFICIAL_COMMIT)
    assert tool.OFFICIAL_COMMIT.startswith("a59f056")  # what sal-detectron2 0.7.2 is built from
    spec = f"git+https://github.com/facebookresearch/detectron2.git@{tool.OFFICIAL_COMMIT}"
    monkeypatch.setattr(tool, "official_source_reachable", lambda *a, **k: True)
    check = {"ok": True, "errors": [], "version": "0.6", "dist_version": "0.6", "has_C": True}
    monkeypatch.setattr(tool, "check_installation", lambda *a, **k: check)
    record = tmp_path / "source.json"
    assert tool.main(["--source", "official", "--force", "--record", str(record)]) == 0
    assert pip_installs(recorder)[-1] == ["--no-build-isolation", spec]
    assert not any(c[0] == "git" for c in recorder)  # no second ls-remote naming another commit
    recorded = json.loads(record.read_text())
    assert recorded["source"] == "official" and recorded["url"] == spec
    assert recorded["commit"] == tool.OFFICIAL_COMMIT


# --------------------------------------------------------------------------- isolated checks


def test_the_checks_do_not_import_files_of_the_working_or_temporary_folder(
    tool, tmp_path, monkeypatch
):
    """A ``json.py`` / ``detectron2.py`` planted in the caller's working folder, in the shared
    temporary folder or on ``PYTHONPATH`` is not imported by the check interpreters."""
    marker = tmp_path / "planted-ran"
    for folder in (tmp_path / "work", tmp_path / "shared-tmp", tmp_path / "pythonpath"):
        folder.mkdir()
        for name in ("json", "detectron2"):
            (folder / f"{name}.py").write_text(f"open({str(marker)!r}, 'a').write('{name} ')\n")
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "shared-tmp"))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "pythonpath"))
    result = tool.check_installation(["json"])
    importable = tool.detectron2_importable()
    assert not marker.exists(), marker.read_text()
    assert importable == (importlib.util.find_spec("detectron2") is not None)
    assert result["ok"] or all("tools" in e for e in result["errors"]), result
