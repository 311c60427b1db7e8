"""Config keys of accel-det's Detectron2 parts, and where config files are looked up."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List

import yaml
from detectron2.config import CfgNode as CN

from ..errors import AccelDetError


def find_configs_dir() -> Path:
    """accel-det's ``configs/``: the copy installed with the package (``accel_det/configs``,
    package data, as detectron2's ``model_zoo/configs``), else the checkout's, next to the
    package (an editable install or a plain checkout)."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "configs", package.parent / "configs"):
        if (candidate / "Base-FastRCNN-VGG16.yaml").is_file():
            return candidate
    return package / "configs"


CONFIGS_DIR = find_configs_dir()


def add_accel_config(cfg: CN) -> CN:
    """Add accel-det's config keys to a Detectron2 config (``get_cfg()``), in place; returns it.

    Keys used from Detectron2's defaults, with a VGG meaning:
    ``MODEL.BACKBONE.FREEZE_AT`` counts frozen VGG conv *blocks* (2 = conv1_x and conv2_x, as in
    Fast R-CNN, which trains conv3_1 and up); ``MODEL.ROI_BOX_HEAD.FC_DIM`` is the width of fc6/fc7
    (4096 in VGG-16).
    """
    if "VGG" in cfg.MODEL and "ACCEL" in cfg.MODEL:
        return cfg  # already added: calling twice is harmless
    _C = cfg
    was_frozen = _C.is_frozen()
    _C.defrost()

    # ---------------------------------------------------------------------------- #
    # VGG-16 backbone options (build_vgg16_backbone, build_accel_vgg16_backbone)
    # ---------------------------------------------------------------------------- #
    _C.MODEL.VGG = CN()
    # Channel multiplier of every conv layer (and of nothing else: fc6/fc7 use
    # MODEL.ROI_BOX_HEAD.FC_DIM). 1.0 is VGG-16; the demo uses a narrow 0.125.
    _C.MODEL.VGG.WIDTH = 1.0
    # Name of the single output feature: the ReLU output of conv5_3, stride 16 (no pool5).
    # ROI_HEADS.IN_FEATURES and RPN.IN_FEATURES refer to it.
    _C.MODEL.VGG.OUT_FEATURE = "conv5_3"
    # Normalization after each conv: "" (VGG-16 as published) or a Detectron2 norm name; "BN" helps
    # training from scratch (the demo) and folds into the convs afterwards
    # (VGG16Backbone.fold_norms), which gives a plain VGG-16 for the solver.
    _C.MODEL.VGG.NORM = ""

    # ---------------------------------------------------------------------------- #
    # Accelerated backbones (build_accel_vgg16_backbone, build_accel_backbone)
    # ---------------------------------------------------------------------------- #
    _C.MODEL.ACCEL = CN()
    # The solver's plan JSON (written by tools/compress_backbone.py or tools/demo.py): the structure
    # and ranks d', d'' of every conv layer. The weights that go with it come from MODEL.WEIGHTS
    # (tools/convert_vgg16.py --plan ...; for build_accel_backbone, accelerated_weights).
    _C.MODEL.ACCEL.PLAN = ""
    # The backbone builder build_accel_backbone builds and then accelerates by the plan, as
    # MODEL.BACKBONE.NAME names one: build_resnet_backbone, build_resnet_fpn_backbone, ...
    _C.MODEL.ACCEL.BACKBONE_NAME = ""
    # The heads build_accel_rpn_head (MODEL.RPN.HEAD_NAME) and build_accel_box_head
    # (MODEL.ROI_BOX_HEAD.NAME) build and then accelerate by the plan's entries of their part.
    _C.MODEL.ACCEL.RPN_HEAD_NAME = "StandardRPNHead"
    _C.MODEL.ACCEL.BOX_HEAD_NAME = "FastRCNNConvFCHead"

    # ---------------------------------------------------------------------------- #
    # VGG16BoxHead (fc6, fc7)
    # ---------------------------------------------------------------------------- #
    # Dropout probability after fc6 and after fc7 during training (VGG-16 and Fast R-CNN: 0.5).
    _C.MODEL.ROI_BOX_HEAD.DROPOUT = 0.5

    if was_frozen:
        _C.freeze()
    return _C


