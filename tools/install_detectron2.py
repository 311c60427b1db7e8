#!/usr/bin/env python3
"""Install detectron2 into the environment of the interpreter that runs this script.

It runs before the package and detectron2 are installed (``make venv``), so it is self-contained
and imports nothing from ``accel_det``; that is why it is the one tool exempt from the thin-tools
budget of ``tests/test_layout.py``.

Usage (from the repository root, with the project's virtual env)::

    .venv/bin/python tools/install_detectron2.py [--source auto|official|wheel] [--force]

Strategy (``--source auto``, the default):

a. If ``import detectron2`` already works (checked in a subprocess) and the installation
   passes the checks of step d, there is nothing to do.
b. If github.com answers (``git ls-remote`` with a short timeout), install from the
   official source, as detectron2's INSTALL.md says, at the pinned commit ``OFFICIAL_COMMIT``
   (a59f056, April 2024: the one the fallback wheel is built from), which is also the commit
   recorded: ``pip install --no-build-isolation
   'git+https://github.com/facebookresearch/detectron2.git@<OFFICIAL_COMMIT>'``
   (this compiles detectron2's C++ extension ``_C``).
c. Otherwise fall back to the PyPI wheel ``sal-detectron2==0.7.2`` (upstream detectron2
   at commit a59f056, April 2024, with harmless edits). The downloaded wheel must match a
   pinned sha256. It is *repacked* into a clean pure-Python wheel ``detectron2-0.7.2+sal``:

   * only ``detectron2/**`` is kept: the stray top-level ``tools`` package of that wheel
     would shadow other projects' ``tools/``, and the compiled
     ``detectron2/_C.cpython-310-*.so`` cannot load on other Pythons;
   * its requirements drop the wrong ``numpy<2`` cap, add the missing ``fvcore`` and
     ``iopath``, and add ``setuptools<82`` because ``detectron2.model_zoo`` imports
     ``pkg_resources``, which setuptools 82 removed;
   * it gets a fresh ``.dist-info`` (METADATA, WHEEL, RECORD with sha256/size lines), so
     ``pip show detectron2`` and ``pip uninstall detectron2`` work.

   Without ``_C``: rotated boxes (``nms_rotated``, ``box_iou_rotated``,
   ``ROIAlignRotated``), deformable convolution and the C++ "fast" COCO evaluation are
   unavailable (COCO evaluation falls back to pycocotools). Everything else (Faster
   R-CNN with ROIAlign/NMS from torchvision, training, evaluation, model zoo configs) is
   pure Python.
d. Verify in a subprocess: ``import detectron2.engine, detectron2.modeling,
   detectron2.evaluation, detectron2.data, detectron2.model_zoo`` and no top-level ``tools``
   package in site-packages. The source used is written to ``<sys.prefix>/detectron2-source.json``
   (for a virtual env: ``.venv/detectron2-source.json``).

Only the standard library is used; pip runs as ``sys.executable -m pip``. Every subprocess runs
in a private empty folder, and the checks in isolated mode (``python -I``), so that no file of
the caller's working folder or of the shared temporary folder (a planted ``json.py``) is
imported instead of the real module.
Exit status: 0 on success, 1 on failure (with a one-line error).
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime
import email.parser
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

LOG = logging.getLogger("install_detectron2")

OFFICIAL_GIT_URL = "https://github.com/facebookresearch/detectron2.git"
# upstream a59f056 (2024-04-17), the commit the fallback wheel sal-detectron2 0.7.2 is built from
OFFICIAL_COMMIT = "a59f05630a8f205756064244bf5beb8661f96180"
OFFICIAL_PIP_SPEC = f"git+{OFFICIAL_GIT_URL}@{OFFICIAL_COMMIT}"

FALLBACK_DIST = "sal-detectron2"
FALLBACK_VERSION = "0.7.2"
FALLBACK_SHA256 = "491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561"
REPACKED_NAME = "detectron2"
REPACKED_VERSION = f"{FALLBACK_VERSION}+sal"  # PEP 440 local version label

# Requirements the repacked wheel adds (name -> requirement string).
ADDED_REQUIREMENTS = {
    "fvcore": "fvcore>=0.1.5",
    "iopath": "iopath>=0.1.7",
    # detectron2/model_zoo/model_zoo.py does `import pkg_resources`; setuptools 82 removed it.
    "setuptools": "setuptools<82",
}
# Requirements of the official build that are not in its setup.py or are needed to build it.
OFFICIAL_PREREQUISITES = ["setuptools<82", "wheel", "fvcore>=0.1.5", "iopath>=0.1.7"]

# Modules whose import must work after installation.
REQUIRED_MODULES = [
    "detectron2",
    "detectron2.engine",
    "detectron2.modeling",
    "detectron2.evaluation",
    "detectron2.data",
    "detectron2.model_zoo",
]

PROBE_TIMEOUT_S = 10.0


class InstallError(Exception):
    """A failure with a one-line explanation for the user."""


# --------------------------------------------------------------------------- helpers


def _run(cmd: list[str], *, timeout: float | None = None, capture: bool = False, **kw):
    """``subprocess.run`` in a private empty folder: ``python -c`` and ``python -m`` put their
    working folder first on ``sys.path``, and neither the caller's (the repository root with its
    own ``tools/``) nor a shared one (``/tmp``, where anyone can plant a ``json.py``) may be it."""
    LOG.debug("running: %s", " ".join(cmd))
    with tempfile.TemporaryDirectory(prefix="install_detectron2-") as cwd:
        return subprocess.run(
            cmd,
            timeout=timeout,
            text=True,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.STDOUT if capture else None,
            cwd=cwd,
            **kw,
        )


def _python_check(*args: str) -> list[str]:
    """A command line of this interpreter in isolated mode (``-I``: no working folder on
    ``sys.path``, no ``PYTHON*`` variables, no user site-packages)."""
    return [sys.executable, "-I", *args]


def _pip(*args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    LOG.info("$ %s", " ".join(cmd))
    proc = _run(cmd, capture=capture)
    if check and proc.returncode != 0:
        raise InstallError(f"'pip {' '.join(args)}' failed with exit code {proc.returncode}")
    return proc


def _pip_has(dist: str) -> bool:
    proc = _run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "show", "-q", dist],
        capture=True,
    )
    return proc.returncode == 0


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# --------------------------------------------------------------------------- checks

_CHECK_SCRIPT = r"""
import importlib, importlib.util, json, os, site, sys, sysconfig
mods = json.loads(sys.argv[1])
result = {"ok": True, "errors": []}
for m in mods:
    try:
        importlib.import_module(m)
    except Exception as e:  # noqa: BLE001
        result["ok"] = False
        result["errors"].append("import %s failed: %s: %s" % (m, type(e).__name__, e))
