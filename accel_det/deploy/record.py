"""What an exported model was made from, in a JSON file next to it: ``X.onnx.json`` for
``X.onnx``, ``X.xml.json`` for OpenVINO's ``X.xml`` and ``X.bin``.

The record says what the model expects and what it computes: its inputs (names, shapes, for a
detector the test-time resize and the pixel format of ``image``; for a VGG-16 the preprocessing),
the normalization inside the graph, the classes, the plan (path, architecture fingerprint,
theoretical speedups), the precision (``fp32``, ``bf16`` or ``int8``, :mod:`.precision`; for a
reduced one the quantizer and its settings, the calibration inputs (their sha256) and the
agreement with the float32 model) and the config keys it was exported with, the weights (path,
sha256), the check against PyTorch, and the sha256 of every file written, so that a record is
never taken for another model's. :func:`accel_det.deploy.evaluate.evaluate_exported` checks a
detector's record against the config it evaluates with.
"""

from __future__ import annotations

import datetime
import os
import platform
from typing import Dict, List, Mapping, Optional, Sequence

from ..errors import AccelDetError
from ..plan import plan_fingerprint
from ..utils.io import load_json_object, sha256_file

RECORD_FORMAT = "accel-det-export/1"
PRECISION = "fp32"  # the default: float32 weights and arithmetic


def record_path(model_path: str) -> str:
    """The record of ``model_path`` (``X.onnx`` → ``X.onnx.json``)."""
    return model_path + ".json"


def model_files(path: str, export_format: str) -> List[str]:
    """The files of an exported model: ``X.onnx``, or OpenVINO's ``X.xml`` and ``X.bin``."""
    return [path] if export_format == "onnx" else [path, path[: -len(".xml")] + ".bin"]


def files_digest(paths: Sequence[str], names: Sequence[str]) -> Dict[str, str]:
    """sha256 of each of ``paths`` (the model's files, perhaps still temporaries), keyed by the
    base names ``names`` they are published under, the model first."""
    return {os.path.basename(name): sha256_file(path) for name, path in zip(names, paths)}


def plan_summary(plan: Optional[Mapping], path: Optional[str]) -> Optional[dict]:
    """What a record says of a plan: its path, architecture fingerprint and theoretical
    speedups (None without a plan)."""
    if plan is None:
        return None
    return {
        "path": os.path.abspath(path) if path else None,
        "fingerprint": plan_fingerprint(plan),
        "theoretical_speedup": plan.get("theoretical_speedup"),
        "theoretical_speedup_detector": plan.get(
            "theoretical_speedup_detector", plan.get("theoretical_speedup_network")
        ),
    }


def weights_summary(path: Optional[str], local: Optional[str] = None) -> Optional[dict]:
    """Path and sha256 of a local weights file (None for none or a remote one). ``local``: the
    file that was read for ``path`` (``MODEL.WEIGHTS`` as Detectron2 resolves it, which expands no
    ``~``); by default ``path`` with ``~`` expanded, as accel-det's own loaders read it."""
    if not path:
        return None
    local = local or os.path.expanduser(path)
    if not os.path.isfile(local):
        return {"path": path, "sha256": None}
    return {"path": os.path.abspath(local), "sha256": sha256_file(local)}


def export_record(
    provenance: Mapping,
    *,
    description: str,
    export_format: str,
    opset: int,
    files: Mapping[str, str],
    check: Mapping,
    precision: str = PRECISION,
) -> dict:
    """The JSON record of an export: ``provenance`` (what the model was made from, see the module
    docstring) and how it was exported."""
    import torch

    from .. import __version__

    return {
        "format": RECORD_FORMAT,
        "description": description,
        "export_format": export_format,
        "opset": opset,
        "precision": precision,
        **provenance,
        "files": dict(files),
        "check": dict(check),
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "versions": {
            "accel_det": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }


def read_export_record(model_path: str) -> Optional[dict]:
    """The record next to an exported model, checked to be this model's (the sha256 of its
    files); None when there is none. Raises :class:`AccelDetError` for a record of other files."""
    path = record_path(model_path)
    if not os.path.isfile(path):
        return None
    record = load_json_object(path, "export record")
    if record.get("format") != RECORD_FORMAT or not isinstance(record.get("files"), Mapping):
        raise AccelDetError(f"{path} is not an accel-det export record ({RECORD_FORMAT})")
    files = model_files(model_path, record.get("export_format", "onnx"))
    for file, (name, digest) in zip(files, record["files"].items()):
        if not os.path.isfile(file) or sha256_file(file) != digest:
            raise AccelDetError(
                f"{path} was written for another model than {file} (its record is of {name}, "
                f"sha256 {str(digest)[:12]}...): export the model again, or remove the stale "
                "record"
            )
    return record
