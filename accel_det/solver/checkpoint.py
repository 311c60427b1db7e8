"""The solver's own checkpoint: the layers solved so far, rewritten atomically after each layer,
so that a resumed run ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import json
from typing import Mapping

from torch import nn

from ..errors import AccelDetError
from ..nn.factorized import build_layer
from ..utils.io import atomic_torch_save, load_torch_file

# What a resumed run must share with the checkpoint's run (the plan records them).
CHECKPOINT_KEYS = (
    "method",
    "speedup",
    "rank_selection",
    "rank_cost",
    "round_ranks_to",
    "skip",
    "schedule",
    "seed",
    "samples_per_image",
    "num_images",
)
LAYER_KEYS = ("structure", "rank", "spatial_rank")


def save_checkpoint(path: str, plan: Mapping, approximated: nn.Sequential, done) -> None:
    """Write the plan, the names of the finished layers and the weights to ``path`` atomically."""
    state = {k: v.detach().cpu() for k, v in approximated.state_dict().items()}
    atomic_torch_save({"plan": json.dumps(plan), "done": sorted(done), "state_dict": state}, path)


def load_checkpoint(
    path: str, plan: dict, approximated: nn.Sequential, names: Mapping[str, int]
) -> set:
    """Restore the finished layers of a checkpoint into ``approximated`` and ``plan``; check that
    it was made with this run's options and plan. Returns the names of the finished layers."""
    saved = load_torch_file(path, "compression checkpoint")
    try:
        saved_plan = json.loads(saved["plan"])
        done = set(saved["done"])
        state = saved["state_dict"]
    except (KeyError, TypeError, ValueError) as error:
        raise AccelDetError(f"{path} is not a compression checkpoint ({error})") from None
    for key in CHECKPOINT_KEYS:
        if saved_plan.get(key) != plan.get(key):
            raise AccelDetError(
                f"checkpoint {path} was made with {key}={saved_plan.get(key)!r}, this run has "
                f"{plan.get(key)!r}; start over without --resume or use the same options"
            )
    for name in done:
        if any(
            saved_plan["layers"][name].get(k) != plan["layers"][name].get(k) for k in LAYER_KEYS
        ):
            raise AccelDetError(f"checkpoint {path}: layer {name} does not match this run's plan")
        plan["layers"][name] = saved_plan["layers"][name]
        approximated[names[name]] = build_layer(approximated[names[name]], plan["layers"][name])
    approximated.load_state_dict(state)
    return done
