"""Checking that ``MODEL.WEIGHTS`` fits the model before Detectron2 loads it.

Detectron2's ``DetectionCheckpointer`` only *warns* about missing keys and shape mismatches and
then trains from random weights; for a backbone built from a plan that silently wastes a run.
:func:`check_weights_fit` turns a backbone or fc6/fc7 mismatch into one error that names the
layer and both shapes. Box-predictor mismatches stay warnings (a new data set has other classes).
"""

from __future__ import annotations

import logging
import os
import pickle
from typing import Dict, Mapping, Optional

import numpy as np
import torch
from torch import nn

from ..errors import AccelDetError
from ..models.fit import first_mismatch, keys_under
from ..utils.io import load_torch_file

logger = logging.getLogger(__name__)

REMOTE_PREFIXES = ("detectron2://", "http://", "https://", "catalog://", "manifold://")
HEAD_PREFIX = "roi_heads.box_head."


def read_checkpoint_state(path: str) -> Dict[str, tuple]:
    """Shapes of the tensors in a Detectron2 checkpoint (``.pth`` with a ``model`` entry, or a
    plain state dict; ``.pkl`` in Detectron2's pickle format)."""
    if path.endswith(".pkl"):
        if not os.path.isfile(path):
            raise AccelDetError(f"MODEL.WEIGHTS file not found: {path}")
        try:
            with open(path, "rb") as f:
                data = pickle.load(f, encoding="latin1")
        except Exception as error:
            raise AccelDetError(f"cannot read weights file {path}: {error}") from None
    else:
        data = load_torch_file(path, "MODEL.WEIGHTS")
    if isinstance(data, Mapping) and isinstance(data.get("model"), Mapping):
        data = data["model"]
    if not isinstance(data, Mapping):
        raise AccelDetError(f"{path} does not hold a state dict")
    return {
        k: tuple(np.shape(v)) for k, v in data.items() if isinstance(v, (torch.Tensor, np.ndarray))
    }


def check_weights_fit(model: nn.Module, path: str) -> None:
    """Raise :class:`AccelDetError` unless the checkpoint at ``path`` holds every backbone tensor of
    ``model`` (and fc6/fc7 when it has them) with the right shapes; naming the VGG layer."""
    if not path or path.startswith(REMOTE_PREFIXES):
        return
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        raise AccelDetError(f"MODEL.WEIGHTS file not found: {path}")
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
            f"plan (MODEL.ACCEL.PLAN) and MODEL.VGG.WIDTH"
        )
    for key, shape in expected.items():
        if key.startswith(HEAD_PREFIX) and key in shapes and shapes[key] != shape:
            raise AccelDetError(
                f"weights {path} do not fit the box head: {key} is {list(shapes[key])} in the "
                f"file, the model expects {list(shape)} (check MODEL.ROI_BOX_HEAD.FC_DIM, "
                f"POOLER_RESOLUTION and MODEL.VGG.WIDTH)"
            )
    missing_head = [k for k in expected if k.startswith(HEAD_PREFIX) and k not in shapes]
    if missing_head:
        logger.warning(
            "%s has no %s: the box head starts from random weights", path, ", ".join(missing_head)
        )


def _layer_name(backbone: Optional[nn.Module], key: str) -> Optional[str]:
    if backbone is None or not hasattr(backbone, "layer_of_key"):
        return None
    return backbone.layer_of_key(key[len("backbone.") :])


def load_detector_weights(
    model: nn.Module, path: str, save_dir: str = "", resume: bool = False
) -> None:
    """Check (:func:`check_weights_fit`) then load ``path`` with Detectron2's
    ``DetectionCheckpointer`` (``resume``: the last checkpoint in ``save_dir`` when there is
    one)."""
    from detectron2.checkpoint import DetectionCheckpointer

    checkpointer = DetectionCheckpointer(model, save_dir=save_dir)
    if not (resume and checkpointer.has_checkpoint()):
        check_weights_fit(model, path)
    checkpointer.resume_or_load(path, resume=resume)
