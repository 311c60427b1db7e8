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
import resource
import shutil
import socket
import tempfile
from typing import Any, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch

from ..errors import AccelDetError, first_line
from .files import not_found, not_weights, torch_load_reason
from .publish import fsync_folder, fsync_path, publish_set

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


def room_failure(files: Sequence[Tuple[str, str]]) -> Optional[AccelDetError]:
    """For a writer that does not say why a write failed (OpenVINO's "iostream error"), of
    ``files`` (``(file written, output it becomes)`` pairs): the one line of
    :func:`write_failure` naming the output whose file reached the file size limit, or all of them
    when their folder is out of room; None when neither."""
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    for written, path in files:
        if limit != resource.RLIM_INFINITY and os.path.isfile(written):
            if os.path.getsize(written) >= limit:
                return write_failure(path, OSError(errno.EFBIG, "file too large"))
    try:
        room = os.statvfs(os.path.dirname(os.path.abspath(files[0][0])))
    except OSError:
        return None
    if room.f_bavail * room.f_frsize < LOW_ROOM:
        names = " and ".join(path for _, path in files)
        return write_failure(names, OSError(errno.ENOSPC, "no space left on device"))
    return None


LOW_ROOM = 1 << 20  # bytes left on a device that a failed write is blamed on


def _raise_write_failure(path: Optional[str], error: BaseException) -> None:
    """Raise :func:`write_failure`'s error, if there is one (else the caller re-raises)."""
    failure = write_failure(path, error)
    if failure is not None:
        raise failure from None


@contextlib.contextmanager
def atomic_path(path: str, replace: bool = True) -> Iterator[str]:
    """A temporary path next to ``path``; it replaces ``path`` only if the block finishes (without
    ``replace``: only if ``path`` does not exist by then, see :func:`publish`)."""
    with atomic_paths(path, replace=replace) as (temporary,):
        yield temporary


@contextlib.contextmanager
def atomic_paths(*paths: str, replace: bool = True) -> Iterator[List[str]]:
    """Temporary paths next to ``paths``. When the block finishes, each is flushed to disk and
    published (:func:`publish_set`) in the given order; the last path marks the set complete.
    On any failure nothing is replaced and the temporaries are removed; a write that runs out of
    room becomes an :class:`AccelDetError` naming the file and the cause."""
    temporaries: List[str] = []
    current = paths[0]  # the path being written, named by an error
    try:
        for current in paths:
            temporaries.append(_temporary(current))
        yield list(temporaries)
        for current, temporary in zip(paths, temporaries):
            os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private
            fsync_path(temporary)
        current = paths[-1]
        publish_set(list(zip(temporaries, paths)), replace)
    except OSError as error:
        _raise_write_failure(dict(zip(temporaries, paths)).get(error.filename, current), error)
        raise
    finally:
        for temporary in temporaries:
            if os.path.exists(temporary):
                os.remove(temporary)


def _check_folder(folder: str) -> None:
    if not os.path.isdir(folder):
        raise AccelDetError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise AccelDetError(f"output folder {folder} is not writable")


def _temporary(path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    _check_folder(folder)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.{HOST}-{os.getpid()}.", suffix=".tmp", dir=folder
    )
    os.close(handle)
    return temporary


@contextlib.contextmanager
def atomic_files(paths: Sequence[str], replace: bool = True) -> Iterator[List[str]]:
    """Temporary paths with the base names of ``paths`` (files of one folder, such as OpenVINO's
    ``.xml`` and ``.bin``) in one hidden temporary folder next to them, named as
    :func:`atomic_path`'s temporaries (a killed run's is removed by the next run's
    :func:`sweep_temporaries`). When the block finishes, the files and the folder are flushed to
    disk and published with the first path last (:func:`publish_set`: what a reader opens, e.g.
    ``X.xml``; an existing one is removed before the others are replaced, so no reader finds the
    new ``X.bin`` beside the old ``X.xml``); otherwise nothing is replaced."""
    folders = {os.path.dirname(os.path.abspath(p)) for p in paths}
    if len(folders) != 1:
        raise ValueError("atomic_files: all paths must be in one folder")
    folder = folders.pop()
    _check_folder(folder)
    staging = tempfile.mkdtemp(
        prefix=f".{os.path.basename(paths[0])}.{HOST}-{os.getpid()}.", suffix=".tmp", dir=folder
    )
    temporaries = [os.path.join(staging, os.path.basename(p)) for p in paths]
    try:
        yield temporaries
        for temporary in temporaries:
            os.chmod(temporary, 0o666 & ~_umask())
            fsync_path(temporary)
        fsync_folder(staging)
        publish_set(list(zip(temporaries, paths))[::-1], replace)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sweep_temporaries(folder: str) -> int:
    """Remove the temporaries (files, and :func:`atomic_files`' folders) that killed runs left in
    ``folder`` (written by this machine, by a process that is gone; another live writer's are left
    alone). Returns how many."""
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    removed = 0
    for name in names:
        match = TEMPORARY.match(name)
        if match is None or match["host"] != HOST or _alive(int(match["pid"])):
            continue
        path = os.path.join(folder, name)
        with contextlib.suppress(FileNotFoundError):
            if os.path.isdir(path) and not os.path.islink(path):  # atomic_files' folder
                shutil.rmtree(path)
            else:
                os.remove(path)
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


