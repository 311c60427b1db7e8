"""A detector's RPN head and box head, accelerated by the plan's entries of their part:
``build_accel_rpn_head`` and ``build_accel_box_head``.

    MODEL.RPN.HEAD_NAME build_accel_rpn_head         # wraps MODEL.ACCEL.RPN_HEAD_NAME
    MODEL.ROI_BOX_HEAD.NAME build_accel_box_head     # wraps MODEL.ACCEL.BOX_HEAD_NAME
    MODEL.ACCEL.PLAN plan.json

As ``build_accel_backbone`` does for the backbone: the head the wrapped name builds, its layers the
plan names replaced. A plan entry of a head names its ``part`` (``proposal_generator.rpn_head``,
``roi_heads.box_head``) and its ``module`` within it (``conv``; ``fc1``, ``fc2``): a conv becomes
a :class:`~accel_det.nn.FactorizedConv2d` that keeps the activation Detectron2's ``Conv2d``
applied (the RPN head's ReLU), an fc a :class:`~accel_det.nn.FactorizedLinear`. Checkpoint names
stay Detectron2's (``proposal_generator.rpn_head.conv.reduce.weight``,
``roi_heads.box_head.fc1.expand.bias``); the weights come from ``tools/compress_detector.py``.
"""

from __future__ import annotations

from typing import Mapping

from detectron2.modeling.proposal_generator.rpn import RPN_HEAD_REGISTRY
from detectron2.modeling.roi_heads import ROI_BOX_HEAD_REGISTRY
from torch import nn

from ..errors import AccelDetError
from ..nn.chain import apply_plan_to_linear, check_entry_fits
from ..nn.factorized import ORIGINAL, build_layer
from ..nn.graph import set_module
from ..nn.linear import is_linear_entry
from ..plan import linear_entries, part_plan
from .accel_backbone import plan_name
from .backbone import load_plan
from .registry import register_once

RPN_HEAD_PART = "proposal_generator.rpn_head"
BOX_HEAD_PART = "roi_heads.box_head"


def accelerate_head(head: nn.Module, plan: Mapping, part: str, source: str = "") -> nn.Module:
    """``head`` with the layers of ``plan``'s entries of ``part`` replaced (in place; returned).
    Raises :class:`AccelDetError` naming the first entry that does not fit."""
    entries = part_plan(plan, part)["layers"]
    for module, entry in entries.items():
        name = f"{part}.{module}"
        try:
            layer = head.get_submodule(module)
        except AttributeError:
            raise AccelDetError(
                f"{plan_name(source)} was not made for this detector: it names layer {name}, "
                f"which its {type(head).__name__} does not have"
            ) from None
        try:
            new = accelerated_layer(name, layer, entry)
        except AccelDetError as error:
            raise AccelDetError(f"{plan_name(source)} does not fit {name}: {error}") from None
        if new is not layer:
            set_module(head, module, new)
    return head


def accelerated_layer(name: str, layer: nn.Module, entry: Mapping) -> nn.Module:
    """The layer a head's plan entry asks for (``layer`` itself for an ``original`` one)."""
    if is_linear_entry(entry):
        if not isinstance(layer, nn.Linear):
            raise AccelDetError(f"the plan has an fc entry, the detector a {type(layer).__name__}")
        return apply_plan_to_linear(layer, name, {"layers": {name: entry}})
    if not isinstance(layer, nn.Conv2d):
        raise AccelDetError(f"the plan has a conv entry, the detector a {type(layer).__name__}")
    check_entry_fits(name, layer, entry)
    if entry.get("structure", ORIGINAL) == ORIGINAL:
        return layer
    if getattr(layer, "norm", None) is not None:
        raise AccelDetError("a conv with its own norm is factorized only with the norm folded")
    return with_activation_of(layer, build_layer(layer, entry))


def with_activation_of(conv: nn.Module, factorized: nn.Sequential) -> nn.Sequential:
    """``factorized`` followed by the activation Detectron2's ``Conv2d`` ``conv`` applies inside
    the module (none for a plain conv); it has no parameters, so checkpoint names do not change."""
    activation = getattr(conv, "activation", None)
    if activation is not None:
        factorized.add_module("activation", activation)
    return factorized


def check_plan_parts(cfg, plan: Mapping) -> None:
    """Refuse a plan whose entries the config's heads would not build: fc entries of no part
    (fc6, fc7) need ``VGG16BoxHead``, entries of a head part its accelerated builder."""
    source = cfg.MODEL.ACCEL.PLAN
    fcs = list(linear_entries(part_plan(plan)))
    if fcs and cfg.MODEL.ROI_BOX_HEAD.NAME != "VGG16BoxHead":
        raise AccelDetError(
            f"the plan {source} has fc entries ({', '.join(fcs)}) that only VGG16BoxHead builds, "
            f"but MODEL.ROI_BOX_HEAD.NAME is {cfg.MODEL.ROI_BOX_HEAD.NAME}"
        )
    box = cfg.MODEL.ROI_BOX_HEAD.NAME
    heads = (
        (RPN_HEAD_PART, "MODEL.RPN.HEAD_NAME", cfg.MODEL.RPN.HEAD_NAME, build_accel_rpn_head),
        (BOX_HEAD_PART, "MODEL.ROI_BOX_HEAD.NAME", box, build_accel_box_head),
    )
    for part, key, name, builder in heads:
        entries = part_plan(plan, part)["layers"]
        if entries and name != builder.__name__:
            raise AccelDetError(
                f"the plan {source} has layers of {part} ({', '.join(entries)}) that only "
                f"{builder.__name__} builds, but {key} is {name}: add the overrides the plan "
                "records (config_overrides)"
            )


def wrapped_head(cfg, registry, name: str):
    """The head builder ``name`` (``MODEL.ACCEL.RPN_HEAD_NAME`` / ``BOX_HEAD_NAME``), checked."""
    if name.startswith("build_accel_") or name not in registry:
        known = ", ".join(sorted(n for n, _ in registry if not n.startswith("build_accel_")))
        raise AccelDetError(f"{name!r} is not a head to accelerate ({known})")
    return registry.get(name)


def build_accel_rpn_head(cfg, input_shape):
    """The RPN head ``MODEL.ACCEL.RPN_HEAD_NAME`` builds, accelerated by ``MODEL.ACCEL.PLAN``."""
    head = wrapped_head(cfg, RPN_HEAD_REGISTRY, cfg.MODEL.ACCEL.RPN_HEAD_NAME)(cfg, input_shape)
    plan = load_plan(cfg.MODEL.ACCEL.PLAN, builder=build_accel_rpn_head.__name__)
    return accelerate_head(head, plan, RPN_HEAD_PART, cfg.MODEL.ACCEL.PLAN)


def build_accel_box_head(cfg, input_shape):
    """The box head ``MODEL.ACCEL.BOX_HEAD_NAME`` builds, accelerated by ``MODEL.ACCEL.PLAN``."""
    head = wrapped_head(cfg, ROI_BOX_HEAD_REGISTRY, cfg.MODEL.ACCEL.BOX_HEAD_NAME)(cfg, input_shape)
    plan = load_plan(cfg.MODEL.ACCEL.PLAN, builder=build_accel_box_head.__name__)
    return accelerate_head(head, plan, BOX_HEAD_PART, cfg.MODEL.ACCEL.PLAN)


def register() -> None:
    """Add both builders to Detectron2's head registries (idempotent)."""
    register_once(RPN_HEAD_REGISTRY, build_accel_rpn_head)
    register_once(ROI_BOX_HEAD_REGISTRY, build_accel_box_head)
