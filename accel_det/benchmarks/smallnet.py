"""The solver benchmark's trained network: VGG-16's 13 convs at a fraction of the width and a
small head, trained on the generated shapes task (batch norms while training, folded away)."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import nn

from ..data.synthetic.shapes import NUM_CLASSES
from ..models.vgg import init_vgg_weights, vgg16_features
from ..utils.io import atomic_torch_save, json_safe, load_torch_file
from ..workflows.classifier import BatchNormClassifier, fit_classifier

logger = logging.getLogger(__name__)


def make_head(channels: int, num_classes: int = NUM_CLASSES) -> nn.Sequential:
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, channels),
        nn.ReLU(inplace=True),
        nn.Linear(channels, num_classes),
    )


@dataclass
class TrainedNet:
    """The trained network: BN-free ``features`` for the solver and the ``head`` that reads them."""

    features: nn.Sequential
    head: nn.Sequential
    width: float
    train_seconds: float
    train_accuracy: float
    history: List[dict]

    def classify(
        self, images: torch.Tensor, features: Optional[nn.Module] = None, batch: int = 256
    ) -> torch.Tensor:
        return logits(features or self.features, self.head, images, batch).argmax(1)


def train_small_vgg(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    width: float = 0.25,
    steps: int = 1500,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    log_every: int = 250,
) -> TrainedNet:
    """VGG-16's 13 convs at ``width`` (with batch norm while training, folded away afterwards) and a
    small head, trained with Adam (cosine learning rate, random flips) for ``steps`` steps."""
    torch.manual_seed(seed)
    features = vgg16_features(width)
    init_vgg_weights(features)
    channels = [m for m in features if isinstance(m, nn.Conv2d)][-1].out_channels
    model = BatchNormClassifier(features, make_head(channels))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=steps, pct_start=0.15
    )
    g = torch.Generator().manual_seed(seed + 1)
    history = []
    start = time.perf_counter()
    running = {"correct": 0, "seen": 0}

    def on_step(step: int, loss, out, y) -> None:
        running["correct"] += int((out.argmax(1) == y).sum())
        running["seen"] += len(y)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            accuracy = running["correct"] / running["seen"]
            history.append(
                {
                    "step": step + 1,
                    "loss": float(loss.detach()),
                    "train_accuracy": accuracy,
                    "seconds": round(time.perf_counter() - start, 1),
                }
            )
            logger.info(
                "train step %d/%d loss %.3f running accuracy %.3f (%.0fs)",
                step + 1,
                steps,
                float(loss.detach()),
                accuracy,
                time.perf_counter() - start,
            )
            running.update(correct=0, seen=0)

    def next_batch(step: int):
        return flipped_batch(images, labels, batch_size, g)

    fit_classifier(model, next_batch, optimizer, steps, scheduler=schedule, on_step=on_step)
    folded = model.folded_features()
    model.head.eval()
    return TrainedNet(
        folded,
        model.head,
        width,
        time.perf_counter() - start,
        history[-1]["train_accuracy"] if history else float("nan"),
        history,
    )


def logits(
    features: nn.Module, head: nn.Module, images: torch.Tensor, batch: int = 256
) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat(
            [head(features(images[i : i + batch])) for i in range(0, len(images), batch)]
        )


def feature_maps(module: nn.Module, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """``module``'s outputs (feature maps, or logits of a whole network) for ``images`` in
    batches of ``batch``."""
    with torch.inference_mode():
        return torch.cat([module(images[i : i + batch]) for i in range(0, len(images), batch)])


def flipped_batch(images: torch.Tensor, labels: torch.Tensor, size: int, generator):
    """``size`` random training images and their labels, flipped left-right and upside down each
    with probability 1/2 (one draw for the batch)."""
    index = torch.randint(len(images), (size,), generator=generator)
    x = images[index]
    flips = torch.rand(2, generator=generator)
    x = x.flip(3) if flips[0] < 0.5 else x
    return (x.flip(2) if flips[1] < 0.5 else x), labels[index]


def held_out_metrics(
    net: TrainedNet,
    features: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    reference: torch.Tensor,
) -> dict:
    """Relative output error ‖F̂(x) − F(x)‖/‖F(x)‖ of the features on held-out images (F = the
    original features, ``reference`` = F(images)) and top-1 accuracy with the original head."""
    out = feature_maps(features, images)
    error = float((out - reference).norm() / reference.norm())
    with torch.inference_mode():
        accuracy = float((net.head(out).argmax(1) == labels).float().mean())
    return {"error": error, "accuracy": accuracy}


def net_cache_name(config, prefix: str = "small_vgg", version: str = "v1") -> str:
    """File name of the trained network for a sweep ``config`` (what training depends on)."""
    key = f"{config.size}|{config.width}|{config.train_images}|{config.train_steps}|{config.seed}"
    return f"{prefix}_{hashlib.sha256(f'{key}|{version}'.encode()).hexdigest()[:10]}.pth"


def save_net(net: TrainedNet, path: str) -> None:
    atomic_torch_save(
        {
            "features": net.features.state_dict(),
            "head": net.head.state_dict(),
            "width": net.width,
            "train_seconds": net.train_seconds,
            "train_accuracy": net.train_accuracy,
            "history": json_safe(net.history),
        },
        path,
    )


def load_net(path: str) -> TrainedNet:
    saved = load_torch_file(path, "trained network")
    features = vgg16_features(saved["width"])
    features.load_state_dict(saved["features"])
    channels = [m for m in features if isinstance(m, nn.Conv2d)][-1].out_channels
    head = make_head(channels)
    head.load_state_dict(saved["head"])
    return TrainedNet(
        features.eval(),
        head.eval(),
        saved["width"],
        saved["train_seconds"],
        saved["train_accuracy"],
        list(saved["history"]),
    )
