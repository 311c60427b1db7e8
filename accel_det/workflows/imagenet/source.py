"""The classifier ``tools/compress_backbone.py`` compresses: VGG-16 or a torchvision ResNet, read
from its weights, the part the solver takes (VGG-16's conv layers, a ResNet's whole network) and
its layers, checked before any image is read."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ...errors import AccelDetError
from ...models.classifier import (
    compressed_part,
    infer_arch,
    load_classifier,
    read_state_dict,
    weights_file,
    with_part,
)
from ...models.resnet import infer_resnet_config, is_accelerated
from ...models.vgg import TORCHVISION_WEIGHTS, factorized_key, infer_vgg16_config
from ...solver.options import check_names, skipped_layers
from ...solver.targets import Targets, find_targets
from ...utils.io import sha256_file

logger = logging.getLogger(__name__)


@dataclass
class Source:
    """The plain classifier to compress, its architecture and where it came from (``record``:
    path, sha256, architecture, width, classes)."""

    model: nn.Module
    arch: str
    record: dict

    @property
    def part(self) -> nn.Module:
        return compressed_part(self.model, self.arch)

    def accelerated(self, part: nn.Module) -> nn.Module:
        """The whole classifier with the solver's accelerated ``part``."""
        return with_part(self.model.cpu(), part.cpu(), self.arch)


def load_source(weights: str, arch: Optional[str] = None) -> Source:
    """The plain classifier in ``weights`` (``arch``: asked for, else read off the weights);
    refuses accelerated weights and weights with NaN or Inf values."""
    state = read_state_dict(weights, arch)
    found = arch or infer_arch(state)
    key = factorized_key(state) if found == "vgg16" else None
    if key is not None or (found != "vgg16" and is_accelerated(state)):
        what = "VGG-16" if found == "vgg16" else found
        raise AccelDetError(
            f"{weights} is already an accelerated {what} ({key or 'no batch norms'}); compress "
            f"a plain {what}"
        )
    broken = next(
        (k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None
    )
    if broken is not None:
        raise AccelDetError(f"weights {weights}: {broken} holds NaN or Inf values")
    model, _, _, found = load_classifier(state, arch=found)
    source_file = weights_file(weights, found)
    config = infer_vgg16_config(state) if found == "vgg16" else infer_resnet_config(state)
    record = {
        "path": weights if weights == TORCHVISION_WEIGHTS else os.path.abspath(source_file),
        "sha256": sha256_file(source_file) if source_file else None,
        **config,
        "arch": found,
    }
    logger.info(
        "weights %s: %s%s, %d classes, sha256 %s",
        weights,
        "VGG-16" if found == "vgg16" else found,
        f", width {config['width']:g}" if found == "vgg16" else "",
        config["num_classes"],
        (record["sha256"] or "?")[:12],
    )
    return Source(model, found, record)


def checked_targets(source: Source, options) -> Targets:
    """The layers the solver will factor at the crop size, checked against ``options``
    (:class:`~.compress.CompressOptions`): ``--skip`` and ``--stop-after`` name layers, enough
    samples per filter, ``--fc`` only with VGG-16. Before any image is read."""
    targets = find_targets(source.part, (options.crop, options.crop))
    names = list(targets.names)
    check_names(skipped_layers(options.solver, names), names)
    if options.stop_after is not None and options.stop_after not in names:
        raise AccelDetError(f"--stop-after {options.stop_after}: no such layer")
    if options.fc and source.arch != "vgg16":
        raise AccelDetError(
            f"--fc factors VGG-16's fc6 and fc7; {source.arch} has one fc layer, which is kept"
        )
    check_enough_samples(targets, options)
    return targets


def check_enough_samples(targets: Targets, options) -> None:
    """Refuse fewer sampled responses than a compressed layer has filters: its response covariance
    would be singular (the reduced-rank regression then fails or is meaningless)."""
    per_image = options.solver.samples_per_image
    skip = skipped_layers(options.solver, list(targets.names))
    for spec in targets.specs:
        if spec.name in skip:
            continue
        samples = options.num_images * min(per_image, spec.out_hw[0] * spec.out_hw[1])
        if samples < spec.out_channels:
            raise AccelDetError(
                f"{options.num_images} images x {per_image} samples give {samples} responses of "
                f"{spec.name}, fewer than its {spec.out_channels} filters: use more --num-images "
                f"or --samples-per-image"
            )
