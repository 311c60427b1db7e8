"""A generated 10-class image task (solid shapes and textures), for the solver benchmark: a
network trained on it for a few CPU minutes has the structured spectra a random one lacks."""

from __future__ import annotations

import math
from typing import Tuple

import torch

from ...errors import AccelDetError

NUM_CLASSES = 10
CLASS_NAMES = (
    "disk",
    "square",
    "triangle",
    "ring",
    "cross",
    "stripes",
    "checkerboard",
    "dots",
    "target",
    "speckle",
)
MEAN, STD = 0.5, 0.25


def make_task(
    num_images: int, *, size: int = 32, seed: int = 0
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``num_images`` normalised RGB images (N×3×size×size) and labels of the 10 generated classes.

    Classes 0–4 are solid shapes (disk, square, triangle, ring, cross), 5–9 a disk or square region
    filled with a texture (stripes, checkerboard, dots, concentric rings, speckle); position, size,
    rotation, texture period and both colours are random, so only shape and texture tell the
    classes apart. The same ``seed`` gives the same images (balanced labels, shuffled).
    """
    if num_images < 1 or size < 8:
        raise AccelDetError("make_task needs at least one image of at least 8×8 pixels")
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_images) % NUM_CLASSES
    labels = labels[torch.randperm(num_images, generator=g)]
    images = torch.empty(num_images, 3, size, size)
    for start in range(0, num_images, 512):
        images[start : start + 512] = _render(labels[start : start + 512], size, g)
    return (images - MEAN) / STD, labels


def _render(labels: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    n = len(labels)

    def uniform(low, high, *shape):
        return low + (high - low) * torch.rand(n, *shape, generator=g)

    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    cx, cy = uniform(0.35, 0.65)[:, None, None] * size, uniform(0.35, 0.65)[:, None, None] * size
    radius = uniform(0.2, 0.34)[:, None, None] * size
    angle = uniform(0, 2 * math.pi)[:, None, None]
    u = (xx - cx) * angle.cos() + (yy - cy) * angle.sin()
    v = -(xx - cx) * angle.sin() + (yy - cy) * angle.cos()
    dist = (u.square() + v.square()).sqrt()
    period = uniform(3.0, 6.0)[:, None, None] * size / 32
    background = uniform(0, 1, 3)
    foreground = (background + 0.5 + uniform(-0.15, 0.15, 3)) % 1.0

    disk = radius - dist
    square = 0.85 * radius - torch.maximum(u.abs(), v.abs())
    triangle = torch.stack(
        [
            0.5 * radius - (u * math.cos(a) + v * math.sin(a))
            for a in (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3)
        ]
    ).amin(0)
    ring = torch.minimum(radius - dist, dist - 0.55 * radius)
    arm = 0.3 * radius
    cross = torch.maximum(
        torch.minimum(radius - u.abs(), arm - v.abs()),
        torch.minimum(radius - v.abs(), arm - u.abs()),
    )
    region = torch.where(torch.rand(n, 1, 1, generator=g) < 0.5, disk, square)
    shapes = {0: disk, 1: square, 2: triangle, 3: ring, 4: cross}

    wave = 2 * math.pi / period
    speckle = (torch.rand(n, (size + 1) // 2, (size + 1) // 2, generator=g) > 0.5).float()
    speckle = speckle.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, :size, :size]
    textures = {
        5: torch.sigmoid(4 * torch.sin(wave * u)),
        6: torch.sigmoid(4 * torch.sin(wave * u) * torch.sin(wave * v)),
        7: torch.sigmoid(4 * (torch.cos(wave * u) + torch.cos(wave * v) - 1)),
        8: torch.sigmoid(4 * torch.sin(wave * dist)),
        9: speckle,
    }
    mask = torch.zeros(n, size, size)
    fill = torch.ones(n, size, size)
    for label in range(NUM_CLASSES):
        chosen = labels == label
        if label in shapes:
            mask[chosen] = (shapes[label][chosen] + 0.5).clamp(0, 1)
        else:
            mask[chosen] = (region[chosen] + 0.5).clamp(0, 1)
            fill[chosen] = textures[label][chosen]
    amount = (mask * fill)[:, None]
    image = background[:, :, None, None] * (1 - amount) + foreground[:, :, None, None] * amount
    gradient = uniform(-0.15, 0.15, 2)
    image = (
        image
        + (
            gradient[:, 0, None, None] * (xx / size - 0.5)
            + gradient[:, 1, None, None] * (yy / size - 0.5)
        )[:, None]
    )
    image = image + 0.06 * torch.randn(image.shape, generator=g)
    return image.clamp(0, 1)
