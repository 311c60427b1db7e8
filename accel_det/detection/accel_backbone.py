"""Any registered Detectron2 backbone, accelerated by a solver plan: ``build_accel_backbone``.

    MODEL.BACKBONE.NAME build_accel_backbone
    MODEL.ACCEL.BACKBONE_NAME build_resnet_fpn_backbone      # the backbone to accelerate
    MODEL.ACCEL.PLAN plan.json                               # which of its convs, how

Detectron2 configs swap backbones by ``MODEL.BACKBONE.NAME``; so does this one, and the backbone
it wraps is named the same way, by ``MODEL.ACCEL.BACKBONE_NAME`` (``build_resnet_backbone`` for
the C4 detectors, ``build_resnet_fpn_backbone``, ``build_vgg16_backbone``, a user's own). That
keeps a config explicit about the network it builds, and Detectron2's ``build_backbone`` and
``GeneralizedRCNN`` untouched: applying the plan inside ``build_backbone`` whenever
``MODEL.ACCEL.PLAN`` is set would need them patched, and would change what configs that already
set a plan (``build_accel_vgg16_backbone``, which stays as it is) build.

The wrapped builder builds its backbone as usual; then :func:`~accel_det.nn.apply_plan` folds
every batch norm that follows a conv into it (FrozenBN, BN, the ``norm`` of Detectron2's
``Conv2d``; §3.3 works on the folded network) and replaces each conv the plan names, by its
qualified module name, with the factorized layer of its entry (eq. 3, Fig. 1; §5 for the spatial
part). The result is the backbone's own class: ``output_shape()``, ``size_divisibility`` and the
checkpoint names stay Detectron2's (``backbone.bottom_up.res2.0.conv1.weight`` for a layer the
plan keeps, now with the folded ``.bias`` and no ``.norm.*``; ``….conv2.reduce.weight``,
``….conv2.expand.weight`` for a factorized one). A plain checkpoint therefore does not load as it
is: :func:`accelerated_weights` converts it. Layers frozen by ``MODEL.BACKBONE.FREEZE_AT`` stay
frozen, factorized or not, with the bias the fold gives them; a trainable conv's folded bias is
trainable (its batch norm is gone: a detector trained with ``NORM: BN`` is fine-tuned without it).
"""

from __future__ import annotations

from typing import Dict, Iterable, Mapping, Optional

import numpy as np
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn

from ..errors import AccelDetError
from ..nn.graph import conv_paths
from ..nn.network import apply_plan, chain_aliases
from ..plan import Plan, conv_entries, part_plan
from .backbone import load_plan
from .registry import register_once

BACKBONE_PREFIX = "backbone."


def wrapped_builder_name(cfg) -> str:
    """``MODEL.ACCEL.BACKBONE_NAME``, checked: a registered builder other than this one."""
    name = cfg.MODEL.ACCEL.BACKBONE_NAME
    if not name:
        raise AccelDetError(
            "MODEL.ACCEL.BACKBONE_NAME is empty: build_accel_backbone needs the name of the "
            "backbone builder to accelerate (e.g. build_resnet_fpn_backbone)"
        )
    if name == build_accel_backbone.__name__:
        raise AccelDetError(f"MODEL.ACCEL.BACKBONE_NAME cannot be {name} itself")
    if name not in BACKBONE_REGISTRY:
        known = ", ".join(
            sorted(n for n, _ in BACKBONE_REGISTRY if n != build_accel_backbone.__name__)
        )
        raise AccelDetError(
            f"MODEL.ACCEL.BACKBONE_NAME {name} is not a registered backbone builder ({known})"
        )
    return name


def build_plain_backbone(cfg, input_shape: Optional[ShapeSpec] = None) -> Backbone:
    """The backbone ``MODEL.ACCEL.BACKBONE_NAME`` builds from ``cfg``, as it is."""
    if input_shape is None:
        input_shape = ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))
    return BACKBONE_REGISTRY.get(wrapped_builder_name(cfg))(cfg, input_shape)


def plan_name(source: str) -> str:
    """``plan plan.json``, or ``the plan`` when it has no file."""
    return f"plan {source}" if source else "the plan"


def whose(builder: str) -> str:
    """``build_resnet_backbone's backbone``, or ``the backbone`` when the builder is not known."""
    return f"{builder}'s backbone" if builder else "the backbone"


def check_plan_layers(backbone: nn.Module, plan: Mapping, source: str, builder: str = "") -> None:
    """Raise :class:`AccelDetError` naming the first conv entry of ``plan`` (in its order) that
    names no conv of ``backbone``: a plan made for another network."""
    aliases = {name: path for path, name in (chain_aliases(backbone) or {}).items()}
    convs = set(conv_paths(backbone))
    for name, entry in conv_entries(plan).items():
        path = entry.get("module") or aliases.get(name, name)
        if path not in convs:
            where = f"layer {name}" + (f" (module {path})" if path != name else "")
            raise AccelDetError(
                f"{plan_name(source)} was not made for this backbone: it names {where}, which "
                f"{whose(builder)} does not have (its convs: {', '.join(sorted(convs)[:3])}, …)"
            )


