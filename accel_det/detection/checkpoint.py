"""Checking that ``MODEL.WEIGHTS`` fits the model before Detectron2 loads it, and loading it as
data.

Detectron2's ``DetectionCheckpointer`` only *warns* about missing keys and shape mismatches and
then trains from random weights; for a backbone built from a plan that silently wastes a run, and
an evaluation or export gives a wrong number. :func:`check_weights_fit` turns a backbone or
fc6/fc7 mismatch (a missing, left-over or misshapen tensor) into one error that names the layer
and both shapes. Box-predictor mismatches stay warnings when training (a new data set has other
classes) and are refused when the model is evaluated or exported.

:class:`AtomicCheckpointer` is the checkpointer accel-det trains and loads with: it writes
Detectron2's checkpoints atomically, and reads every file it loads (``MODEL.WEIGHTS``, remote
ones once downloaded, and on ``--resume`` the one ``last_checkpoint`` names) as data: ``.pkl``
with the restricted unpickler (Detectron2's own ``_load_file`` calls ``pickle.load``), others with
``torch.load(weights_only=True)``. The file checked is the file loaded: both resolve the name as
Detectron2 does (:func:`weights_file`).
"""

from __future__ import annotations

import logging
import os
from typing import Dict, Mapping, Optional
from urllib.parse import parse_qs, urlparse

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager
from torch import nn

from ..errors import AccelDetError
from ..models.fit import first_mismatch, keys_under
from ..utils.files import not_found
from ..utils.io import atomic_torch_save, atomic_write_text, load_torch_file
from ..utils.safe_pickle import load_pickle

logger = logging.getLogger(__name__)

REMOTE_PREFIXES = ("detectron2://", "http://", "https://", "catalog://", "manifold://")
HEAD_PREFIX = "roi_heads.box_head."
LAST_CHECKPOINT = "last_checkpoint"  # Detectron2's name for the file naming the last checkpoint


MATCHING_HEURISTICS = "matching_heuristics"  # the one URL query Detectron2's loader reads


def weights_file(path: str, what: str = "MODEL.WEIGHTS") -> str:
    """The local file ``DetectionCheckpointer.load(path)`` reads: ``path`` with its URL query
    removed (``urlparse(path)._replace(query="")``), then ``PathManager.get_local_path`` (which
    downloads a remote file; ``~`` is not expanded). A name whose parsed form differs from itself
    and that is a file too (``DIR/w.pkl?x=1`` beside ``DIR/w.pkl``), or a query other than
    Detectron2's ``?matching_heuristics=True``, is refused: the file checked must be the file
    loaded."""
    parsed = urlparse(path)
    stripped = parsed._replace(query="").geturl()
    if stripped != path:
        if os.path.lexists(path):
            raise AccelDetError(
                f"{what} {path} is a file, but Detectron2 reads it as the URL {stripped}: rename "
                f"the file (no '?' or '#' in its name)"
            )
        unknown = sorted(
            set(parse_qs(parsed.query, keep_blank_values=True)) - {MATCHING_HEURISTICS}
        )
        if unknown:
            raise AccelDetError(
                f"{what} {path}: unknown URL query {unknown[0]!r} (Detectron2 reads only "
                f"?{MATCHING_HEURISTICS}=True)"
            )
    return PathManager.get_local_path(stripped)


def weights_not_found(path: str) -> AccelDetError:
    """The error for a ``MODEL.WEIGHTS`` file that is not there (:func:`not_found`); a name that
    starts with ``~`` is said to be relative, as Detectron2 reads it (it expands no ``~``)."""
    if path.startswith("~"):
        return AccelDetError(
            f"MODEL.WEIGHTS file not found: {path} (relative to the working folder "
            f"{os.getcwd()}: Detectron2 does not expand ~)"
        )
    return not_found("MODEL.WEIGHTS file", path)


