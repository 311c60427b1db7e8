"""What a file given on the command line is, said in one line: a path that is not there (and, for
a relative one, the folder it was looked for in), or a file of another kind than the one asked
for (a JSON plan given as weights), instead of a loader's error about its bytes."""

from __future__ import annotations

import json
import os
from typing import Optional

from ..errors import AccelDetError, first_line

# torch's weights-only loader explains a refusal with advice to load the file unsafely
# ("Re-running `torch.load` with `weights_only` set to `False` will likely succeed"): only the
# reason it gives after that is kept
TORCH_REASON_MARKERS = ("WeightsUnpickler error:", "Trying to load unsupported GLOBAL")
IMAGE_MAGIC = {b"\xff\xd8\xff": "a JPEG image", b"\x89PNG": "a PNG image", b"GIF8": "a GIF image"}
# what a file is by its name, where its bytes do not say it plainly
SUFFIXES = {
    ".yaml": "a YAML file (a config?)",
    ".yml": "a YAML file (a config?)",
    ".onnx": "an ONNX model",
    ".xml": "an XML file (OpenVINO IR or a VOC annotation?)",
    ".txt": "a text file",
    ".md": "a text file",
}


def shown(path: str) -> str:
    """``path`` as a message shows it: a relative path with the folder it is relative to."""
    path = os.fspath(path)
    if os.path.isabs(os.path.expanduser(path)):
        return path
    return f"{path} (relative to the working folder {os.getcwd()})"


def not_found(what: str, path: str) -> AccelDetError:
    """The error for a file (or folder) that is not there: ``{what} not found: {path}``."""
    return AccelDetError(f"{what} not found: {shown(path)}")


def file_kind(path: str) -> Optional[str]:
    """What a file that is not a checkpoint is (``"a JSON plan"``, ``"a JSON file"``, ``"a JPEG
    image"``, ``"an empty file"``, ...), from its first bytes and its name; None when it may be a
    checkpoint (a zip or a pickle) or cannot be read."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return None
    if not head:
        return "an empty file"
    if head[:2] == b"PK" or head[:1] == b"\x80":  # torch.save's zip, a pickle (protocol >= 2)
        return None
    for magic, kind in IMAGE_MAGIC.items():
        if head.startswith(magic):
            return kind
    if head.lstrip()[:1] in (b"{", b"["):
        return _json_kind(path)
    return SUFFIXES.get(os.path.splitext(path)[1].lower())


def _json_kind(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return "a JSON-like text file"
    if isinstance(data, dict) and isinstance(data.get("layers"), dict):
        return "a JSON plan"
    return "a JSON file"


def not_weights(path: str, what: str = "weights") -> Optional[AccelDetError]:
    """The error for a file given as ``what`` (weights, a checkpoint) that is another kind of file
    (:func:`file_kind`), naming the option it was probably meant for; None when it may be one."""
    kind = file_kind(path)
    if kind is None:
        return None
    hint = ""
    if kind == "a JSON plan":
        plan_option = "MODEL.ACCEL.PLAN" if "MODEL.WEIGHTS" in what else "--plan"
        weights = os.path.splitext(path)[0] + ".pth"
        hint = f": did you mean {plan_option}?" + (
            f" (the weights written with it: {weights})" if os.path.isfile(weights) else ""
        )
    return AccelDetError(f"{what} file {path} is {kind}, not a PyTorch checkpoint{hint}")


def torch_load_reason(error: BaseException) -> str:
    """torch.load's error in one line, without its advice to load the file with
    ``weights_only=False`` (which runs any code the file names)."""
    text = str(error)
    if "weights_only" not in text:
        return first_line(error)
    for marker in TORCH_REASON_MARKERS:
        at = text.find(marker)
        if at >= 0:
            rest = text[at + len(marker) :] if marker.endswith(":") else text[at:]
            reason = next((line.strip() for line in rest.splitlines() if line.strip()), "")
            if reason:
                return f"Weights only load failed ({reason})"
    return "Weights only load failed: the file holds more than tensors and plain data"
