"""The plan ``compress`` follows by default, for networks whose layers do not all take the spatial
step (beyond the paper).

The paper's 3d plan gives the channel and the spatial step √r each (§3.5), which assumes every
approximated layer is k×k. A ResNet spends about half its multiply-adds in 1×1 convs, which only
the channel step can reduce: with √r for them the k×k layers would have to make up the rest, often
more than even d'' = 1 can. There, one greedy of eqs. (13)-(14) runs over every layer, each priced
in its own structure (a k×k layer in the 3d structure at spatial ratio √r, a 1×1 layer as two 1×1
convs), and d'' is then found so that the whole network meets r
(:func:`~.joint.joint_plan` without fc layers). VGG-style networks, all k×k, keep the paper's plan.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch

from ..plan import Plan
from .complexity import ConvSpec
from .joint import joint_plan
from .options import SolverOptions, skipped_layers
from .planning import check_plan_pays, make_plan, spatial_layers


def make_layer_plan(
    specs: Sequence[ConvSpec],
    eigenvalues: Mapping[str, torch.Tensor],
    options: SolverOptions,
    *,
    spatial_spectra: Optional[Mapping[str, torch.Tensor]] = None,
) -> Plan:
    """:func:`~.planning.make_plan`, or for a 3d method on layers that cannot all be split
    spatially, one greedy over all of them (see the module's docstring)."""
    method = options.solver
    skip = set(skipped_layers(options, [s.name for s in specs]))
    solved = [s for s in specs if s.name not in skip]
    if not (method.spatial and method.channel) or len(spatial_layers(solved)) == len(solved):
        return make_plan(specs, eigenvalues, options, spatial_spectra=spatial_spectra)
    plan, _ = joint_plan(specs, [], [], eigenvalues, options, 0, {}, spatial_spectra)
    plan["planner"] = "one greedy over k×k (3d structure) and 1×1 (channel) layers"
    check_plan_pays(plan)
    return plan
