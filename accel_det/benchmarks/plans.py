"""Plans the speed benchmark times: the paper's Table 6 ranks, the solver's plans from sampled
eigenvalues (as solved and with ranks rounded), and what a reader needs of a plan."""

from __future__ import annotations

import os
import re
from typing import Dict, List, Mapping, Sequence, Tuple

import torch
from torch import nn

from ..errors import AccelDetError
from ..nn.factorized import CHANNEL
from ..nn.network import apply_plan
from ..plan import Plan, plan_fingerprint
from ..solver import SolverOptions, make_plan, plan_from_structures
from ..solver.channel import covariance, eigen_descending
from ..solver.complexity import whole_model_speedup
from ..solver.network import conv_specs
from ..solver.responses import ResponseSampler
from ..solver.targets import find_targets

# Paper Table 6, VGG-16 at 4x with rank selection (asym., conv1_1 kept): d' of conv1_2 ... conv5_3.
TABLE6_4X_RANKS = {
    "conv1_2": 11,
    "conv2_1": 25,
    "conv2_2": 28,
    "conv3_1": 52,
    "conv3_2": 46,
    "conv3_3": 56,
    "conv4_1": 104,
    "conv4_2": 92,
    "conv4_3": 100,
    "conv5_1": 232,
    "conv5_2": 224,
    "conv5_3": 214,
}
TABLE6_NAME = "asym (Table 6 ranks)"


def table6_plan(features: nn.Sequential, input_hw: Tuple[int, int] = (224, 224)) -> dict:
    """The paper's VGG-16 4x ranks (Table 6, asym., rank selection) as a ``channel`` plan."""
    specs = conv_specs(features, input_hw)
    widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    if [s.out_channels for s in specs] != widths:
        raise AccelDetError("the Table 6 ranks are for full-width VGG-16 (width 1)")
    layers = {name: {"structure": CHANNEL, "rank": rank} for name, rank in TABLE6_4X_RANKS.items()}
    return plan_from_structures(
        specs, layers, method="asym", source="paper Table 6, 4x, rank selection", skip=["conv1_1"]
    )


def sampled_eigenvalues(
    model: nn.Module, images: torch.Tensor, *, samples_per_image: int, seed: int = 0
) -> Dict[str, torch.Tensor]:
    """Per conv layer of ``model`` (a VGG ``features`` chain, a ResNet, any network the solver
    takes), the eigenvalues (largest first) of the covariance of its responses sampled at random
    positions of ``images`` (what rank selection reads, eqs. 13-14)."""
    targets = find_targets(model, tuple(images.shape[-2:]))
    batches = [images[i : i + 8] for i in range(0, len(images), 8)]
    sampler = ResponseSampler(
        batches, samples_per_image, seed, progress=False, runner=targets.runner()
    )
    truth = sampler.original(targets.model, targets.names)
    return {name: eigen_descending(covariance(truth[name])[1])[0] for name in targets.names}


def solver_plans(
    features: nn.Sequential,
    eigenvalues: Mapping[str, torch.Tensor],
    input_hw: Tuple[int, int],
    *,
    speedup: float = 4.0,
    methods: Sequence[str] = ("asym", "asym3d"),
    round_to: int = 16,
    skip: Sequence[str] = ("conv1_1",),
) -> Dict[str, dict]:
    """The plans ``compress`` would follow (rank selection by multiply-adds) for each method, as
    solved and with d' and d'' rounded to ``round_to`` (the solver's ``round_ranks_to``)."""
    specs = conv_specs(features, input_hw)
    plans = {}
    for method in methods:
        for multiple in (1, round_to) if round_to > 1 else (1,):
            options = SolverOptions(
                speedup=speedup, method=method, skip=tuple(skip), round_ranks_to=multiple
            )
            plans[method if multiple == 1 else f"{method}, ranks x{multiple}"] = make_plan(
                specs, eigenvalues, options
            )
    return plans