def accelerate_backbone(
    backbone: Backbone, plan: Mapping, source: str = "", builder: str = ""
) -> Backbone:
    """A copy of ``backbone`` with its batch norms folded and the convs ``plan`` names replaced
    (:func:`~accel_det.nn.apply_plan`), frozen where ``backbone`` was; the plan kept as ``.plan``.
    Raises :class:`AccelDetError` when the plan does not fit (one line naming the layer). Entries
    of other parts of a detector (its heads) are theirs (:mod:`.accel_heads`)."""
    whole, plan = plan, part_plan(plan)
    check_plan_layers(backbone, plan, source, builder)
    frozen = [p for p in conv_paths(backbone) if not backbone.get_submodule(p).weight.requires_grad]
    try:
        accelerated = apply_plan(backbone, plan)
    except AccelDetError as error:
        raise AccelDetError(f"{plan_name(source)} does not fit {whose(builder)}: {error}") from None
    freeze(accelerated, frozen)
    accelerated.train(backbone.training)
    accelerated.plan = dict(whole)
    return accelerated


def freeze(model: nn.Module, paths: Iterable[str]) -> None:
    """Every parameter of the modules ``paths`` of ``model`` frozen (a factorized layer's, a
    folded conv's new bias)."""
    for path in paths:
        for parameter in model.get_submodule(path).parameters():
            parameter.requires_grad = False


def build_accel_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """The backbone ``MODEL.ACCEL.BACKBONE_NAME`` builds, accelerated by the plan
    ``MODEL.ACCEL.PLAN`` (see the module's docstring). Only the architecture comes from the plan;
    the weights come from ``MODEL.WEIGHTS`` (:func:`accelerated_weights`)."""
    builder = wrapped_builder_name(cfg)
    plan = load_plan(cfg.MODEL.ACCEL.PLAN, builder=build_accel_backbone.__name__)
    backbone = BACKBONE_REGISTRY.get(builder)(cfg, input_shape)
    return accelerate_backbone(backbone, plan, cfg.MODEL.ACCEL.PLAN, builder)


def factorized_layers(plan: Mapping) -> Dict[str, Mapping]:
    """The conv entries of ``plan`` that are not ``original``."""
    return {
        n: e for n, e in conv_entries(plan).items() if e.get("structure", "original") != "original"
    }


def accelerated_weights(
    cfg,
    plain: Mapping[str, object],
    solved: Optional[Mapping[str, torch.Tensor]] = None,
    plan: Optional[Mapping] = None,
) -> Dict[str, torch.Tensor]:
    """The state dict of the detector ``cfg`` builds with ``build_accel_backbone``, from
    ``plain``, the state dict of the plain detector (a Detectron2 checkpoint's ``model``: its
    ``backbone.*`` tensors fit ``MODEL.ACCEL.BACKBONE_NAME``'s backbone; numpy arrays are taken).

    The backbone's tensors: those of the plain backbone with its batch norms folded
    (:func:`accelerate_backbone`), or, given ``solved``, the solver's accelerated backbone
    (``compress(model.backbone, ...).model.state_dict()``, whose plan is ``plan``, by default
    ``MODEL.ACCEL.PLAN``), which a plan that factorizes any layer needs. The other tensors (the
    heads) are ``plain``'s, unchanged. Raises :class:`AccelDetError` naming the first tensor that
    does not fit."""
    source = cfg.MODEL.ACCEL.PLAN if plan is None else ""
    plan = Plan.from_dict(plan) if plan is not None else load_plan(cfg.MODEL.ACCEL.PLAN)
    heads = [
        n
        for n, e in plan["layers"].items()
        if e.get("part") and e.get("structure", "original") != "original"
    ]
    if heads:
        raise AccelDetError(
            f"the plan factorizes {heads[0]}, a layer of the detector's heads: take the weights "
            "tools/compress_detector.py wrote with it (its model_final.pth)"
        )
    builder = wrapped_builder_name(cfg)
    tensors = {k: torch.as_tensor(np.asarray(v)) for k, v in plain.items()}
    backbone = build_plain_backbone(cfg)
    load_strict(
        backbone,
        {k[len(BACKBONE_PREFIX) :]: v for k, v in tensors.items() if k.startswith(BACKBONE_PREFIX)},
        f"the plain weights do not fit {builder}'s backbone",
        BACKBONE_PREFIX,
    )
    accelerated = accelerate_backbone(backbone.eval(), plan, source, builder)
    if solved is not None:
        load_strict(accelerated, solved, "the solver's weights do not fit the plan's backbone")
    elif factorized_layers(part_plan(plan)):
        factorized = factorized_layers(part_plan(plan))
        first, more = next(iter(factorized)), len(factorized) - 1
        raise AccelDetError(
            f"the plan factorizes {first} (and {more} more layers): "
            "their weights come from the solver; pass its model's state dict (solved=...)"
        )
    result = {k: v for k, v in tensors.items() if not k.startswith(BACKBONE_PREFIX)}
    for key, value in accelerated.state_dict().items():
        result[BACKBONE_PREFIX + key] = value.detach().clone()
    return result


def load_strict(module: nn.Module, state: Mapping, what: str, prefix: str = "") -> None:
    """``module.load_state_dict(state)``, every tensor there and of its shape, else one
    :class:`AccelDetError` naming the first key that does not fit."""
    expected = module.state_dict()
    for key, value in expected.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key not in state:
            raise AccelDetError(f"{what}: {prefix}{key} {list(value.shape)} is missing")
        if tuple(state[key].shape) != tuple(value.shape):
            raise AccelDetError(
                f"{what}: {prefix}{key} is {list(state[key].shape)}, expected {list(value.shape)}"
            )
    extra = next(
        (k for k in state if k not in expected and not k.endswith("num_batches_tracked")), None
    )
    if extra is not None:
        raise AccelDetError(f"{what}: {prefix}{extra} is not in the model")
    module.load_state_dict(state, strict=False)


def register() -> None:
    """Add ``build_accel_backbone`` to ``BACKBONE_REGISTRY`` (idempotent)."""
    register_once(BACKBONE_REGISTRY, build_accel_backbone)
