"""The solver's own checkpoint: the layers solved so far, rewritten atomically after each layer,
so that a resumed run ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import hashlib
import json
from typing import Mapping

import torch
from torch import nn

from ..errors import AccelDetError
from ..nn.factorized import build_layer
from ..nn.graph import set_module
from ..utils.io import atomic_torch_save, load_torch_file
from .options import PLAN_OPTIONS

# What a resumed run must share with the checkpoint's run (the plan records them).
CHECKPOINT_KEYS = PLAN_OPTIONS + ("num_images",)
LAYER_KEYS = ("structure", "rank", "spatial_rank")
# The fingerprints of what the solver was given (not in the plan): name -> what they hash.
FINGERPRINTS = {
    "images": "the image batches (every image's values)",
    "weights": "the original layers' weights",
}


def tensors_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 of the names, dtypes, shapes and bytes of a state dict's tensors."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}\t{tensor.dtype}\t{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def save_checkpoint(
    path: str, plan: Mapping, approximated: nn.Module, done, fingerprints: Mapping
) -> None:
    """Write the plan, the names of the finished layers, the weights and the ``fingerprints`` of
    the inputs (:data:`FINGERPRINTS`) to ``path`` atomically."""
    state = {k: v.detach().cpu() for k, v in approximated.state_dict().items()}
    atomic_torch_save(
        {
            "plan": json.dumps(plan),
            "done": sorted(done),
            "state_dict": state,
            "fingerprints": dict(fingerprints),
        },
        path,
    )


def load_checkpoint(
    path: str,
    plan: dict,
    approximated: nn.Module,
    names: Mapping[str, str],
    fingerprints: Mapping,
) -> set:
    """Restore the finished layers of a checkpoint into ``approximated`` and ``plan`` (``names``:
    layer name -> qualified module name); check that
    it was made with this run's options, plan and inputs (``fingerprints``, as
    :func:`save_checkpoint` takes them). Returns the names of the finished layers."""
    saved = load_torch_file(path, "compression checkpoint")
    try:
        saved_plan = json.loads(saved["plan"])
        done = set(saved["done"])
        state = saved["state_dict"]
        saved_layers = saved_plan["layers"]
        if not isinstance(saved_layers, Mapping) or not isinstance(state, Mapping):
            raise TypeError("its plan or state dict is not a mapping")
    except (KeyError, TypeError, ValueError, RecursionError) as error:
        raise AccelDetError(f"{path} is not a compression checkpoint ({error})") from None
    for key in CHECKPOINT_KEYS:
        if saved_plan.get(key) != plan.get(key):
            raise AccelDetError(
                f"checkpoint {path} was made with {key}={saved_plan.get(key)!r}, this run has "
                f"{plan.get(key)!r}; start over without --resume or use the same options"
            )
    check_fingerprints(path, saved.get("fingerprints"), fingerprints)
    for name in sorted(done, key=str):
        if name not in names or name not in plan["layers"] or name not in saved_layers:
            raise AccelDetError(
                f"checkpoint {path} says layer {name!r} is done, which this run does not solve; "
                "start over without --resume"
            )
        entry = saved_layers[name]
        if not isinstance(entry, Mapping) or any(
            entry.get(k) != plan["layers"][name].get(k) for k in LAYER_KEYS
        ):
            raise AccelDetError(f"checkpoint {path}: layer {name} does not match this run's plan")
        plan["layers"][name] = dict(entry)
        module_path = names[name]
        layer = build_layer(approximated.get_submodule(module_path), plan["layers"][name])
        set_module(approximated, module_path, layer)
    try:
        approximated.load_state_dict(state)
    except (RuntimeError, TypeError, KeyError, ValueError) as error:
        raise AccelDetError(
            f"checkpoint {path} does not hold the weights of the layers it names "
            f"({' '.join(str(error).split())[:300]}); start over without --resume"
        ) from None
    return done


def check_fingerprints(path: str, saved, fingerprints: Mapping) -> None:
    """Refuse a checkpoint made from other images or weights than this run's, or one that does not
    say (made before it recorded them)."""
    if not isinstance(saved, Mapping):
        raise AccelDetError(
            f"checkpoint {path} does not record which images and weights it was made from (an "
            f"older version made it); start over without --resume"
        )
    for key, what in FINGERPRINTS.items():
        if saved.get(key) != fingerprints[key]:
            raise AccelDetError(
                f"checkpoint {path} was made from other {key} than this run (sha256 of {what}: "
                f"{str(saved.get(key))[:12]}..., this run: {fingerprints[key][:12]}...); start "
                f"over without --resume or use the same {key}"
            )