try:
    import detectron2
    result["version"] = getattr(detectron2, "__version__", None)
    result["location"] = os.path.dirname(detectron2.__file__)
except Exception:
    pass
try:
    from importlib import metadata
    result["dist_version"] = metadata.version("detectron2")
except Exception:
    result["dist_version"] = None
result["has_C"] = importlib.util.find_spec("detectron2._C") is not None
dirs = set()
for d in list(getattr(site, "getsitepackages", lambda: [])()) + [
        sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]:
    if d:
        dirs.add(os.path.realpath(d))
stray = [os.path.join(d, "tools") for d in sorted(dirs) if os.path.exists(os.path.join(d, "tools"))]
spec = importlib.util.find_spec("tools")
if spec is not None:
    locs = list(spec.submodule_search_locations or []) + ([spec.origin] if spec.origin else [])
    for loc in locs:
        real = os.path.realpath(loc)
        if any(real == d or real.startswith(d + os.sep) for d in dirs):
            stray.append(real)
if stray:
    owners = []
    try:
        from importlib import metadata
        for dist in metadata.distributions():
            if any(str(f).replace("\\", "/").startswith("tools/") for f in (dist.files or [])):
                owners.append(dist.metadata["Name"])
    except Exception:
        pass
    hint = ("installed by %s: pip uninstall it" % ", ".join(sorted(set(owners)))) if owners else (
        "owned by no pip distribution: delete it")
    result["ok"] = False
    result["errors"].append(
        "stray top-level 'tools' package in site-packages (%s): %s" % (hint, sorted(set(stray)))
    )