def read_weights_file(path: str, what: str = "MODEL.WEIGHTS") -> dict:
    """The checkpoint dict of the local file ``path`` in the form Detectron2's loader makes of it:
    ``.pkl`` read with the restricted unpickler (a pickle that names any global other than plain
    data's is refused unrun) and, unless it is in Detectron2's format (``model`` and
    ``__author__``), taken as Caffe2 / Detectron1 blobs; other files with
    ``torch.load(weights_only=True)``, a bare state dict put under ``model``. Its ``model`` must be
    a mapping of names to dense numeric tensors or arrays."""
    if path.endswith(".pkl"):
        data = load_pickle(path, f"{what} file")
        if not isinstance(data, dict):
            raise AccelDetError(f"{what} file {path} does not hold a dict")
        if not ("model" in data and "__author__" in data):  # Caffe2 / Detectron1 model zoo
            blobs = data.get("blobs", data)
            if not isinstance(blobs, Mapping) or not all(isinstance(k, str) for k in blobs):
                raise AccelDetError(f"{what} file {path} holds no state dict")
            blobs = {k: v for k, v in blobs.items() if not k.endswith("_momentum")}
            data = {"model": blobs, "__author__": "Caffe2", "matching_heuristics": True}
    else:
        data = load_torch_file(path, what)
        if not isinstance(data, dict):
            raise AccelDetError(f"{what} file {path} does not hold a state dict")
        if "model" not in data:
            data = {"model": data}
    check_state_dict(data["model"], path, what)
    return data


def check_state_dict(state, path: str, what: str = "MODEL.WEIGHTS") -> None:
    """Raise :class:`AccelDetError` unless ``state`` maps names to dense numeric tensors or numpy
    arrays (what ``load_state_dict`` takes)."""
    if not isinstance(state, Mapping):
        raise AccelDetError(f"{what} file {path} holds no state dict")
    for key, value in state.items():
        if not isinstance(key, str):
            raise AccelDetError(f"{what} file {path} has a state dict key that is not a string")
        dense = (isinstance(value, torch.Tensor) and value.layout == torch.strided) or (
            isinstance(value, np.ndarray) and value.dtype.kind in "biufc"
        )
        if not dense:
            kind = getattr(value, "layout", None) or getattr(value, "dtype", type(value).__name__)
            raise AccelDetError(f"{what} file {path}: {key} is not a dense numeric tensor ({kind})")


def read_checkpoint_state(path: str) -> Dict[str, tuple]:
    """Shapes of the tensors in a Detectron2 checkpoint (``.pth`` with a ``model`` entry, or a
    plain state dict; ``.pkl`` in Detectron2's pickle format, read as plain data), as Detectron2's
    loader reads it (:func:`read_weights_file`)."""
    return {k: tuple(np.shape(v)) for k, v in read_weights_file(path)["model"].items()}


def check_weights_fit(model: nn.Module, path: str, complete: bool = False) -> None:
    """Raise :class:`AccelDetError` unless the checkpoint at ``path`` holds every backbone tensor of
    ``model`` with the right shapes (naming the VGG layer) and a box head that is exactly the
    model's (:func:`check_box_head_fit`). ``complete`` (evaluation, export): every tensor of the
    model, the box predictor's too; otherwise a box predictor of other classes only warns, as in
    Detectron2 (a new data set)."""
    if not path or path.startswith(REMOTE_PREFIXES):
        return
    path = weights_file(path)
    if not os.path.isfile(path):
        raise weights_not_found(path)
    shapes = read_checkpoint_state(path)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    backbone = getattr(model, "backbone", None)

    backbone_keys = [k for k in expected if k.startswith("backbone.")]
    if backbone_keys and not any(k in shapes for k in backbone_keys):
        if any(k.startswith("features.") for k in shapes):
            raise AccelDetError(
                f"{path} looks like a torchvision VGG-16 state dict (keys features.*): convert it "
                f"with tools/convert_vgg16.py first"
            )
        raise AccelDetError(
            f"{path} has no backbone weights (no key starts with "
            f"'backbone.'); is it a Detectron2 checkpoint of this model?"
        )

    check_norms_folded(backbone, expected, shapes, path)
    mismatch = first_mismatch(expected, shapes, keys=backbone_keys)
    if mismatch is not None:
        key = mismatch.key
        layer = _layer_name(backbone, key)
        found = keys_under(shapes, ".".join(key.split(".")[:3]) + ".", kinds=("",))
        found_text = (
            ", ".join(f"{k} {list(v)}" for k, v in found.items()) or "nothing for this layer"
        )
        what = f"{key} {list(expected[key])}"
        plan = getattr(backbone, "plan", None)
        structure = ""
        if plan is not None and layer:
            entry = plan.get("layers", {}).get(layer, {})
            structure = (
                f" (the plan makes it {entry.get('structure', 'original')}, "
                f"rank={entry.get('rank')}, spatial_rank={entry.get('spatial_rank')})"
            )
        raise AccelDetError(
            f"weights {path} do not fit the model at backbone layer {layer or key}{structure}: the "
            f"model expects {what}, the file has {found_text}. Use the weights made with the same "
            f"plan (MODEL.ACCEL.PLAN)"
            + (" and MODEL.VGG.WIDTH" if hasattr(backbone, "layer_of_key") else "")
        )
    check_box_head_fit(model, shapes, path, complete)
    if complete:
        mismatch = first_mismatch(expected, shapes)
        if mismatch is not None:
            found = "is missing" if mismatch.found is None else f"is {list(mismatch.found)}"
            raise AccelDetError(
                f"weights {path} do not hold the whole model: {mismatch.key} {found}, the model "
                f"expects {list(mismatch.expected)}; evaluated or exported, that layer would keep "
                "its random initial weights"
            )