def atomic_torch_save(obj: Any, path: str, replace: bool = True) -> None:
    """``torch.save`` to ``path`` without ever leaving a half-written file (without ``replace``:
    refused if ``path`` exists by the time it is written, see :func:`publish`)."""
    with atomic_path(path, replace) as temporary:
        _torch_save(obj, temporary, path)


def atomic_write_text(text: str, path: str, replace: bool = True) -> None:
    with atomic_path(path, replace) as temporary:
        _write_text(text, temporary, path)


def atomic_write_json(obj: Any, path: str, replace: bool = True) -> None:
    atomic_write_text(_json_text(obj), path, replace)


def _json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"


def _write_text(text: str, temporary: str, path: str) -> None:
    try:
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as error:
        _raise_write_failure(path, error)
        raise


def atomic_save_pair(
    state: Any, weights: str, record: Mapping, record_path: str, replace: bool = True
) -> dict:
    """Weights and their JSON record as a pair: both written to temporaries first, the record
    given ``outputs.weights_sha256`` (of the weights' bytes), then renamed weights first, record
    last, so a record on disk always belongs to the weights next to it (without ``replace``:
    neither is written if either exists by then). Returns the record."""
    with atomic_paths(weights, record_path, replace=replace) as (
        weights_temporary,
        record_temporary,
    ):
        _torch_save(state, weights_temporary, weights)
        record = dict(record)
        outputs = dict(record.get("outputs") or {})
        outputs["weights_sha256"] = sha256_file(weights_temporary)
        record["outputs"] = outputs
        _write_text(_json_text(record), record_temporary, record_path)
    return record


def load_torch_file(path: str, what: str = "weights") -> Any:
    """``torch.load(path, weights_only=True)`` with one clear error for a missing or corrupt
    file, or one holding sparse tensors."""
    if not os.path.isfile(path):
        raise not_found(f"{what} file", path)
    wrong_kind = not_weights(path, what)
    if wrong_kind is not None:
        raise wrong_kind
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or unsafe files
        raise AccelDetError(f"cannot read {what} file {path}: {torch_load_reason(error)}") from None
    name = _not_dense(data)
    if name is not None:
        raise AccelDetError(
            f"cannot read {what} file {path}: {name} is a sparse or otherwise non-dense tensor, "
            "which no accel-det model holds"
        )
    return data


def _not_dense(data) -> Optional[str]:
    """The key of the first tensor in ``data`` (nested dicts, lists) that is not a dense
    (strided) one, else None."""
    todo = [("", data)]
    while todo:
        key, value = todo.pop()
        if isinstance(value, torch.Tensor):
            if value.layout != torch.strided:
                return key or "a tensor"
        elif isinstance(value, Mapping):
            todo.extend((f"{key}.{k}" if key else str(k), v) for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            todo.extend((f"{key}[{i}]", v) for i, v in enumerate(value))
    return None


MAX_JSON_DEPTH = 64  # nesting of the JSON files accel-det reads (its own: at most 6)


def load_json(path: str, what: str = "JSON", max_bytes: Optional[int] = None) -> Any:
    """The JSON in ``path``; one-line errors for a missing, corrupt or too large file (more than
    ``max_bytes``) and for nesting deeper than :data:`MAX_JSON_DEPTH`."""
    if not os.path.isfile(path):
        raise not_found(f"{what} file", path)
    if max_bytes is not None and os.path.getsize(path) > max_bytes:
        raise AccelDetError(
            f"cannot read {what} file {path}: {os.path.getsize(path)} bytes, more than the "
            f"{max_bytes} such a file may have"
        )
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except RecursionError:
        data = None
        depth = MAX_JSON_DEPTH + 1
    except (OSError, ValueError) as error:
        raise AccelDetError(f"cannot read {what} file {path}: {first_line(error)}") from None
    else:
        depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise AccelDetError(
            f"cannot read {what} file {path}: nested more than {MAX_JSON_DEPTH} levels deep"
        )
    return data


def json_depth(value) -> int:
    """How deeply lists and objects nest in ``value`` (walked without recursion)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        value, depth = todo.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                break
            todo.extend((v, depth + 1) for v in value)
    return deepest


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