def plan_summary(plan: Mapping) -> dict:
    """What a reader needs of a plan: method, theoretical speedup, d' and d'' per layer."""
    layers = plan["layers"]
    return {
        "method": plan.get("method"),
        "theoretical_speedup": plan.get("theoretical_speedup"),
        **(
            {"theoretical_speedup_network": plan["theoretical_speedup_network"]}
            if plan.get("theoretical_speedup_network")
            else {}
        ),
        "fingerprint": plan_fingerprint(plan),
        "ranks": {n: e.get("rank") for n, e in layers.items() if e.get("rank")},
        "spatial_ranks": {
            n: e.get("spatial_rank") for n, e in layers.items() if e.get("spatial_rank")
        },
        **({"source": plan["source"]} if isinstance(plan.get("source"), str) else {}),
        **({"file": plan["file"]} if plan.get("file") else {}),
    }


def named_path(item: str) -> Tuple[str, str]:
    """A ``[NAME=]PATH`` plan argument as (name, path), the name defaulting to the file's stem."""
    name, _, path = item.rpartition("=") if "=" in item else ("", "", item)
    return name or os.path.splitext(os.path.basename(path))[0], path


def named_paths(items: Sequence[str]) -> List[Tuple[str, str]]:
    """``[NAME=]PATH`` plan arguments as (name, path) pairs (:func:`named_path`); each file must
    exist and the names must differ."""
    pairs = [named_path(item) for item in items]
    for _, path in pairs:
        if not os.path.isfile(path):
            raise AccelDetError(f"plan file not found: {path}")
    if len({n for n, _ in pairs}) < len(pairs):
        raise AccelDetError("two plans have the same name: name them, --plan NAME=PATH")
    return pairs


def read_plan_files(
    items: Sequence[str], features: nn.Sequential, input_hw: Tuple[int, int], width: float
) -> Tuple[Dict[str, dict], Dict[str, str]]:
    """The plans of ``[NAME=]PATH`` items (the name defaulting to the file's stem), each checked
    to fit ``features`` (a theoretical speedup filled in where the file has none), and their
    absolute paths by name."""
    plans, files = {}, {}
    for item in items:
        name, path = named_path(item)
        plan = Plan.read(path)
        try:
            apply_plan(features, plan)
            if not isinstance(plan.get("theoretical_speedup"), (int, float)):
                plan["theoretical_speedup"] = theoretical_speedup(features, plan, input_hw)
        except (
            AccelDetError,
            ValueError,
            TypeError,
            KeyError,
            AttributeError,
        ) as error:  # malformed layer entries too
            detail = (
                error
                if isinstance(error, AccelDetError)
                else f"a malformed layer entry ({error!r})"
            )
            raise AccelDetError(
                f"plan {path} does not fit VGG-16 at width {width}: {detail}"
            ) from None
        plan["file"] = os.path.abspath(path)
        if name in files:
            raise AccelDetError(f"two --plan files are named {name!r}: name them, --plan NAME=PATH")
        plans[name] = plan
        files[name] = os.path.abspath(path)
    return plans, files


def theoretical_speedup(features: nn.Sequential, plan: Mapping, input_hw: Tuple[int, int]) -> float:
    """The whole-model theoretical speedup of ``plan`` on ``features`` at ``input_hw``."""
    layers = {
        name: {"structure": "original", **entry} for name, entry in plan["layers"].items()
    }  # as apply_plan reads them
    return whole_model_speedup(conv_specs(features, input_hw), layers)


def grid_plan_names(grid_plans, plans, files, round_ranks: int) -> List[str]:
    """The plans the grid times: ``grid_plans`` (names, or the paths given to --plan), else the
    rounded solver plans and every plan file."""
    if grid_plans:
        by_path = {os.path.abspath(p): n for n, p in files.items()}
        names = [by_path.get(os.path.abspath(n), n) for n in grid_plans]
        unknown = [n for n in names if n not in plans]
        if unknown:
            raise AccelDetError(f"--grid-plans: unknown plan(s) {unknown}; known: {sorted(plans)}")
        return names
    rounded = [n for n in plans if n.endswith(f", ranks x{round_ranks}")]
    return rounded + [n for n in files if n not in rounded]


def slug(name: str) -> str:
    """A plan's name as a file name."""
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()