def check_norms_folded(backbone, expected: Mapping, shapes: Mapping, path: str) -> None:
    """Raise :class:`AccelDetError` when the model's backbone was built from a plan (its batch
    norms folded into the convs) but the file holds a conv's batch norm (``….norm.running_var``):
    a plain checkpoint, which would load the unfolded weights and leave the folded biases
    random."""
    if getattr(backbone, "plan", None) is None:
        return
    unfolded = next(
        (
            k
            for k in shapes
            if k.startswith("backbone.") and k.endswith(".norm.running_var") and k not in expected
        ),
        None,
    )
    if unfolded is not None:
        raise AccelDetError(
            f"weights {path} hold the batch norm {unfolded[: -len('.running_var')]}, which the "
            "accelerated backbone folds into its conv: they are a plain checkpoint; convert them "
            "for the plan first (accel_det.detection.accelerated_weights)"
        )


def check_box_head_fit(model: nn.Module, shapes: Mapping, path: str, complete: bool) -> None:
    """Raise :class:`AccelDetError` unless the file's box-head tensors (``shapes``) are exactly
    those of the model's :class:`~.box_head.VGG16BoxHead` (fc6/fc7, plain or factorized as the plan
    says): none missing, none left over. A file with no box head at all is refused when
    ``complete`` (evaluation, export), else the head starts from random weights with a warning
    (training from a backbone-only checkpoint). Other box heads are Detectron2's business."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    wanted = [k for k in expected if k.startswith(HEAD_PREFIX)]
    have = [k for k in shapes if k.startswith(HEAD_PREFIX)]
    head = getattr(getattr(model, "roi_heads", None), "box_head", None)
    if not hasattr(head, "plan"):  # another head than VGG16BoxHead: a new head, as Detectron2 has
        wanted = []
    if not wanted or (not have and not complete):
        if wanted:
            logger.warning(
                "%s has no box head (%s*): it starts from random weights", path, HEAD_PREFIX
            )
        return
    for key in wanted:
        if key in shapes and shapes[key] != expected[key]:
            raise AccelDetError(
                f"weights {path} do not fit the box head: {key} is {list(shapes[key])} in the "
                f"file, the model expects {list(expected[key])} (check MODEL.ROI_BOX_HEAD.FC_DIM, "
                f"POOLER_RESOLUTION and MODEL.VGG.WIDTH)"
            )
    odd = [k for k in wanted if k not in shapes] + [k for k in have if k not in expected]
    if not odd:
        return
    layer = odd[0][len(HEAD_PREFIX) :].split(".")[0]
    prefix = f"{HEAD_PREFIX}{layer}."
    found = keys_under(shapes, prefix, kinds=("",))
    model_keys = keys_under(expected, prefix, kinds=("",))
    raise AccelDetError(
        f"weights {path} do not fit the box head at {layer} ({_head_plan_text(model, layer)}): "
        f"the model expects {_listed(model_keys)}, the file has {_listed(found)}. Use the weights "
        "made with the same plan (MODEL.ACCEL.PLAN); a layer the file does not fill would keep "
        "random weights"
    )


def _head_plan_text(model: nn.Module, layer: str) -> str:
    """What the plan makes of box-head ``layer``, in words."""
    head = getattr(getattr(model, "roi_heads", None), "box_head", None)
    plan = getattr(head, "plan", None) or getattr(getattr(model, "backbone", None), "plan", None)
    if plan is None:
        return "no plan: the model's fc layers are plain"
    entry = (plan.get("layers") or {}).get(layer)
    if entry is None:
        return f"the plan has no {layer} entry: the model's {layer} is plain"
    return f"the plan makes it {entry.get('structure', 'original')}, rank={entry.get('rank')}"


def _listed(shapes: Mapping) -> str:
    return ", ".join(f"{k} {list(v)}" for k, v in shapes.items()) or "nothing for this layer"


def _layer_name(backbone: Optional[nn.Module], key: str) -> Optional[str]:
    if backbone is None or not hasattr(backbone, "layer_of_key"):
        return None
    return backbone.layer_of_key(key[len("backbone.") :])


def load_detector_weights(
    model: nn.Module, path: str, save_dir: str = "", resume: bool = False, complete: bool = False
) -> None:
    """Check (:func:`check_weights_fit`, ``complete`` for a model to evaluate or export) then load
    what Detectron2 would load: with ``resume``, the last checkpoint in ``save_dir`` when there is
    one, else ``path``."""
    checkpointer = AtomicCheckpointer(model, save_dir=save_dir)
    check_weights_fit(model, checkpoint_to_load(checkpointer, path, resume), complete)
    checkpointer.resume_or_load(path, resume=resume)


def checkpoint_to_load(checkpointer, weights: str, resume: bool) -> str:
    """The file ``checkpointer.resume_or_load(weights, resume=resume)`` reads: the one
    ``save_dir/last_checkpoint`` names (``resume`` and it exists), else ``weights``."""
    if not (resume and checkpointer.has_checkpoint()):
        return weights
    target = checkpointer.get_checkpoint_file()
    last = os.path.join(checkpointer.save_dir, LAST_CHECKPOINT)
    if not os.path.isfile(weights_file(target, f"--resume: the checkpoint {last} names,")):
        raise AccelDetError(
            f"--resume: {last} names {target}, which does not exist; remove it to start from "
            f"MODEL.WEIGHTS"
        )
    return target


class AtomicCheckpointer(DetectionCheckpointer):
    """Detectron2's checkpointer, but every file it loads is read as data
    (:func:`read_weights_file`: ``.pkl`` by the restricted unpickler, others by
    ``torch.load(weights_only=True)``), and
    ``model_*.pth`` and ``last_checkpoint`` are written to a temporary file, flushed to disk and
    renamed: a crash or a full disk mid-save leaves the previous files whole (and a failed write is
    one line naming the file). Remote folders: Detectron2's."""

    def _load_file(self, filename: str) -> dict:
        # Detectron2 calls this with the local file it resolved (URL query removed, downloaded)
        data = read_weights_file(filename, "checkpoint")
        if not filename.endswith(".pkl"):  # Detectron2's URL query, as its own _load_file reads it
            parsed = self._parsed_url_during_load
            query = parse_qs(parsed.query) if parsed is not None else {}
            if query.get(MATCHING_HEURISTICS) == ["True"]:
                data["matching_heuristics"] = True
        return data

    def save(self, name: str, **kwargs) -> None:
        if "://" in self.save_dir:
            return super().save(name, **kwargs)
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", path)
        atomic_torch_save(data, path)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if "://" in self.save_dir:
            return super().tag_last_checkpoint(last_filename_basename)
        atomic_write_text(last_filename_basename, os.path.join(self.save_dir, LAST_CHECKPOINT))
