"""A stand-in for ImageNet pre-training, for the demo: a VGG-16 classifier trained on object crops.

The paper's detector starts from an ImageNet VGG-16 (Table 9). There is no ImageNet here, and a
VGG-16 trained as a detector from random weights learns very slowly, so the demo first trains a
(narrow) VGG-16 *classifier* on crops of the training set's objects and of background, then hands
its conv weights to Fast R-CNN exactly as ImageNet weights are handed over
(``vgg16_to_detectron2``; fc6/fc7 start fresh). Crops are cheap, so the conv layers see far more
objects per second than a detector's do.

The classifier trains with a batch norm after each conv (it learns much faster from scratch);
the norms are folded into the convs afterwards, so the result is a plain torchvision-layout
VGG-16 ``features.*`` state dict.
"""

from __future__ import annotations

import logging
import math
import time
from typing import List, Mapping, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.ops import box_iou, roi_align
from tqdm.auto import tqdm

from ...models.vgg import init_vgg_weights, scaled, vgg16_features
from ..classifier import BatchNormClassifier, SpatialMean, fit_classifier

logger = logging.getLogger(__name__)


def crop_classifier(width: float, num_classes: int) -> BatchNormClassifier:
    """VGG-16 conv layers (pool5 dropped, as in the detector's backbone) with a batch norm after
    each conv, global average pooling and one linear layer: a light head that lets the conv
    layers learn fast. Only the conv layers are handed to the detector."""
    features = vgg16_features(width)
    init_vgg_weights(features)
    head = nn.Sequential(SpatialMean(), nn.Linear(scaled(512, width), num_classes))
    return BatchNormClassifier(features[:-1], head)


def pretrain_on_crops(
    records: Sequence[Mapping],
    num_classes: int,
    *,
    width: float,
    pixel_mean: Sequence[float],
    pixel_std: Sequence[float],
    input_format: str = "RGB",
    iterations: int = 1500,
    batch_size: int = 32,
    crop: int = 64,
    lr: float = 0.05,
    background_fraction: float = 0.25,
    seed: int = 0,
    progress: bool = True,
    model: Optional[nn.Module] = None,
) -> dict:
    """Train :func:`crop_classifier` (or ``model``, a classifier of ``num_classes + 1`` outputs
    with batch norms) on crops of the objects in ``records`` (Detectron2 dataset dicts, boxes
    XYXY_ABS) and of background (class ``num_classes``), preprocessed as the detector's input
    (``input_format``, ``pixel_mean``/``pixel_std`` on 0-255 pixels); returns the trained
    ``model``, for :func:`crop_classifier` also its folded conv weights (torchvision
    ``features.*`` keys, ``state_dict``), and a summary (held-out accuracy, seconds)."""
    rng = np.random.default_rng(seed)
    images, boxes, labels = _load(records, input_format)
    order = rng.permutation(len(images))
    held_out = set(order[: max(1, len(images) // 10)].tolist())
    train_ids = [i for i in range(len(images)) if i not in held_out and len(boxes[i])]
    mean = torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1)

    vgg = model is None
    model = crop_classifier(width, num_classes + 1) if vgg else model
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1]
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        momentum=0.9,
    )
    warmup = min(100, iterations // 10)

    def lr_at(it: int) -> float:  # linear warm-up, then cosine decay
        if it < warmup:
            scale = (it + 1) / warmup
        else:
            scale = 0.5 * (1 + math.cos(math.pi * (it - warmup) / max(1, iterations - warmup)))
        return lr * scale

    def next_batch(it: int):
        x, y = _batch(
            images,
            boxes,
            labels,
            train_ids,
            batch_size,
            crop,
            background_fraction,
            num_classes,
            rng,
        )
        return (x - mean) / std, y

    losses: List[float] = []
    bar = tqdm(total=iterations, desc="pre-training on crops", disable=not progress)

    def on_step(it: int, loss, logits, targets) -> None:
        losses.append(loss.item())
        bar.update(1)
        if it % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")

    start = time.perf_counter()
    fit_classifier(model, next_batch, optimizer, iterations, lr_at=lr_at, on_step=on_step)
    bar.close()
    accuracy = _accuracy(
        model, images, boxes, labels, sorted(held_out), crop, num_classes, mean, std, rng
    )
    seconds = time.perf_counter() - start
    logger.info(
        "crop classifier: held-out accuracy %.3f (objects and "
        "background, %d classes) after %d iterations, %.0fs",
        accuracy,
        num_classes + 1,
        iterations,
        seconds,
    )
    state_dict = {}
    if vgg:
        folded = model.folded_features().state_dict()
        state_dict = {f"features.{k}": v.detach().clone() for k, v in folded.items()}
    return {
        "model": model,
        "state_dict": state_dict,
        "held_out_accuracy": accuracy,
        "seconds": seconds,
        "iterations": iterations,
        "final_loss": float(np.mean(losses[-50:])),
    }


def _load(records, input_format):
    images, boxes, labels = [], [], []
    for r in records:
        image = np.asarray(Image.open(r["file_name"]).convert("RGB"))
        if input_format == "BGR":
            image = image[:, :, ::-1]
        images.append(
            torch.from_numpy(np.array(image)).permute(2, 0, 1)
        )  # uint8 C×H×W (a writable copy)
        anns = [a for a in r.get("annotations", []) if not a.get("iscrowd", 0)]
        boxes.append(torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4))
        labels.append(torch.tensor([a["category_id"] for a in anns], dtype=torch.int64))
    return images, boxes, labels