print("@@RESULT@@" + json.dumps(result))
"""


def check_installation(modules: list[str] = REQUIRED_MODULES) -> dict:
    """Import ``modules`` in a fresh interpreter and look for a stray ``tools`` package.

    Returns a dict with keys ok (bool), errors (list of str), version, dist_version,
    location, has_C.
    """
    proc = _run(_python_check("-c", _CHECK_SCRIPT, json.dumps(modules)), capture=True, timeout=600)
    for line in (proc.stdout or "").splitlines():
        if line.startswith("@@RESULT@@"):
            return json.loads(line[len("@@RESULT@@") :])
    tail = (proc.stdout or "").strip().splitlines()[-1:] or ["no output"]
    return {"ok": False, "errors": [f"check interpreter failed (rc={proc.returncode}): {tail[0]}"]}


def detectron2_importable() -> bool:
    proc = _run(_python_check("-c", "import detectron2"), capture=True, timeout=600)
    return proc.returncode == 0


# --------------------------------------------------------------------------- official source


def official_source_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Cheap probe: does ``git ls-remote`` reach the official repository in time?"""
    if shutil.which("git") is None:
        LOG.info("git is not installed: cannot use the official source")
        return False
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true")
    try:
        proc = subprocess.run(
            ["git", "ls-remote", "--exit-code", OFFICIAL_GIT_URL, "HEAD"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        LOG.info("%s: no answer within %.0f s", OFFICIAL_GIT_URL, timeout)
        return False
    if proc.returncode != 0:
        msg = (proc.stderr or "").strip().splitlines()
        LOG.info(
            "%s is not reachable: %s", OFFICIAL_GIT_URL, msg[-1] if msg else f"rc={proc.returncode}"
        )
        return False
    return True


def install_official() -> dict:
    """Build and install detectron2 at the pinned ``OFFICIAL_COMMIT``; the record names it."""
    _pip("install", *OFFICIAL_PREREQUISITES)
    _pip("install", "--no-build-isolation", OFFICIAL_PIP_SPEC)
    return {
        "source": "official",
        "url": OFFICIAL_PIP_SPEC,
        "commit": OFFICIAL_COMMIT,
        "sha256": None,
    }


# --------------------------------------------------------------------------- fallback wheel


def download_fallback_wheel(dest: Path) -> Path:
    _pip(
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.10",
        "--platform",
        "any",
        "--implementation",
        "cp",
        "--abi",
        "none",
        f"{FALLBACK_DIST}=={FALLBACK_VERSION}",
        "-d",
        str(dest),
    )
    wheels = sorted(dest.glob(f"{FALLBACK_DIST.replace('-', '_')}-{FALLBACK_VERSION}-*.whl"))
    if len(wheels) != 1:
        raise InstallError(
            f"expected one {FALLBACK_DIST} wheel in {dest}, found {[w.name for w in wheels]}"
        )
    return wheels[0]


def verify_sha256(path: Path, expected: str | None = None) -> str:
    """The sha256 of ``path``, which must be ``expected`` (default: the pinned
    ``FALLBACK_SHA256``; tests give another, users cannot)."""
    expected = expected or FALLBACK_SHA256
    actual = _sha256(path)
    if actual != expected:
        raise InstallError(
            f"{path.name}: sha256 {actual} does not match "
            f"the pinned {expected}; refusing to install it"
        )
    LOG.info("%s: sha256 %s verified", path.name, actual)
    return actual


def _fix_requirements(requires: list[str]) -> list[str]:
    """Requirements of the repacked wheel, derived from the original METADATA."""
    out: list[str] = []
    for req in requires:
        name = re.split(r"[\s<>=!~;\[(]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")
        if 'python_version < "3.7"' in req:
            continue  # dataclasses backport
        if name == "numpy" and ";" not in req:
            req = "numpy"  # the wheel says numpy<2; detectron2 works with numpy 2
        if name in ADDED_REQUIREMENTS and ";" not in req:
            continue
        out.append(req)
    # Insert the added requirements before the first extra-only line.
    first_extra = next((i for i, r in enumerate(out) if "extra ==" in r), len(out))
    added = list(ADDED_REQUIREMENTS.values())
    return out[:first_extra] + added + out[first_extra:]


def repack_wheel(src: Path, out_dir: Path, sha256: str) -> tuple[Path, dict]:
    """Write ``detectron2-<REPACKED_VERSION>-py3-none-any.whl`` to ``out_dir``.

    Keeps only ``detectron2/**`` minus compiled extensions and bytecode; writes a fresh
    dist-info. Returns the wheel's path and a summary dict.
    """
    dist_info = f"{REPACKED_NAME}-{REPACKED_VERSION}.dist-info"
    wheel_path = out_dir / f"{REPACKED_NAME}-{REPACKED_VERSION}-py3-none-any.whl"
    records: list[tuple[str, str, str]] = []
    dropped_native: list[str] = []
    dropped_other: set[str] = set()
    n_configs = 0

    with zipfile.ZipFile(src) as zin:
        names = zin.namelist()
        old_dist_info = sorted(
            {n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")}
        )
        if len(old_dist_info) != 1:
            raise InstallError(f"{src.name}: expected one .dist-info folder, found {old_dist_info}")
        old_meta = email.parser.Parser().parsestr(
            zin.read(f"{old_dist_info[0]}/METADATA").decode("utf-8")
        )
        license_text = None
        if f"{old_dist_info[0]}/LICENSE" in names:
            license_text = zin.read(f"{old_dist_info[0]}/LICENSE")
        if "detectron2/__init__.py" not in names:
            raise InstallError(f"{src.name} does not contain detectron2/__init__.py")

        with zipfile.ZipFile(wheel_path, "w", compression=zipfile.ZIP_DEFLATED) as zout:

            def add(name: str, data: bytes, template: zipfile.ZipInfo | None = None) -> None:
                info = zipfile.ZipInfo(
                    name, date_time=template.date_time if template else (2024, 4, 1, 0, 0, 0)
                )
                info.external_attr = template.external_attr if template else 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zout.writestr(info, data)
                records.append((name, _record_hash(data), str(len(data))))

            for info in zin.infolist():
                name = info.filename
                if info.is_dir():
                    continue
                top = name.split("/", 1)[0]
                base = name.rsplit("/", 1)[-1]
                if top != "detectron2":
                    if not top.endswith(".dist-info"):  # the old dist-info is replaced below
                        dropped_other.add(top + ("/" if "/" in name else ""))
                    continue
                if base.endswith((".so", ".pyd", ".dylib", ".dll")) or ".so." in base:
                    dropped_native.append(name)
                    continue
                if "/__pycache__/" in name or base.endswith((".pyc", ".pyo")):
                    continue
                if name.startswith("detectron2/model_zoo/configs/") and base.endswith(
                    (".yaml", ".py")
                ):
                    n_configs += 1
                add(name, zin.read(info), info)

            requires = _fix_requirements(old_meta.get_all("Requires-Dist") or [])
            extras = old_meta.get_all("Provides-Extra") or []
            meta_lines = [
                "Metadata-Version: 2.1",
                f"Name: {REPACKED_NAME}",
                f"Version: {REPACKED_VERSION}",
                "Summary: Detectron2 (FAIR), pure-Python part repacked from the PyPI wheel "
                f"{FALLBACK_DIST}=={FALLBACK_VERSION} (no compiled _C extension)",
                "Home-page: https://github.com/facebookresearch/detectron2",
                "Author: FAIR",
                "License: Apache-2.0",
                f"Requires-Python: {old_meta.get('Requires-Python', '>=3.8')}",
            ]
            meta_lines += [f"Requires-Dist: {r}" for r in requires if "extra ==" not in r]
            for extra in extras:
                meta_lines.append(f"Provides-Extra: {extra}")
            meta_lines += [f"Requires-Dist: {r}" for r in requires if "extra ==" in r]
            description = (
                f"Repacked by accel-det's tools/install_detectron2.py from {src.name} "
                f"(sha256 {sha256}).\n"
                f"Removed: {', '.join(sorted(dropped_other)) or 'nothing'} (stray top-level "
                f"packages), {', '.join(dropped_native) or 'nothing'} (compiled extension for "
                f"another Python).\n"
                "Requirements: numpy<2 relaxed to numpy; fvcore, iopath and setuptools<82 "
                "(for pkg_resources) added.\n"
            )
            metadata = "\n".join(meta_lines) + "\n\n" + description
            add(f"{dist_info}/METADATA", metadata.encode("utf-8"))
            add(
                f"{dist_info}/WHEEL",
                (
                    "Wheel-Version: 1.0\n"
                    "Generator: accel-det tools/install_detectron2.py\n"
                    "Root-Is-Purelib: true\n"
                    "Tag: py3-none-any\n"
                ).encode("ascii"),
            )
            add(f"{dist_info}/top_level.txt", b"detectron2\n")
            if license_text is not None:
                add(f"{dist_info}/LICENSE", license_text)
            provenance = {
                "source": FALLBACK_DIST,
                "source_version": FALLBACK_VERSION,
                "source_wheel": src.name,
                "source_sha256": sha256,
                "dropped_top_level": sorted(dropped_other),
                "dropped_native": dropped_native,
            }
            add(
                f"{dist_info}/accel_det_provenance.json",
                (json.dumps(provenance, indent=2) + "\n").encode(),
            )

            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            for row in records:
                writer.writerow(row)
            writer.writerow((f"{dist_info}/RECORD", "", ""))
            rinfo = zipfile.ZipInfo(f"{dist_info}/RECORD", date_time=(2024, 4, 1, 0, 0, 0))
            rinfo.external_attr = 0o644 << 16
            rinfo.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(rinfo, buf.getvalue())

    summary = {
        "files": len(records),
        "configs": n_configs,
        "dropped_top_level": sorted(dropped_other),
        "dropped_native": dropped_native,
        "requires": requires,
    }
    LOG.info(
        "repacked %s -> %s: %d files, %d model-zoo configs; dropped %s and %s",
        src.name,
        wheel_path.name,
        len(records),
        n_configs,
        ", ".join(sorted(dropped_other)) or "no other top-level entries",
        ", ".join(dropped_native) or "no native files",
    )
    if n_configs == 0:
        LOG.warning(
            "the wheel ships no detectron2/model_zoo/configs: model_zoo.get_config_file() will fail"
        )
    return wheel_path, summary


def install_fallback_wheel(
    local_wheel: Path | None = None,
    keep_dir: Path | None = None,
    expected_sha256: str | None = None,
) -> dict:
    """Download (or take ``local_wheel``), verify (``expected_sha256``, default the pinned one),
    repack and install the fallback wheel; returns what :func:`write_record` records."""
    with tempfile.TemporaryDirectory(prefix="detectron2-wheel-") as tmp:
        tmpdir = Path(tmp)
        if local_wheel is not None:
            src = local_wheel
            LOG.info("using local wheel %s", src)
        else:
            src = download_fallback_wheel(tmpdir / "download")
        sha = verify_sha256(src, expected_sha256)
        out_dir = tmpdir / "repacked"
        out_dir.mkdir()
        wheel, summary = repack_wheel(src, out_dir, sha)
        for dist in (FALLBACK_DIST, REPACKED_NAME):
            if _pip_has(dist):
                _pip("uninstall", "-y", dist)
        _pip("install", str(wheel))
        if keep_dir is not None:
            keep_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(wheel, keep_dir / wheel.name)
            LOG.info("kept the repacked wheel in %s", keep_dir / wheel.name)
    return {
        "source": "sal-detectron2-wheel",
        "pypi": f"{FALLBACK_DIST}=={FALLBACK_VERSION}",
        "sha256": sha,
        "repacked_as": f"{REPACKED_NAME}=={REPACKED_VERSION}",
        "dropped": summary["dropped_top_level"] + summary["dropped_native"],
        "model_zoo_configs": summary["configs"],
    }


# --------------------------------------------------------------------------- main


def write_record(path: Path, info: dict, check: dict) -> None:
    data = dict(info)
    data.update(
        version=check.get("version"),
        dist_version=check.get("dist_version"),
        has_C=check.get("has_C"),
        location=check.get("location"),
        python=sys.version.split()[0],
        installed_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    LOG.info("wrote %s", path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source",
        choices=["auto", "official", "wheel"],
        default=os.environ.get("DETECTRON2_SOURCE", "auto"),
        help="auto (default, env DETECTRON2_SOURCE): official source when github.com answers, "
        "else the verified sal-detectron2 wheel; official/wheel: only that one",
    )
    parser.add_argument(
        "--force", action="store_true", help="reinstall even if detectron2 already works"
    )
    parser.add_argument(
        "--wheel-file", type=Path, help="use this local sal-detectron2 wheel instead of downloading"
    )
    parser.add_argument(
        "--keep-wheel", type=Path, metavar="DIR", help="copy the repacked wheel into DIR"
    )
    parser.add_argument(
        "--record",
        type=Path,
        default=Path(sys.prefix) / "detectron2-source.json",
        help="where to write which source was used (default: %(default)s)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="install_detectron2: %(levelname)s: %(message)s",
    )
    if sys.prefix == sys.base_prefix:
        LOG.warning(
            "%s is not a virtual env's interpreter; installing into %s anyway",
            sys.executable,
            sys.prefix,
        )

    try:
        # a. already there?
        if not args.force and detectron2_importable():
            check = check_installation()
            if check["ok"]:
                LOG.info(
                    "detectron2 %s is already installed and works (%s); nothing to do",
                    check.get("dist_version") or check.get("version"),
                    check.get("location"),
                )
                if not args.record.exists():
                    write_record(args.record, {"source": "preinstalled", "sha256": None}, check)
                return 0
            LOG.warning(
                "detectron2 imports but fails the checks (%s); reinstalling",
                "; ".join(check["errors"]),
            )

        # b. official source, c. fallback wheel
        info = None
        if args.source in ("auto", "official") and args.wheel_file is None:
            if official_source_reachable():
                LOG.info("github.com is reachable: installing detectron2 from the official source")
                try:
                    info = install_official()
                except InstallError as e:
                    if args.source == "official":
                        raise
                    LOG.warning(
                        "official install failed (%s); falling back to the %s wheel",
                        e,
                        FALLBACK_DIST,
                    )
            elif args.source == "official":
                raise InstallError(
                    f"{OFFICIAL_GIT_URL} is not reachable and --source=official was asked for"
                )
            else:
                LOG.info("falling back to the PyPI wheel %s==%s", FALLBACK_DIST, FALLBACK_VERSION)
        if info is None:
            info = install_fallback_wheel(args.wheel_file, args.keep_wheel)

        # d. verify
        check = check_installation()
        if not check["ok"]:
            raise InstallError(
                "installed detectron2 fails the checks: " + "; ".join(check["errors"])
            )
        write_record(args.record, info, check)
        LOG.info(
            "detectron2 %s installed from %s (compiled _C: %s)",
            check.get("dist_version") or check.get("version"),
            (
                info["source"]
                if info["source"] == "official"
                else f"{info['pypi']} (sha256 verified, repacked)"
            ),
            "yes" if check.get("has_C") else "no",
        )
        return 0
    except InstallError as e:
        LOG.error("%s", e)
        return 1
    except subprocess.TimeoutExpired as e:
        LOG.error("timed out: %s", " ".join(map(str, e.cmd)) if isinstance(e.cmd, list) else e.cmd)
        return 1
    except KeyboardInterrupt:
        LOG.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
