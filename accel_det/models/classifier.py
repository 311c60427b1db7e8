"""ImageNet classifiers the tools take, plain or accelerated: VGG-16 (:mod:`.vgg`) and torchvision's
ResNet-18/34/50/101 (:mod:`.resnet`), with the architecture read off the weights or named, and
the part of each that the solver compresses (VGG-16's conv layers, a ResNet's every conv)."""

from __future__ import annotations

import logging
import os
from typing import Dict, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from ..errors import AccelDetError
from ..plan import Plan
from ..utils.io import load_torch_file
from .resnet import RESNETS, infer_resnet_config, is_accelerated, resnet, torchvision_weights_url
from .vgg import (
    TORCHVISION_WEIGHTS,
    check_record_weights,
    hub_cache_file,
    load_checked,
    load_hub_weights,
    load_vgg16,
    load_vgg16_state_dict,
)

ARCHS = ("vgg16", *RESNETS)
logger = logging.getLogger(__name__)


def check_arch(arch: Optional[str]) -> None:
    if arch is not None and arch not in ARCHS:
        raise AccelDetError(f"unknown --arch {arch!r}; expected one of {', '.join(ARCHS)}")


def read_state_dict(source: str, arch: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """A state dict from a local file (or a ``{"model": ...}`` checkpoint), or torchvision's
    download of ``arch`` (VGG-16 by default) for ``"torchvision"``."""
    check_arch(arch)
    if arch in (None, "vgg16"):  # VGG-16 unless told: its reader, its messages
        return load_vgg16_state_dict(source)
    if source == TORCHVISION_WEIGHTS:
        return load_hub_weights(torchvision_weights_url(arch), f"torchvision's {arch} weights")
    state = load_torch_file(os.path.expanduser(source), f"{arch} weights")
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise AccelDetError(f"{source} does not hold a state dict of tensors")
    return dict(state)


def infer_arch(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The architecture of a (plain or accelerated) state dict: the torchvision ResNet whose blocks
    it holds, else VGG-16 (the default network: its loader names what does not fit)."""
    config = infer_resnet_config(state_dict)
    return config["arch"] if config is not None else "vgg16"


def load_classifier(
    weights: Union[str, Mapping[str, torch.Tensor]],
    plan: Optional[Union[str, Mapping]] = None,
    arch: Optional[str] = None,
) -> Tuple[nn.Module, Optional[Plan], Optional[str], str]:
    """The classifier, plain or accelerated, that ``weights`` (a file, ``"torchvision"`` with
    ``arch``, or a state dict) hold: the model, its plan, the plan's path and the architecture
    (``arch``, or read off the weights). An accelerated model needs its plan: ``plan``, else the
    ``.json`` next to the weights file."""
    check_arch(arch)
    state = read_state_dict(weights, arch) if isinstance(weights, str) else dict(weights)
    source = weights if isinstance(weights, str) else "state dict"
    found = infer_arch(state)
    if arch is not None and found != arch:
        raise AccelDetError(f"weights {source} hold a {found}, not the {arch} asked for")
    if found == "vgg16":
        model, plan_dict, plan_path = load_vgg16(state if not isinstance(weights, str) else weights,
                                                 plan)  # fmt: skip
        return model, plan_dict, plan_path, found
    plan_dict, plan_path = resnet_plan(weights, plan, state)
    if plan_dict is not None and plan_dict.get("arch", found) != found:
        raise AccelDetError(
            f"plan {plan_path or 'given'} is for a {plan_dict['arch']}, the weights {source} "
            f"hold a {found}"
        )
    config = infer_resnet_config(state)
    try:
        model = resnet(found, config["num_classes"], plan_dict)
    except AccelDetError as error:
        raise AccelDetError(
            f"plan {plan_path or 'given'} does not match the weights {source}: {error}"
        ) from None
    what = f"weights {source}" + (f" (with plan {plan_path or 'given'})" if plan_dict else "")
    return load_checked(model, state, what), plan_dict, plan_path, found


def resnet_plan(weights, plan, state) -> Tuple[Optional[Plan], Optional[str]]:
    """The plan of ResNet weights: ``plan`` (a path or a dict), else for accelerated weights the
    ``.json`` next to the weights file; checked against the weights' recorded sha256."""
    if isinstance(plan, str):
        plan_dict, path = Plan.read(plan), plan
    elif plan is not None:
        plan_dict, path = Plan.from_dict(plan), None
    elif not is_accelerated(state):
        return None, None
    elif not isinstance(weights, str):
        raise AccelDetError(
            "the state dict holds an accelerated ResNet (no batch norms): pass its plan"
        )
    else:
        path = os.path.splitext(os.path.expanduser(weights))[0] + ".json"
        if not os.path.isfile(path):
            raise AccelDetError(
                f"{weights} holds an accelerated ResNet (no batch norms): pass its plan with --plan"
            )
        plan_dict = Plan.read(path)
        logger.info("using the plan %s next to the weights", path)
    if path is not None and isinstance(weights, str):
        check_record_weights(weights, plan_dict, path)
    return plan_dict, path


def weights_file(source: str, arch: Optional[str] = None) -> Optional[str]:
    """The local file behind a weights source (the torch hub cache for ``"torchvision"``)."""
    if source == TORCHVISION_WEIGHTS:
        url = torchvision_weights_url(arch) if arch in RESNETS else None
        if url is None:
            from torchvision.models import VGG16_Weights

            url = VGG16_Weights.IMAGENET1K_V1.url
        path = hub_cache_file(url)
        return path if os.path.isfile(path) else None
    path = os.path.expanduser(source)
    return path if os.path.isfile(path) else None


def classes_of(model: nn.Module) -> int:
    """Classes of a VGG-16 or ResNet classifier (its last fc layer's outputs)."""
    last = model.fc if hasattr(model, "fc") else model.classifier[-1]
    return int(last.out_features)


def compressed_part(model: nn.Module, arch: str) -> nn.Module:
    """What the solver compresses: VGG-16's ``features`` (layers ``conv1_1`` …, as the paper), a
    ResNet's whole network (every conv, by qualified name; the fc layer is kept)."""
    return model.features if arch == "vgg16" else model


def with_part(model: nn.Module, part: nn.Module, arch: str) -> nn.Module:
    """The whole classifier from :func:`compressed_part`'s accelerated result."""
    if arch == "vgg16":
        model.features = part
        return model
    return part
