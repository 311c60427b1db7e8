"""VGG-16: the one builder (plain, or accelerated from a plan), the one loader, the weight-fit
check every tool uses, and torchvision's weights.

The layout is torchvision's (``features`` / ``avgpool`` / ``classifier``), so its state dicts load
as they are. ``width`` scales every layer's channels, for small demos and tests; 1.0 is VGG-16.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, Mapping, Optional, Tuple, Union
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models.vgg import VGG

from ..errors import AccelDetError, first_line
from ..nn.chain import apply_plan_to_linear, conv_names
from ..nn.network import apply_plan
from ..plan import Plan
from ..utils.io import load_torch_file, sha256_file
from .fit import first_mismatch, keys_under, shapes_of, unexpected_key

VGG16_LAYERS = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)
# torchvision's VGG preprocessing (VGG16_Weights.IMAGENET1K_V1): RGB in [0, 1], then these.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_SIZE = 256
CROP_SIZE = 224
logger = logging.getLogger(__name__)

TORCHVISION_WEIGHTS = "torchvision"  # a weights "path" that asks torchvision to download them
# child names of accel_det.nn.FactorizedConv2d
FACTORIZED_ROLES = ("reduce", "expand", "vertical", "horizontal")


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


def vgg16(
    num_classes: int = 1000,
    width: float = 1.0,
    dropout: float = 0.5,
    init_weights: bool = True,
    plan: Optional[Mapping] = None,
) -> VGG:
    """torchvision's VGG-16 (no batch norm), optionally narrower, initialised as torchvision does;
    with ``plan`` (the solver's plan) its conv layers take the plan's structures. Load weights
    next (``init_weights=False`` skips the initialisation, slow at width 1)."""
    with torch.device("meta"):  # torchvision's constructor would allocate a full-size classifier
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
    if plan is not None:
        model.features = apply_plan(model.features, plan)
        model.classifier[0] = apply_plan_to_linear(model.classifier[0], "fc6", plan)
        model.classifier[3] = apply_plan_to_linear(model.classifier[3], "fc7", plan)
    return model


def init_vgg_weights(model: nn.Module) -> None:
    """torchvision's VGG initialisation: He (fan-out) for convs, N(0, 0.01) for linear layers,
    zero biases."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.constant_(module.bias, 0)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.constant_(module.bias, 0)


def load_vgg16_state_dict(source: str) -> Dict[str, torch.Tensor]:
    """A VGG-16 state dict from a local file (e.g. ``vgg16-397923af.pth``, or a ``{"model": ...}``
    checkpoint), or from torchvision's download when ``source`` is ``"torchvision"``."""
    if source == TORCHVISION_WEIGHTS:
        from torchvision.models import VGG16_Weights

        return load_hub_weights(VGG16_Weights.IMAGENET1K_V1.url, "torchvision's VGG-16 weights")
    state = load_torch_file(os.path.expanduser(source), "VGG-16 weights")
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise AccelDetError(f"{source} does not hold a state dict of tensors")
    return dict(state)


def hub_cache_file(url: str) -> str:
    """Where torch hub keeps the file downloaded from ``url``."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(url).path))


def load_hub_weights(url: str, what: str = "weights") -> Dict[str, torch.Tensor]:
    """The state dict at ``url`` (torchvision's naming, ``name-<sha256 prefix>.pth``) through torch
    hub's cache: downloaded with the hash check, the cached file checked as well (torch checks
    only what it downloads), loaded with ``weights_only=True``."""
    cached = hub_cache_file(url)
    match = torch.hub.HASH_REGEX.search(os.path.basename(cached))
    if match is None or len(match.group(1)) < 8:
        raise AccelDetError(f"{url} has no sha256 prefix in its file name to check {what} against")
    if os.path.isfile(cached):
        digest = sha256_file(cached)
        if not digest.startswith(match.group(1)):
            raise AccelDetError(
                f"{what} {cached} have sha256 {digest[:16]}..., not the {match.group(1)}... of "
                f"their name: the file is corrupt or was replaced; delete it to download it again"
            )
    try:
        return torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=True, check_hash=True, weights_only=True
        )
    except Exception as error:  # download, hash and unpickling errors of many types
        first = first_line(error)
        if os.path.isfile(cached):  # downloaded and checked (or checked above): a load error
            raise AccelDetError(f"cannot read {what} {cached}: {first}") from None
        raise AccelDetError(
            f"cannot download {what} from {url}: {first}; pass a local .pth file"
        ) from None


def layer_of_key(features: nn.Module, key: str) -> Optional[str]:
    """The conv name (``conv3_1``) a key ``<index>.…`` of a ``features`` chain belongs to."""
    parts = key.split(".")
    if len(parts) < 2 or not parts[0].isdigit() or not isinstance(features, nn.Sequential):
        return None
    try:
        names = {index: name for name, index in conv_names(features).items()}
    except AccelDetError:
        return None
    return names.get(int(parts[0]))


def load_checked(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "weights"
) -> nn.Module:
    """``model.load_state_dict`` that names the first missing, unexpected or mismatching key and,
    for a key of ``features``, the VGG layer (conv1_1 … conv5_3) it belongs to."""
    expected, given = shapes_of(model.state_dict()), shapes_of(state_dict)
    mismatch = first_mismatch(expected, given)
    if mismatch is not None:
        where = _layer_text(model, mismatch.key)
        if mismatch.found is None:
            found = keys_under(
                given, ".".join(mismatch.key.split(".")[:2]) + ".", mismatch.key.split(".")[-1]
            )
            present = (
                f"; the weights have {', '.join(f'{k} {v}' for k, v in list(found.items())[:3])}"
                if found
                else ""
            )
            raise AccelDetError(
                f"{source} does not fit the model{where}: key {mismatch.key} is missing "
                f"(expected shape {mismatch.expected}){present}"
            )
        raise AccelDetError(
            f"{source} does not fit the model{where}: {mismatch.key} has shape {mismatch.found}, "
            f"the model expects {mismatch.expected}"
        )
    extra = unexpected_key(expected, given)
    if extra is not None:
        raise AccelDetError(
            f"{source} does not fit the model{_layer_text(model, extra)}: unexpected key {extra}"
        )
    model.load_state_dict(state_dict)
    return model


def _layer_text(model: nn.Module, key: str) -> str:
    """ " at layer conv1_2" for a key ``features.<i>.…`` of a conv of ``model.features``, else
    ""."""
    if not key.startswith("features."):
        return ""
    name = layer_of_key(getattr(model, "features", None), key[len("features.") :])
    return f" at layer {name}" if name else ""


def factorized_key(state_dict: Mapping[str, torch.Tensor]) -> Optional[str]:
    """The first key of a factorized (accelerated) layer in ``state_dict``, or ``None`` for a plain
    VGG."""
    for key in state_dict:
        if key.startswith(("features.", "classifier.")) and any(
            f".{role}." in key for role in FACTORIZED_ROLES
        ):
            return key
    return None


def first_conv_filters(
    state_dict: Mapping[str, torch.Tensor], prefix: str = "features."
) -> Optional[int]:
    """conv1_1's number of filters in a VGG state dict (plain or factorized), if it is there."""
    for role in ("weight", "expand.weight", "horizontal.weight"):
        weight = state_dict.get(f"{prefix}0.{role}")
        if isinstance(weight, torch.Tensor) and weight.dim() == 4:
            return int(weight.shape[0])
    return None


def infer_vgg16_config(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, object]:
    """``width`` and ``num_classes`` of the (possibly narrow, possibly accelerated) VGG-16 whose
    state dict this is; VGG-16's own values (1.0, 1000) when the keys do not tell."""
    config: Dict[str, object] = {"width": 1.0, "num_classes": 1000}
    filters = first_conv_filters(state_dict)
    first = state_dict.get("classifier.0.weight")
    last = state_dict.get("classifier.6.weight")
    if filters is not None:
        config["width"] = 1.0 if filters == 64 else filters / 64
    elif isinstance(first, torch.Tensor) and first.dim() == 2 and first.shape[1] % 49 == 0:
        channels = first.shape[1] // 49
        config["width"] = 1.0 if channels == 512 else channels / 512
    if isinstance(last, torch.Tensor) and last.dim() == 2:
        config["num_classes"] = int(last.shape[0])
    return config


def load_vgg16(
    weights: Union[str, Mapping[str, torch.Tensor]], plan: Optional[Union[str, Mapping]] = None
) -> Tuple[VGG, Optional[Plan], Optional[str]]:
    """The VGG-16, plain or accelerated, that ``weights`` (a file, ``"torchvision"`` or a state
    dict) holds, with ``width`` and ``num_classes`` read off the weights.

    An accelerated state dict needs its plan: ``plan`` (a JSON path or a plan dict), else the
    ``.json`` next to the weights file (as ``tools/compress_backbone.py`` and
    ``tools/finetune_imagenet.py`` write it). Returns the model, the plan and the plan's path
    (``None`` for a plain VGG-16; the path is ``None`` for a plan given as a dict).
    """
    state = load_vgg16_state_dict(weights) if isinstance(weights, str) else dict(weights)
    source = weights if isinstance(weights, str) else "state dict"
    plan_dict, plan_path = None, None
    if isinstance(plan, str):
        plan_dict, plan_path = Plan.read(plan), plan
    elif plan is not None:
        plan_dict = Plan.from_dict(plan)
    else:
        key = factorized_key(state)
        if key is not None:
            if not isinstance(weights, str):
                raise AccelDetError(
                    f"the state dict holds an accelerated VGG-16 ({key}): pass its plan"
                )
            sibling = os.path.splitext(os.path.expanduser(weights))[0] + ".json"
            if not os.path.isfile(sibling):
                raise AccelDetError(
                    f"{weights} holds an accelerated VGG-16 ({key}): pass its plan with --plan"
                )
            plan_dict, plan_path = Plan.read(sibling), sibling
            logger.info("using the plan %s next to the weights", sibling)
    if plan_path is not None and isinstance(weights, str):
        check_record_weights(weights, plan_dict, plan_path)
    config = infer_vgg16_config(state)
    if plan_dict is None:
        return (
            load_checked(vgg16(**config, init_weights=False), state, f"weights {source}"),
            None,
            None,
        )
    try:
        model = vgg16(**config, init_weights=False, plan=plan_dict)
    except AccelDetError as error:
        raise AccelDetError(
            f"plan {plan_path or 'given'} does not match the weights {source}: {error}"
        ) from None
    load_checked(model, state, f"weights {source} (with plan {plan_path or 'given'})")
    return model, plan_dict, plan_path


def check_record_weights(weights: str, record: Mapping, record_path: str) -> None:
    """Refuse ``weights`` when ``record_path`` is their record (``OUT.json`` next to ``OUT.pth``)
    and holds the sha256 of other weights (``outputs.weights_sha256``, written by the tools)."""
    recorded = (record.get("outputs") or {}).get("weights_sha256")
    path = os.path.abspath(os.path.expanduser(weights))
    if (
        not recorded
        or os.path.splitext(path)[0] != os.path.splitext(os.path.abspath(record_path))[0]
    ):
        return
    actual = sha256_file(path)
    if actual != recorded:
        raise AccelDetError(
            f"{weights} are not the weights {record_path} was written with (sha256 {actual[:12]}, "
            f"recorded {recorded[:12]}): write the pair again with the tool that made it"
        )


def with_features(model: VGG, features: nn.Sequential) -> VGG:
    """``model`` with its ``features`` replaced (e.g. by :func:`accel_det.solver.compress`'s
    result); avgpool and the fc layers are kept as they are."""
    model.features = features
    return model


def weights_file(source: str) -> Optional[str]:
    """The local file behind a weights source (the torch hub cache for ``"torchvision"``), if
    any."""
    if source == TORCHVISION_WEIGHTS:
        from torchvision.models import VGG16_Weights

        path = hub_cache_file(VGG16_Weights.IMAGENET1K_V1.url)
        return path if os.path.isfile(path) else None
    path = os.path.expanduser(source)
    return path if os.path.isfile(path) else None