def _jitter(box: torch.Tensor, rng) -> torch.Tensor:
    """A box a little larger than ``box`` (context), shifted a little, as a square-ish crop."""
    x0, y0, x1, y1 = box.tolist()
    w, h = x1 - x0, y1 - y0
    s = rng.uniform(1.05, 1.4)
    cx, cy = (x0 + x1) / 2 + rng.uniform(-0.1, 0.1) * w, (y0 + y1) / 2 + rng.uniform(-0.1, 0.1) * h
    return torch.tensor([cx - s * w / 2, cy - s * h / 2, cx + s * w / 2, cy + s * h / 2])


def _background_box(image, gt, rng) -> torch.Tensor:
    height, width = image.shape[-2:]
    for _ in range(20):
        size = rng.uniform(0.15, 0.5) * height
        w, h = size * math.exp(rng.uniform(-0.3, 0.3)), size
        x0, y0 = rng.uniform(0, max(1, width - w)), rng.uniform(0, max(1, height - h))
        box = torch.tensor([[x0, y0, x0 + w, y0 + h]])
        if not len(gt) or box_iou(box, gt).max() < 0.3:
            return box[0]
    return box[0]


def _crops(images, picks, crop) -> torch.Tensor:
    """``crop``×``crop`` float crops (bilinear, torchvision ``roi_align``) of (image index, box)
    picks."""
    out = []
    for index, box in picks:
        image = images[index].float().unsqueeze(0)
        out.append(
            roi_align(
                image,
                [box.view(1, 4)],
                output_size=crop,
                spatial_scale=1.0,
                sampling_ratio=2,
                aligned=True,
            )
        )
    return torch.cat(out)


def _batch(images, boxes, labels, ids, batch_size, crop, background_fraction, num_classes, rng):
    picks, ys = [], []
    for _ in range(batch_size):
        i = ids[int(rng.integers(len(ids)))]
        if rng.random() < background_fraction:
            picks.append((i, _background_box(images[i], boxes[i], rng)))
            ys.append(num_classes)
        else:
            k = int(rng.integers(len(boxes[i])))
            picks.append((i, _jitter(boxes[i][k], rng)))
            ys.append(int(labels[i][k]))
    x = _crops(images, picks, crop)
    flip = torch.from_numpy(rng.random(batch_size) < 0.5)
    x[flip] = x[flip].flip(-1)
    return x, torch.tensor(ys)


@torch.no_grad()
def _accuracy(model, images, boxes, labels, ids, crop, num_classes, mean, std, rng) -> float:
    model.eval()
    picks, ys = [], []
    for i in ids:
        for box, label in zip(boxes[i], labels[i]):
            x0, y0, x1, y1 = box.tolist()
            dx, dy = 0.1 * (x1 - x0), 0.1 * (y1 - y0)  # the mean context of training crops
            picks.append((i, torch.tensor([x0 - dx, y0 - dy, x1 + dx, y1 + dy])))
            ys.append(int(label))
        picks.append((i, _background_box(images[i], boxes[i], rng)))
        ys.append(num_classes)
    if not picks:
        return float("nan")
    logits = torch.cat(
        [
            model((_crops(images, picks[k : k + 64], crop) - mean) / std)
            for k in range(0, len(picks), 64)
        ]
    )
    model.train()
    return float((logits.argmax(1) == torch.tensor(ys)).float().mean())
