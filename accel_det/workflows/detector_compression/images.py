"""The images and RoIs a detector is compressed on: training images of the config's data set,
exactly as the detector sees them at test time (Detectron2's test-time resize, ``INPUT.FORMAT``,
``(x − MODEL.PIXEL_MEAN) / MODEL.PIXEL_STD``), and per image a seeded sample of the top
precomputed proposals it would score at test time, optionally biased toward objects."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Iterator, List

import numpy as np
import torch
from detectron2.data import DatasetMapper
from detectron2.structures import Boxes, pairwise_iou
from tqdm.auto import tqdm

from ...detection.loaders import detection_dataset_dicts
from ...errors import AccelDetError

FOREGROUND_IOU = 0.5  # Fast R-CNN's foreground threshold


@dataclass
class DetectorImages:
    """Sampled images (uint8, as resized for the test) and RoIs, iterable as the solver's
    ``{"images": 1×3×H×W, "indices": ...}`` batches (one image each: sizes differ)."""

    model: torch.nn.Module
    images: List[torch.Tensor] = field(default_factory=list)  # 3×H×W uint8, resized
    rois: List[torch.Tensor] = field(default_factory=list)  # R×4 boxes in the resized image
    indices: List[int] = field(default_factory=list)  # global image numbers (shards of processes)

    def preprocessed(self, number: int) -> torch.Tensor:
        """Image ``number`` as the backbone's input: normalised, padded as the model pads."""
        image = self.images[number].to(self.model.device)
        return self.model.preprocess_image([{"image": image}]).tensor

    def __iter__(self) -> Iterator[dict]:
        for number, index in enumerate(self.indices):
            yield {"images": self.preprocessed(number), "indices": torch.tensor([index])}

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def num_rois(self) -> int:
        return sum(len(r) for r in self.rois)


def sample_detector_images(
    cfg,
    model,
    num_images: int,
    rois_per_image: int,
    *,
    foreground_fraction: float = 0.0,
    seed: int = 0,
    shard=(0, 1),
    progress: bool = True,
) -> DetectorImages:
    """``num_images`` images of ``DATASETS.TRAIN`` drawn with ``seed`` (this process keeps every
    ``shard[1]``-th, from ``shard[0]``), and ``rois_per_image`` RoIs of each among its top
    ``PRECOMPUTED_PROPOSAL_TOPK_TEST`` proposals (``foreground_fraction`` of them with IoU ≥ 0.5
    to an object, when it has them); ``rois_per_image`` 0: the images only (a backbone's
    responses), no proposal file needed."""
    names = list(cfg.DATASETS.TRAIN)
    with_rois = rois_per_image > 0
    if with_rois and (
        not cfg.MODEL.LOAD_PROPOSALS or len(cfg.DATASETS.PROPOSAL_FILES_TRAIN) != len(names)
    ):
        raise AccelDetError(
            f"data set {', '.join(names)} has no precomputed proposals: the detector is compressed "
            "at its RoIs, so the config needs MODEL.LOAD_PROPOSALS True and "
            "DATASETS.PROPOSAL_FILES_TRAIN (make them with tools/make_proposals.py)"
        )
    dicts = detection_dataset_dicts(
        names,
        filter_empty=False,
        proposal_files=list(cfg.DATASETS.PROPOSAL_FILES_TRAIN) if with_rois else None,
    )
    if len(dicts) < num_images:
        raise AccelDetError(
            f"data set {', '.join(names)} has {len(dicts)} images, fewer than the {num_images} "
            "asked for (--num-images)"
        )
    chosen = sorted(np.random.default_rng(seed).permutation(len(dicts))[:num_images].tolist())
    mapper = DatasetMapper(cfg, is_train=False)
    if not with_rois:
        mapper.proposal_topk = None  # no proposals read, even where the config loads them
    result = DetectorImages(model)
    rank, world = shard
    mine = [(k, i) for k, i in enumerate(chosen) if k % world == rank]
    for number, index in tqdm(mine, desc="images and RoIs", disable=not progress, leave=False):
        record = dicts[index]
        gt = [a["bbox"] for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
        mapped = mapper(copy.deepcopy({k: v for k, v in record.items() if k != "annotations"}))
        image = mapped["image"]
        result.images.append(image)
        result.indices.append(number)
        if not with_rois:
            continue
        boxes = mapped["proposals"].proposal_boxes.tensor
        if len(boxes) == 0:
            raise AccelDetError(
                f"image {record['file_name']} has no proposals in the proposal file"
            )
        scale = torch.tensor(
            [image.shape[2] / record["width"], image.shape[1] / record["height"]] * 2
        )
        gt_boxes = torch.tensor(gt, dtype=torch.float32).reshape(-1, 4) * scale
        rng = np.random.default_rng([seed, index])
        picked = pick_rois(boxes, gt_boxes, rois_per_image, foreground_fraction, rng)
        result.rois.append(boxes[picked])
    return result


def pick_rois(boxes, gt_boxes, count: int, foreground_fraction: float, rng) -> torch.Tensor:
    """Indices of ``count`` of ``boxes`` (all when fewer), ``foreground_fraction`` of them among
    those with IoU ≥ 0.5 to a ground-truth box, the rest among all the others."""
    count = min(count, len(boxes))
    foreground = np.zeros(len(boxes), dtype=bool)
    if foreground_fraction > 0 and len(gt_boxes):
        iou = pairwise_iou(Boxes(boxes), Boxes(gt_boxes)).max(dim=1).values
        foreground = (iou >= FOREGROUND_IOU).numpy()
    wanted = min(int(round(count * foreground_fraction)), int(foreground.sum()))
    fg = rng.permutation(np.flatnonzero(foreground))[:wanted]
    rest = rng.permutation(np.flatnonzero(~np.isin(np.arange(len(boxes)), fg)))[: count - len(fg)]
    return torch.from_numpy(np.sort(np.concatenate([fg, rest]))).long()
