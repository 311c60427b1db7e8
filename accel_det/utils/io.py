"""Files written atomically (temporary name, then rename) and weights read safely."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from typing import Any, Iterator, Mapping

import torch

from ..errors import AccelDetError


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary path next to ``path``; it replaces ``path`` only if the block finishes."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise AccelDetError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise AccelDetError(f"output folder {folder} is not writable")
    handle, temporary = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder
    )
    os.close(handle)
    try:
        yield temporary
        os.chmod(
            temporary, 0o666 & ~_umask()
        )  # mkstemp makes it private; give it a normal file's mode
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` to ``path`` without ever leaving a half-written file."""
    with atomic_path(path) as temporary:
        torch.save(obj, temporary)


def atomic_write_text(text: str, path: str) -> None:
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(text)


def atomic_write_json(obj: Any, path: str) -> None:
    atomic_write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", path)


def load_torch_file(path: str, what: str = "weights") -> Any:
    """``torch.load(path, weights_only=True)`` with one clear error for a missing or corrupt
    file."""
    if not os.path.isfile(path):
        raise AccelDetError(f"{what} file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or unsafe files
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise AccelDetError(f"cannot read {what} file {path}: {first}") from None


def load_json(path: str, what: str = "JSON") -> Any:
    if not os.path.isfile(path):
        raise AccelDetError(f"{what} file not found: {path}")
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
    can refuse early and create the folder only once its inputs are known to be good)."""
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
    return folder


def _probe(folder: str, message: str) -> None:
    try:  # os.access says yes to root even where writing fails (read-only mounts, sysfs)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise AccelDetError(f"{message} ({error.strerror or error})") from None


def refuse_existing(paths, overwrite: bool) -> None:
    """Raise unless ``overwrite`` when one of ``paths`` already exists (names the first)."""
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
