"""Any CNN as plans see it: its conv layers by name, batch norms folded, and a plan applied by
qualified module name.

A layer's name is its qualified module name (``layer3.4.conv2``), except in a VGG-style chain
(torchvision's ``features`` layout), where it is the VGG name (``conv1_1`` … ``conv5_3``, an alias
of the index). A plan entry records the module it replaces (``module``); plans written before they
did are read by their VGG names.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Dict, Mapping, Optional, Tuple

from torch import nn

from ..errors import AccelDetError
from .chain import check_entry_fits, conv_names
from .factorized import ORIGINAL, FactorizedConv2d, build_layer
from .fold import fold_into_convs
from .graph import LayerGraph, analyse, conv_paths, set_module
from .linear import is_linear_entry

# what a VGG-style chain holds (batch norms are folded away before solving)
CHAIN_MODULES = (
    nn.Conv2d,
    FactorizedConv2d,
    nn.ReLU,
    nn.MaxPool2d,
    nn.BatchNorm2d,
    nn.Identity,
)


def chain_aliases(model: nn.Module) -> Optional[Dict[str, str]]:
    """Module path -> VGG name (``"0"`` -> ``conv1_1``) for a VGG-style chain: an
    ``nn.Sequential`` of convs, ReLUs, max-pools (and batch norms); None for any other module."""
    if not isinstance(model, nn.Sequential) or not all(isinstance(m, CHAIN_MODULES) for m in model):
        return None
    plain = nn.Sequential(*[m for m in model if not isinstance(m, (nn.BatchNorm2d, nn.Identity))])
    positions = [i for i, m in enumerate(model) if not isinstance(m, (nn.BatchNorm2d, nn.Identity))]
    try:
        names = conv_names(plain)
    except AccelDetError:
        return None
    return {str(positions[index]): name for name, index in names.items()}


def layer_names(model: nn.Module, paths) -> "OrderedDict[str, str]":
    """Name -> module path of the conv layers ``paths`` of ``model``, in that order."""
    aliases = chain_aliases(model) or {}
    return OrderedDict((aliases.get(path, path), path) for path in paths)


def prepare(model: nn.Module, use_fx: bool = True) -> Tuple[nn.Module, LayerGraph]:
    """An eval copy of ``model`` with every batch norm after a conv folded into it, and what
    :func:`~accel_det.nn.graph.analyse` found. ``model`` itself is left untouched."""
    folded = copy.deepcopy(model).eval()
    graph = analyse(folded, use_fx=use_fx)
    fold_into_convs(folded, graph.convs.values())
    return folded, graph


def plan_paths(model: nn.Module, plan: Mapping) -> Dict[str, str]:
    """Name -> module path of every conv entry of ``plan`` in ``model``: an entry's ``module``, a
    VGG name of a chain, or the name itself. Raises :class:`AccelDetError` naming the entries
    that name no conv of ``model``."""
    aliases = {name: path for path, name in (chain_aliases(model) or {}).items()}
    convs = set(conv_paths(model))
    result, unknown = {}, []
    for name, entry in plan.get("layers", {}).items():
        if is_linear_entry(entry):
            continue
        path = entry.get("module") or aliases.get(name, name)
        if path in convs:
            result[name] = path
        else:
            unknown.append(name)
    if unknown:
        raise AccelDetError(
            f"plan names layers the network does not have: {', '.join(sorted(unknown))}"
        )
    return result


def apply_plan(model: nn.Module, plan: Mapping) -> nn.Module:
    """A copy of ``model`` with its batch norms folded (:func:`prepare`) and each conv the plan
    names replaced by the structure of its entry (fc entries are
    :func:`~accel_det.nn.chain.apply_plan_to_linear`'s), by qualified module name: the
    architecture :func:`accel_det.solver.compress` made, for its state dict.

    New factorized layers are freshly initialised: load their weights from a state dict. Raises
    :class:`AccelDetError` when the plan does not fit."""
    new, _ = prepare(model)
    for name, path in plan_paths(new, plan).items():
        entry = plan["layers"][name]
        conv = new.get_submodule(path)
        check_entry_fits(name, conv, entry)
        if entry.get("structure", ORIGINAL) != ORIGINAL:
            set_module(new, path, build_layer(conv, entry))
    return new
