"""VGG-16 builders, plain and accelerated from a plan, and torchvision weight loading.

The layout is torchvision's (``features`` / ``avgpool`` / ``classifier``), so its state dicts load
as they are. ``width`` scales every layer's channels, for small demos and tests; 1.0 is VGG-16.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, Mapping, Optional, Union

import torch
from torch import nn
from torchvision.models.vgg import VGG

from ..errors import AccelDetError
from ..solver.network import apply_plan, conv_names
from ..utils.io import load_torch_file

VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
# torchvision's VGG preprocessing (VGG16_Weights.IMAGENET1K_V1): RGB in [0, 1], then these.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_SIZE = 256
CROP_SIZE = 224
logger = logging.getLogger(__name__)

TORCHVISION_WEIGHTS = "torchvision"  # a weights "path" that asks torchvision to download them
FACTORIZED_ROLES = ("reduce", "expand", "vertical", "horizontal")  # child names of accel_det.layers.FactorizedConv2d


def vgg16_features(width: float = 1.0, in_channels: int = 3) -> nn.Sequential:
    """VGG-16 conv layers (13 convs with ReLU, 5 max-pools) in torchvision's ``features`` layout."""
    layers = []
    channels = in_channels
    for item in VGG16_LAYERS:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            out = scaled(item, width)
            layers += [nn.Conv2d(channels, out, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = out
    return nn.Sequential(*layers)


def scaled(channels: int, width: float) -> int:
    """Channels of a layer at ``width`` (at least 1)."""
    return max(1, int(round(channels * width)))


def vgg16(num_classes: int = 1000, width: float = 1.0, dropout: float = 0.5, init_weights: bool = True) -> VGG:
    """torchvision's VGG-16 (no batch norm), optionally narrower, initialised as torchvision does;
    ``init_weights=False`` skips the (slow at width 1) initialisation when weights are loaded next."""
    with torch.device("meta"):  # torchvision's constructor would allocate a full-size classifier first
        model = VGG(nn.Sequential(), num_classes=num_classes, init_weights=False, dropout=dropout)
    hidden = scaled(4096, width)
    model.features = vgg16_features(width)
    model.avgpool = nn.AdaptiveAvgPool2d((7, 7))
    model.classifier = nn.Sequential(
        nn.Linear(scaled(512, width) * 7 * 7, hidden),
        nn.ReLU(True),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(True),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )
    if init_weights:
        init_vgg_weights(model)
    return model


def init_vgg_weights(model: nn.Module) -> None:
    """torchvision's VGG initialisation: He (fan-out) for convs, N(0, 0.01) for linear layers, zero biases."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.constant_(module.bias, 0)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.constant_(module.bias, 0)


def accelerated_vgg16(plan: Mapping, num_classes: int = 1000, width: float = 1.0, dropout: float = 0.5,
                      init_weights: bool = True) -> VGG:
    """VGG-16 whose conv layers take the structures of ``plan`` (the solver's plan dict or JSON);
    load the weights from the state dict saved next to the plan."""
    model = vgg16(num_classes=num_classes, width=width, dropout=dropout, init_weights=init_weights)
    model.features = apply_plan(model.features, plan)
    return model


def load_vgg16_state_dict(source: str) -> Dict[str, torch.Tensor]:
    """A VGG-16 state dict from a local file (e.g. ``vgg16-397923af.pth``, or a ``{"model": ...}``
    checkpoint), or from torchvision's download when ``source`` is ``"torchvision"``."""
    if source == TORCHVISION_WEIGHTS:
        from torchvision.models import VGG16_Weights

        try:
            return VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
        except Exception as error:
            raise AccelDetError(f"cannot download torchvision's VGG-16 weights ({error}); pass a local .pth file") from None
    state = load_torch_file(os.path.expanduser(source), "VGG-16 weights")
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AccelDetError(f"{source} does not hold a state dict of tensors")
    return dict(state)


def load_checked(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "weights") -> nn.Module:
    """``model.load_state_dict`` that names the first missing, unexpected or mismatching key and,
    for a key of ``features``, the VGG layer (conv1_1 … conv5_3) it belongs to."""
    expected = model.state_dict()
    for key, value in expected.items():
        if key not in state_dict:
            raise AccelDetError(
                f"{source} does not fit the model{_layer_of(model, key)}: key {key} is missing "
                f"(expected shape {tuple(value.shape)}){_present_under(state_dict, key)}"
            )
        if tuple(state_dict[key].shape) != tuple(value.shape):
            raise AccelDetError(
                f"{source} does not fit the model{_layer_of(model, key)}: {key} has shape {tuple(state_dict[key].shape)}, "
                f"the model expects {tuple(value.shape)}"
            )
    extra = [key for key in state_dict if key not in expected]
    if extra:
        raise AccelDetError(f"{source} does not fit the model{_layer_of(model, extra[0])}: unexpected key {extra[0]}")
    model.load_state_dict(state_dict)
    return model


def _layer_of(model: nn.Module, key: str) -> str:
    """" at layer conv1_2" for a key ``features.<i>.…`` of a conv of ``model.features``, else ""."""
    parts = key.split(".")
    features = getattr(model, "features", None)
    if len(parts) < 3 or parts[0] != "features" or not parts[1].isdigit() or not isinstance(features, nn.Sequential):
        return ""
    try:
        names = {index: name for name, index in conv_names(features).items()}
    except AccelDetError:
        return ""
    name = names.get(int(parts[1]))
    return f" at layer {name}" if name else ""


def _present_under(state_dict: Mapping[str, torch.Tensor], key: str) -> str:
    """"; the weights have features.2.weight (…)" listing what the weights hold for the same module."""
    parts = key.split(".")
    if len(parts) < 3:
        return ""
    prefix = ".".join(parts[:2]) + "."
    found = [f"{k} {tuple(v.shape)}" for k, v in state_dict.items() if k.startswith(prefix) and k.endswith((".weight", ".bias")) and k.endswith(parts[-1])]
    return f"; the weights have {', '.join(found[:3])}" if found else ""


def factorized_key(state_dict: Mapping[str, torch.Tensor]) -> Optional[str]:
    """The first key of a factorized (accelerated) layer in ``state_dict``, or ``None`` for a plain VGG."""
    for key in state_dict:
        if key.startswith("features.") and any(f".{role}." in key for role in FACTORIZED_ROLES):
            return key
    return None


def infer_vgg16_config(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, object]:
    """``width`` and ``num_classes`` of the (possibly narrow, possibly accelerated) VGG-16 whose
    state dict this is; VGG-16's own values (1.0, 1000) when the keys do not tell."""
    config: Dict[str, object] = {"width": 1.0, "num_classes": 1000}
    first = state_dict.get("classifier.0.weight")
    last = state_dict.get("classifier.6.weight")
    if isinstance(first, torch.Tensor) and first.dim() == 2 and first.shape[1] % 49 == 0:
        channels = first.shape[1] // 49
        config["width"] = 1.0 if channels == 512 else channels / 512
    if isinstance(last, torch.Tensor) and last.dim() == 2:
        config["num_classes"] = int(last.shape[0])
    return config


def build_vgg16(weights: Optional[Union[str, Mapping]] = None, plan: Optional[Mapping] = None, **kwargs) -> VGG:
    """One builder: plain VGG-16, or accelerated when ``plan`` is given; ``weights`` a path,
    ``"torchvision"`` or a state dict. ``width`` and ``num_classes`` not given are read off the
    weights (:func:`infer_vgg16_config`), so narrow test models load like the real one."""
    state = None
    if weights is not None:
        state = load_vgg16_state_dict(weights) if isinstance(weights, str) else weights
        for key, value in infer_vgg16_config(state).items():
            kwargs.setdefault(key, value)
        kwargs.setdefault("init_weights", False)
    model = accelerated_vgg16(plan, **kwargs) if plan is not None else vgg16(**kwargs)
    if state is not None:
        load_checked(model, state, weights if isinstance(weights, str) else "state dict")
    return model


def with_features(model: VGG, features: nn.Sequential) -> VGG:
    """``model`` with its ``features`` replaced (e.g. by :func:`accel_det.solver.compress`'s result);
    avgpool and the fc layers are kept as they are."""
    model.features = features
    return model


def weights_file(source: str) -> Optional[str]:
    """The local file behind a weights source (the torch hub cache for ``"torchvision"``), if any."""
    if source == TORCHVISION_WEIGHTS:
        from torchvision.models import VGG16_Weights

        path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(VGG16_Weights.IMAGENET1K_V1.url))
        return path if os.path.isfile(path) else None
    path = os.path.expanduser(source)
    return path if os.path.isfile(path) else None


def read_plan(path: str, what: str = "plan") -> dict:
    """A plan JSON (the solver's plan, or a record that extends it) with a clear error otherwise;
    ``what`` names the file in the error."""
    from ..utils.io import load_json

    plan = load_json(path, what)
    if not isinstance(plan, Mapping) or not isinstance(plan.get("layers"), Mapping):
        raise AccelDetError(f"{path} is not a plan: it has no 'layers' entry")
    return dict(plan)


def load_vgg16(weights: str, plan: Optional[str] = None) -> "tuple[VGG, Optional[dict], Optional[str]]":
    """The VGG-16, plain or accelerated, that ``weights`` (a file or ``"torchvision"``) holds.

    An accelerated state dict needs its plan: ``plan`` (a JSON path), else the ``.json`` next to
    the weights (as ``tools/compress_backbone.py`` and ``tools/finetune_imagenet.py`` write it).
    Returns the model, the plan dict and the plan's path (both ``None`` for a plain VGG-16).
    """
    state = load_vgg16_state_dict(weights)
    plan_dict = None
    if plan is not None:
        plan_dict = read_plan(plan)
    else:
        key = factorized_key(state)
        if key is not None:
            sibling = os.path.splitext(os.path.expanduser(weights))[0] + ".json"
            if not os.path.isfile(sibling):
                raise AccelDetError(f"{weights} holds an accelerated VGG-16 ({key}): pass its plan with --plan")
            plan_dict = read_plan(sibling)
            plan = sibling
            logger.info("using the plan %s next to the weights", sibling)
    config = infer_vgg16_config(state)
    if plan_dict is None:
        return load_checked(vgg16(**config, init_weights=False), state, f"weights {weights}"), None, None
    try:
        model = accelerated_vgg16(plan_dict, **config, init_weights=False)
    except AccelDetError as error:
        raise AccelDetError(f"plan {plan} does not match the weights {weights}: {error}") from None
    load_checked(model, state, f"weights {weights} (with plan {plan})")
    return model, plan_dict, plan