def resolve_config_file(name: str) -> str:
    """A config path as given, else the same name under the repository's ``configs/``
    (``accel_vgg16_voc.yaml``, ``demo/vgg16_synthetic``; ``.yaml`` may be left out).

    Raises :class:`AccelDetError` listing the configs available when nothing matches.
    """
    if not name:
        raise AccelDetError("no config file given (--config-file)")
    candidates: List[Path] = []
    for base in (Path.cwd(), CONFIGS_DIR):
        path = base / os.path.expanduser(name)
        candidates += (
            [path, path.with_name(path.name + ".yaml")]
            if not name.endswith((".yaml", ".yml"))
            else [path]
        )
    for path in candidates:
        if path.is_file():
            return str(path.resolve())
    if CONFIGS_DIR.is_dir():
        matches = sorted(
            CONFIGS_DIR.rglob(os.path.basename(name if name.endswith(".yaml") else name + ".yaml"))
        )
        if len(matches) == 1:
            return str(matches[0])
    available = ", ".join(
        str(p.relative_to(CONFIGS_DIR)) for p in sorted(CONFIGS_DIR.rglob("*.yaml"))
    )
    raise AccelDetError(
        f"config file {name} not found (looked in the "
        f"current folder and {CONFIGS_DIR}: {available})"
    )


MAX_BASES = 16  # _BASE_ files a config may include, one inside the other


def check_config_file(path: str) -> None:
    """Raise :class:`AccelDetError` unless ``path`` and the chain of ``_BASE_`` files it includes
    are YAML mappings of config keys: no Python config (Detectron2's LazyConfig ``.py``), no empty
    file or list, no file that includes itself. The base is found as Detectron2 finds it (relative
    to the including file, ``~`` expanded)."""
    chain: List[str] = []
    while path is not None:
        path = os.path.abspath(path)
        if path in chain:
            loop = " -> ".join([*chain, path])
            raise AccelDetError(f"config {chain[0]} includes itself through _BASE_ ({loop})")
        if len(chain) >= MAX_BASES:
            raise AccelDetError(f"config {chain[0]}: more than {MAX_BASES} _BASE_ files deep")
        chain.append(path)
        if not path.endswith((".yaml", ".yml")):
            raise AccelDetError(
                f"config {path} is not a YAML file (.yaml): accel-det's tools take Detectron2's "
                "YAML configs, not its Python (LazyConfig) ones"
            )
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except (OSError, ValueError, yaml.YAMLError) as error:
            raise AccelDetError(
                f"cannot load config {path}: {' '.join(str(error).split())}"
            ) from None
        if not isinstance(data, dict):
            what = "nothing" if data is None else f"a {type(data).__name__}"
            raise AccelDetError(f"config {path} holds {what}, not a mapping of config keys")
        path = base_config_file(path, data.get("_BASE_"))


def base_config_file(path: str, base) -> "str | None":
    """The file the ``_BASE_`` entry ``base`` of the config ``path`` names, as fvcore resolves it;
    None for none (or a remote one, which this check leaves to Detectron2)."""
    if base is None or (isinstance(base, str) and base.startswith(("https://", "http://"))):
        return None
    if not isinstance(base, str):
        raise AccelDetError(f"config {path}: _BASE_ must be a file name, got {base!r}")
    base = os.path.expanduser(base)
    if not os.path.isabs(base):
        base = os.path.join(os.path.dirname(path), base)
    if not os.path.isfile(base):
        raise AccelDetError(f"config {path}: its _BASE_ {base} does not exist")
    return base


def get_accel_cfg() -> CN:
    """``detectron2.config.get_cfg()`` with :func:`add_accel_config` applied."""
    from detectron2.config import get_cfg

    return add_accel_config(get_cfg())


def load_config(config_file: str, opts=()) -> CN:
    """Detectron2 config with accel-det keys, merged from ``config_file`` (resolved by
    :func:`resolve_config_file`) and ``opts`` (``["KEY", value, ...]``); not frozen."""
    cfg = get_accel_cfg()
    path = resolve_config_file(config_file)
    check_config_file(path)
    try:
        cfg.merge_from_file(
            path, allow_unsafe=False
        )  # plain YAML only: no Python objects from a config
    except (KeyError, ValueError, AssertionError, TypeError, yaml.YAMLError) as error:
        raise AccelDetError(f"cannot load config {path}: {' '.join(str(error).split())}") from None
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, ValueError, AssertionError, TypeError) as error:
        raise AccelDetError(
            f"KEY VALUE override on the command line: {' '.join(str(error).split())}"
        ) from None
    _fall_back_to_cpu(cfg)
    return cfg


def _fall_back_to_cpu(cfg: CN) -> None:
    """``MODEL.DEVICE: cuda`` (Detectron2's default) on a machine without CUDA becomes ``cpu``, with
    a warning."""
    import logging

    import torch

    global _WARNED_CPU
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        if not _WARNED_CPU:
            logging.getLogger(__name__).warning(
                "MODEL.DEVICE is %s but CUDA is not available: using the CPU", cfg.MODEL.DEVICE
            )
            _WARNED_CPU = True
        cfg.MODEL.DEVICE = "cpu"


_WARNED_CPU = False
