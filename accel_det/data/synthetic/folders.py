"""Small generated image folders for tests and demos (no ImageNet here).

Each class has its own colour and stripe orientation, so a network can learn to tell the classes
apart in a few iterations; images vary in size, aspect ratio, phase and noise, and alternate
between JPEG and PNG, so the real reading and preprocessing paths are exercised.
"""

from __future__ import annotations

import math
import os
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image

from ...errors import AccelDetError


def class_name(label: int) -> str:
    return f"class_{label:02d}"


def synthetic_image(
    label: int, num_classes: int, rng: np.random.Generator, size: Tuple[int, int]
) -> Image.Image:
    """One RGB image of class ``label``: class-coloured oriented stripes, a bright blob, noise."""
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = math.pi * label / num_classes
    frequency = 2 * math.pi / (6 + 2 * (label % 3))
    phase = rng.uniform(0, 2 * math.pi)
    stripes = 0.5 + 0.5 * np.sin(frequency * (xx * math.cos(angle) + yy * math.sin(angle)) + phase)
    hue = 2 * math.pi * label / num_classes
    colour = 0.5 + 0.45 * np.array(
        [math.cos(hue), math.cos(hue - 2.1), math.cos(hue + 2.1)], dtype=np.float32
    )
    image = stripes[..., None] * colour + (1 - stripes[..., None]) * (1 - colour) * 0.4
    cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
    radius = rng.uniform(0.1, 0.25) * min(height, width)
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
    image = image + 0.3 * blob[..., None]
    image = image + rng.normal(0, 0.05, image.shape).astype(np.float32)
    return Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8), "RGB")


def make_image_folder(
    root: str,
    *,
    num_classes: int = 10,
    images_per_class: int = 2,
    size: int = 72,
    layout: str = "tree",
    seed: int = 0,
    label_file: Optional[str] = None,
    numeric_labels: bool = False,
) -> List[Tuple[str, int]]:
    """Write ``num_classes × images_per_class`` images below ``root`` and return ``(relative path,
    label)`` pairs.

    ``layout="tree"``: ``root/class_XX/img_NNNN.{jpg,png}`` (ImageNet style); ``"flat"``: every
    image directly in ``root`` and, if ``label_file`` is given, a ``<file> <label>`` line per image
    (the label a class index when ``numeric_labels``, else the class folder name).
    """
    if layout not in ("tree", "flat"):
        raise AccelDetError(f"layout must be 'tree' or 'flat', got {layout!r}")
    if num_classes < 1 or images_per_class < 1 or size < 8:
        raise AccelDetError("need at least one class, one image per class and a size of 8 pixels")
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    written = []
    number = 0
    for label in range(num_classes):
        for _ in range(images_per_class):
            shape = (int(size * rng.uniform(0.8, 1.2)), int(size * rng.uniform(0.8, 1.4)))
            image = synthetic_image(label, num_classes, rng, shape)
            extension = ".jpg" if number % 2 == 0 else ".png"
            name = f"img_{number:04d}{extension}"
            relative = os.path.join(class_name(label), name) if layout == "tree" else name
            os.makedirs(os.path.dirname(os.path.join(root, relative)), exist_ok=True)
            image.save(
                os.path.join(root, relative), quality=90
            ) if extension == ".jpg" else image.save(os.path.join(root, relative))
            written.append((relative, label))
            number += 1
    if label_file is not None:
        with open(label_file, "w", encoding="utf-8") as f:
            for relative, label in written:
                f.write(f"{relative} {label if numeric_labels else class_name(label)}\n")
    return written


def write_class_list(path: str, num_classes: int) -> None:
    """The class names of :func:`make_image_folder`, one per line."""
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(class_name(label) + "\n" for label in range(num_classes))
