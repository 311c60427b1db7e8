"""The Detectron2 Fast R-CNN the benchmarks time: detectors from the configs with random weights
(with a shared box head for the speed benchmark's grid), their classifier silenced, and random
proposals."""

from __future__ import annotations

from typing import Dict, List, Mapping, Sequence

import torch
from torch import nn

from ..errors import AccelDetError
from ..models.vgg import init_vgg_weights
from .subjects import ORIGINAL_NAME


def detector_inputs(case, proposals: int = 300, seed: int = 0, device="cpu") -> List[dict]:
    """``case.batch`` Detectron2 inputs: random images of ``case.hw`` (0-255) and ``proposals``
    random precomputed boxes each (selective search itself is not timed)."""
    from detectron2.structures import Boxes, Instances

    g = torch.Generator().manual_seed(seed)
    h, w = case.hw
    inputs = []
    for _ in range(case.batch):
        image = torch.randint(0, 256, (3, h, w), generator=g).float()
        corner = torch.rand(proposals, 2, generator=g) * torch.tensor([w, h]) * 0.8
        size = torch.rand(proposals, 2, generator=g) * torch.tensor([w, h]) * 0.5 + 4
        boxes = torch.cat([corner, (corner + size).minimum(torch.tensor([w - 1.0, h - 1.0]))], 1)
        instances = Instances((h, w))
        instances.proposal_boxes = Boxes(boxes)
        instances.objectness_logits = torch.zeros(proposals)
        inputs.append(
            {"image": image.to(device), "height": h, "width": w, "proposals": instances.to(device)}
        )
    return inputs


def silence_classifier(model: nn.Module) -> None:
    """Set a Fast R-CNN's classifier so that every box scores as background: no box passes
    ``SCORE_THRESH_TEST``, so random weights leave no arbitrary NMS work to time."""
    predictor = model.roi_heads.box_predictor
    with torch.no_grad():
        predictor.cls_score.weight.zero_()
        predictor.cls_score.bias.zero_()
        predictor.cls_score.bias[-1] = 10.0  # background


def unloaded_detector(config: str, opts: Sequence = ()) -> tuple:
    """``(cfg, model)``: the eval-mode Detectron2 model of ``config`` with ``opts``, no
    ``MODEL.WEIGHTS`` loaded (its weights as the builders initialise them)."""
    from detectron2.modeling import build_model

    import accel_det.detection  # noqa: F401  (registers the backbones and the box head)

    from ..detection.config import load_config

    cfg = load_config(config, ["MODEL.WEIGHTS", "", *opts])
    return cfg, build_model(cfg).eval()


def build_detectors(
    plans: Mapping[str, Mapping],
    plan_files: Mapping[str, str],
    *,
    width: float = 1.0,
    opts: Sequence[str] = (),
    device="cpu",
    seed: int = 0,
) -> Dict[str, nn.Module]:
    """Fast R-CNN from ``configs/vgg16_voc.yaml`` and, per plan, from
    ``configs/accel_vgg16_voc.yaml`` with ``MODEL.ACCEL.PLAN`` = its file; random weights (no
    ``MODEL.WEIGHTS`` loaded), the box head shared: every accelerated model takes the original's
    non-backbone weights. The classifier is set so that no box passes ``SCORE_THRESH_TEST``: NMS
    work, which random weights would make arbitrary and different per model, is left out (a few ms
    in a trained detector)."""
    base = ["MODEL.DEVICE", str(device), "MODEL.VGG.WIDTH", width, *opts]
    torch.manual_seed(seed)
    original = unloaded_detector("vgg16_voc.yaml", base)[1]
    silence_classifier(original)
    heads = {k: v for k, v in original.state_dict().items() if not k.startswith("backbone.")}
    detectors = {ORIGINAL_NAME: original}
    for name in plans:
        model = unloaded_detector(
            "accel_vgg16_voc.yaml", base + ["MODEL.ACCEL.PLAN", plan_files[name]]
        )[1]
        missing, unexpected = model.load_state_dict(heads, strict=False)
        if unexpected or any(not k.startswith("backbone.") for k in missing):
            raise AccelDetError(
                f"the detectors of {name} and the original differ outside the backbone"
            )
        detectors[name] = model
    return detectors


def random_detector(config: str, opts: Sequence = (), seed: int = 0):
    """The eval-mode Detectron2 model of ``config`` with random weights (He-initialised convs),
    its classifier set so that no box passes the score threshold (random weights would make the
    NMS work arbitrary and different per model; a few ms in a trained detector)."""
    torch.manual_seed(seed)
    cfg, model = unloaded_detector(config, ["MODEL.DEVICE", "cpu", *opts])
    init_vgg_weights(model.backbone.features)
    silence_classifier(model)
    return cfg, model
