"""Files written atomically (temporary name, flushed to disk, then renamed), write failures as one
line, and weights read safely."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import re
import shutil
import socket
import tempfile
from typing import Any, Iterator, List, Mapping, Optional, Sequence

import torch

from ..errors import AccelDetError
from .files import not_found, not_weights, torch_load_reason

logger = logging.getLogger(__name__)


# What a write that runs out of room raises (OSError errno), as the one line says it.
WRITE_ERRORS = {
    errno.ENOSPC: "no space left on device",
    errno.EFBIG: "file too large",
    errno.EDQUOT: "disk quota exceeded",
}
# torch.save's own words for a failed write (it reports the OSError of the file as one of these)
TORCH_WRITE_ERROR = re.compile(r"inline_container|PytorchStreamWriter|file write failed")
# atomic_path's temporary names: .NAME.<host>-<pid>.<random>.tmp (the pid tells a live writer's)
TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)\.[^.]+\.tmp$")
HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def write_failure(path: Optional[str], error: BaseException) -> Optional[AccelDetError]:
    """The one-line error for a write of ``path`` that failed with ``error`` for lack of room
    (no space, file size limit, quota); None for any other error."""
    cause = WRITE_ERRORS.get(getattr(error, "errno", None))
    if cause is None:
        return None
    return AccelDetError(f"cannot write {path or 'a file'}: {cause}")


def _raise_write_failure(path: Optional[str], error: BaseException) -> None:
    """Raise :func:`write_failure`'s error, if there is one (else the caller re-raises)."""
    failure = write_failure(path, error)
    if failure is not None:
        raise failure from None


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary path next to ``path``; it replaces ``path`` only if the block finishes."""
    with atomic_paths(path) as (temporary,):
        yield temporary


@contextlib.contextmanager
def atomic_paths(*paths: str) -> Iterator[List[str]]:
    """Temporary paths next to ``paths``. When the block finishes, each is flushed to disk and
    renamed over its path in the given order; the last path marks the set complete, so an existing
    one is removed before the others are replaced (an interrupted rename leaves it missing, never
    stale). On any failure nothing is replaced and the temporaries are removed; a write that runs
    out of room becomes an :class:`AccelDetError` naming the file and the cause."""
    temporaries: List[str] = []
    current = paths[0]  # the path being written, named by an error
    try:
        for current in paths:
            temporaries.append(_temporary(current))
        yield list(temporaries)
        for current, temporary in zip(paths, temporaries):
            os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private
            _fsync(temporary)
        if len(paths) > 1 and os.path.exists(paths[-1]):
            os.remove(paths[-1])
        for current, temporary in zip(paths, temporaries):
            os.replace(temporary, current)
        for folder in {os.path.dirname(os.path.abspath(p)) for p in paths}:
            _fsync_folder(folder)
    except OSError as error:
        _raise_write_failure(dict(zip(temporaries, paths)).get(error.filename, current), error)
        raise
    finally:
        for temporary in temporaries:
            if os.path.exists(temporary):
                os.remove(temporary)


def _temporary(path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise AccelDetError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise AccelDetError(f"output folder {folder} is not writable")
    handle, temporary = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.{HOST}-{os.getpid()}.", suffix=".tmp", dir=folder
    )
    os.close(handle)
    return temporary


def _fsync(path: str) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _fsync_folder(folder: str) -> None:
    """Make the renames durable (not every system can open or sync a folder: then skip it)."""
    try:
        _fsync(folder)
    except OSError:
        pass


@contextlib.contextmanager
def atomic_files(paths: Sequence[str]) -> Iterator[List[str]]:
    """Temporary paths with the base names of ``paths`` (files of one folder, such as OpenVINO's
    ``.xml`` and ``.bin``) in a hidden folder next to them; they replace ``paths`` only if the
    block finishes, the first one last."""
    folders = {os.path.dirname(os.path.abspath(p)) for p in paths}
    if len(folders) != 1:
        raise ValueError("atomic_files: all paths must be in one folder")
    folder = folders.pop()
    if not os.path.isdir(folder):
        raise AccelDetError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise AccelDetError(f"output folder {folder} is not writable")
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(paths[0])}.", suffix=".tmp", dir=folder)
    temporaries = [os.path.join(staging, os.path.basename(p)) for p in paths]
    try:
        yield temporaries
        for temporary, path in reversed(list(zip(temporaries, paths))):
            os.chmod(temporary, 0o666 & ~_umask())
            os.replace(temporary, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sweep_temporaries(folder: str) -> int:
    """Remove the temporaries that killed runs left in ``folder`` (written by this machine, by a
    process that is gone; another live writer's are left alone). Returns how many."""
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    removed = 0
    for name in names:
        match = TEMPORARY.match(name)
        if match is None or match["host"] != HOST or _alive(int(match["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(folder, name))
            removed += 1
    if removed:
        logger.info("removed %d temporary file(s) of an interrupted run in %s", removed, folder)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


class _RecordingWriter:
    """A file for ``torch.save`` that keeps the OSError of a failed write (torch reports it as a
    RuntimeError without the cause)."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.file.flush()


def _torch_save(obj: Any, temporary: str, path: str) -> None:
    """``torch.save(obj, temporary)``; a failed write is an AccelDetError that names ``path``."""
    try:
        with open(temporary, "wb") as f:
            writer = _RecordingWriter(f)
            torch.save(obj, writer)
    except RuntimeError as error:
        _raise_write_failure(path, writer.error)
        if TORCH_WRITE_ERROR.search(str(error)):
            first = str(error).strip().splitlines()[0]
            raise AccelDetError(f"cannot write {path}: {first}") from None
        raise
    except OSError as error:  # e.g. when the last buffered bytes are flushed
        _raise_write_failure(path, error)
        raise


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` to ``path`` without ever leaving a half-written file."""
    with atomic_path(path) as temporary:
        _torch_save(obj, temporary, path)


def atomic_write_text(text: str, path: str) -> None:
    with atomic_path(path) as temporary:
        _write_text(text, temporary, path)


def atomic_write_json(obj: Any, path: str) -> None:
    atomic_write_text(_json_text(obj), path)


def _json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"


def _write_text(text: str, temporary: str, path: str) -> None:
    try:
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as error:
        _raise_write_failure(path, error)
        raise


def atomic_save_pair(state: Any, weights: str, record: Mapping, record_path: str) -> dict:
    """Weights and their JSON record as a pair: both written to temporaries first, the record
    given ``outputs.weights_sha256`` (of the weights' bytes), then renamed weights first, record
    last, so a record on disk always belongs to the weights next to it. Returns the record."""
    with atomic_paths(weights, record_path) as (weights_temporary, record_temporary):
        _torch_save(state, weights_temporary, weights)
        record = dict(record)
        outputs = dict(record.get("outputs") or {})
        outputs["weights_sha256"] = sha256_file(weights_temporary)
        record["outputs"] = outputs
        _write_text(_json_text(record), record_temporary, record_path)
    return record


def load_torch_file(path: str, what: str = "weights") -> Any:
    """``torch.load(path, weights_only=True)`` with one clear error for a missing or corrupt
    file."""
    if not os.path.isfile(path):
        raise not_found(f"{what} file", path)
    wrong_kind = not_weights(path, what)
    if wrong_kind is not None:
        raise wrong_kind
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or unsafe files
        raise AccelDetError(f"cannot read {what} file {path}: {torch_load_reason(error)}") from None


def load_json(path: str, what: str = "JSON") -> Any:
    if not os.path.isfile(path):
        raise not_found(f"{what} file", path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise AccelDetError(f"cannot read {what} file {path}: {error}") from None


def load_json_object(path: str, what: str = "JSON") -> dict:
    """:func:`load_json` of a file that must hold a JSON object."""
    data = load_json(path, what)
    if not isinstance(data, Mapping):
        raise AccelDetError(f"{path} is not a {what}: it holds no JSON object")
    return dict(data)


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (recorded next to outputs to identify their source weights)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def check_writable_folder(folder: str, create: bool = True) -> str:
    """``folder`` as an absolute path, or a clear error when it cannot be written. A missing folder
    is created when ``create``; otherwise its nearest existing parent must be writable (so a tool
    can refuse early and create the folder only once its inputs are known to be good). The
    temporaries of killed runs in an existing folder are removed (:func:`sweep_temporaries`)."""
    folder = os.path.abspath(os.path.expanduser(folder or "."))
    if not os.path.isdir(folder):
        if os.path.exists(folder):
            raise AccelDetError(f"output folder {folder} is not a folder")
        if create:
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as error:
                raise AccelDetError(
                    f"cannot create output folder {folder}: {error.strerror or error}"
                ) from None
        else:
            parent = os.path.dirname(folder)
            while not os.path.exists(parent):
                parent = os.path.dirname(parent)
            if not os.path.isdir(parent):
                raise AccelDetError(
                    f"cannot create output folder {folder}: {parent} is not a folder"
                )
            _probe(parent, f"cannot create output folder {folder}: {parent} is not writable")
            return folder
    _probe(folder, f"output folder {folder} is not writable")
    sweep_temporaries(folder)
    return folder


def _probe(folder: str, message: str) -> None:
    try:  # os.access says yes to root even where writing fails (read-only mounts, sysfs)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise AccelDetError(f"{message} ({error.strerror or error})") from None


def refuse_existing(paths, overwrite: bool) -> None:
    """Raise unless ``overwrite`` when one of ``paths`` already exists (names the first); sweep
    the temporaries of killed runs next to them first."""
    paths = [os.fspath(p) for p in paths]
    for folder in {os.path.dirname(os.path.abspath(p)) for p in paths}:
        sweep_temporaries(folder)
    for path in paths:
        if os.path.exists(path) and not overwrite:
            raise AccelDetError(f"output {path} already exists; pass --overwrite to replace it")


def json_safe(value):
    """Plain JSON types from nested records: mappings with string keys, lists, numbers (numpy and
    torch scalars and tensors made plain, NaN and infinities made null), strings."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy / torch
        return json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
