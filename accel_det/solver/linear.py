"""Fully connected layers (fc6, fc7) by the same solver: a channel decomposition with k = 1, from
responses sampled at RoIs (or images), asymmetric along the chain fc6 → ReLU → fc7.

Only d-dimensional responses are kept, never the (much wider) inputs: for fc6 the original
responses y = W x + b₀ and the regressor ŷ = W x̂ + b₀ (x̂: the input given by the approximated
backbone); for the next layer both follow from these and the solution, since the factorized fc6
computes M ŷ + b (eq. 3).
"""

from __future__ import annotations

import logging
from typing import Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from ..nn.factorized import CHANNEL, ORIGINAL
from ..nn.linear import FactorizedLinear
from .channel import LowRankResponse, relative_error
from .heldout import overfit_warning
from .methods import ChannelProblem, Method
from .options import SolverOptions

logger = logging.getLogger(__name__)


def set_linear_weights(
    layer: FactorizedLinear, source: nn.Linear, solution: LowRankResponse
) -> None:
    """Eq. (3) for an fc layer: ``reduce`` = Qᵀ W and ``expand`` = P with bias M b₀ + b, so that
    the layer computes M (W x + b₀) + b."""
    q, p = solution.Q.double(), solution.P.double()
    bias = solution.b.double()
    if source.bias is not None:
        bias = p @ (q.T @ source.bias.double()) + bias
    with torch.no_grad():
        layer.reduce.weight.copy_((q.T @ source.weight.double()).to(layer.reduce.weight))
        layer.expand.weight.copy_(p.to(layer.expand.weight))
        layer.expand.bias.copy_(bias.to(layer.expand.bias))


def set_folded_linear_weights(
    target: nn.Linear, source: nn.Linear, solution: LowRankResponse
) -> None:
    """A full-rank M folded into the layer: weight M W and bias M b₀ + b."""
    m = solution.matrix().double()
    bias = solution.b.double()
    if source.bias is not None:
        bias = m @ source.bias.double() + bias
    with torch.no_grad():
        target.weight.copy_((m @ source.weight.double()).to(target.weight))
        target.bias.copy_(bias.to(target.bias))


def solve_linear(
    linear: nn.Linear,
    entry: Mapping,
    target: torch.Tensor,
    regressed: torch.Tensor,
    method: Method,
    options: SolverOptions,
    relu: bool = True,
) -> Tuple[nn.Module, LowRankResponse]:
    """The layer a plan entry asks for, from the original responses ``target`` and the regressor
    ``regressed`` (both n × d); returns it and its solution."""
    problem = ChannelProblem(
        target=target,
        regressor=regressed if method.asymmetric else target,
        rank=entry["rank"],
        relu=relu,
        schedule=options.schedule,
        weight=linear.weight,
        bias=linear.bias,
    )
    solution = method.solve(problem)
    if entry.get("structure") == CHANNEL:
        layer: nn.Module = FactorizedLinear(linear.in_features, linear.out_features, entry["rank"])
        set_linear_weights(layer, linear, solution)
    else:  # full rank: folded into the layer itself
        layer = nn.Linear(linear.in_features, linear.out_features)
        set_folded_linear_weights(layer, linear, solution)
    layer.to(linear.weight.device)
    return layer, solution


def compress_linear_chain(
    linears: Mapping[str, nn.Linear],
    layers: Mapping[str, dict],
    target: torch.Tensor,
    regressed: torch.Tensor,
    method: Method,
    options: SolverOptions,
    heldout: Optional[torch.Tensor] = None,
) -> Dict[str, nn.Module]:
    """Solve a chain of fc layers with a ReLU after each (fc6 → ReLU → fc7), first to last.

    ``target`` and ``regressed`` are the first layer's responses to the original and to the
    approximated input; rows marked in ``heldout`` are kept out of the solves. Each plan entry
    (in ``layers``) gets its ``error`` on the other rows and its ``heldout_error``; layers whose
    entry is ``original`` without a rank stay as they are. Returns the new layers."""
    result = {}
    names = list(linears)
    held = heldout if heldout is not None else torch.zeros(len(target), dtype=torch.bool)
    train = ~held
    for number, name in enumerate(names):
        linear, entry = linears[name], layers[name]
        if entry.get("structure", ORIGINAL) == ORIGINAL and entry.get("rank") is None:
            layer, output = linear, regressed
        else:
            layer, solution = solve_linear(
                linear, entry, target[train], regressed[train], method, options
            )
            output = solution.apply(regressed)
        entry["error"] = relative_error(target[train], output[train])
        entry["heldout_error"] = relative_error(target[held], output[held]) if held.any() else None
        warning = overfit_warning(name, entry, int(train.sum()))
        if warning:
            logger.warning(warning)
        result[name] = layer
        if number + 1 < len(names):  # the next layer's responses, original and approximated
            following = linears[names[number + 1]]
            with torch.no_grad():
                target = following(target.clamp(min=0).to(following.weight))
                regressed = following(output.clamp(min=0).to(following.weight))
    return result
