"""Reusing finished demo stages: a stage's record carries a key of everything it was made from,
and a second run with the same key reuses the record instead of redoing the stage."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Optional

from ...errors import AccelDetError
from ...utils.io import load_json_object


def stage_key(*parts) -> str:
    """A short digest of a stage's inputs (configs, option values, file digests)."""
    return hashlib.sha1(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def file_digest(path: str) -> str:
    """What identifies a file for the cache: its path, size and modification time."""
    if not path or not os.path.isfile(path):
        return path or ""
    stat = os.stat(path)
    return f"{path}:{stat.st_size}:{int(stat.st_mtime)}"


def cached_record(path: str, key: str, force: bool = False) -> Optional[dict]:
    """The record at ``path`` when it was made with ``key`` (and ``force`` is off), else None."""
    if force or not os.path.isfile(path):
        return None
    try:
        record = load_json_object(path, "stage record")
    except AccelDetError:
        return None
    return record if record.get("key") == key else None
