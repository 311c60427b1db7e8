"""fc6 responses of a Fast R-CNN detector at the sampled RoIs: RoI pooling of the backbone's
conv5_3 map, then fc6 (and, for the original network, fc7 after the ReLU)."""

from __future__ import annotations

from typing import Tuple

import torch
from detectron2.structures import Boxes
from tqdm.auto import tqdm

from ...utils.dist import gather_samples
from .images import DetectorImages


def pooled_features(
    model, features: torch.nn.Module, images: DetectorImages, number: int
) -> torch.Tensor:
    """The flattened RoI-pooled features (R × C·7·7) of image ``number`` through ``features``."""
    x = images.preprocessed(number)
    conv = features(x)
    in_features = model.roi_heads.box_in_features
    maps = [conv] * len(in_features)
    boxes = [Boxes(images.rois[number].to(conv.device))]
    return model.roi_heads.box_pooler(maps, boxes).flatten(1)


def fc6_responses(
    model, features: torch.nn.Module, images: DetectorImages, progress: bool = True
) -> Tuple[torch.Tensor, torch.Tensor]:
    """fc6's pre-ReLU responses W₆ x + b₆ at every sampled RoI of every image, and the image of
    every row (in image order; under torch.distributed those of all processes)."""
    fc6 = model.roi_heads.box_head.fc6
    rows, owners = [], []
    with torch.inference_mode():
        for number in tqdm(
            range(len(images)), desc="fc6 responses", disable=not progress, leave=False
        ):
            pooled = pooled_features(model, features, images, number)
            rows.append(fc6(pooled).float().cpu())
            owners.append(torch.full((len(pooled),), images.indices[number], dtype=torch.long))
    width = fc6.out_features
    stacked = torch.cat(rows) if rows else torch.zeros(0, width)
    owned = torch.cat(owners) if owners else torch.zeros(0, dtype=torch.long)
    return gather_samples(stacked, owned)


def fc_targets(model, y6: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The original network's fc6 and fc7 responses from fc6's (fc7 reads ReLU(fc6))."""
    fc7 = model.roi_heads.box_head.fc7
    with torch.inference_mode():
        y7 = fc7(y6.clamp(min=0).to(fc7.weight)).float().cpu()
    return y6, y7
