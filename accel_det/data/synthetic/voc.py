"""A synthetic data set in PASCAL VOC format (JPEG + XML + ImageSets), for demos and tests.

Several object classes (shapes) with varied size, aspect, rotation, colour and texture, partly
occluding each other and cut by the image border, on cluttered backgrounds (gradients, noise,
lines, arcs, dots and irregular textured blobs that belong to no class). The folder is laid out
like ``VOC2007``, so Detectron2's VOC loader and ``PascalVOCDetectionEvaluator`` run on it as they
run on VOC. Annotations follow VOC: 1-based inclusive pixel boxes of the *visible* part;
``truncated`` when the object leaves the image; ``difficult`` when less than
``DIFFICULT_VISIBLE`` of it is visible or its visible box is smaller than ``DIFFICULT_SIZE``
pixels; objects less than 10 % visible are not annotated.

Nothing here imports detectron2; ``python datasets/make_synthetic_voc.py --help`` writes one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from typing import List, Optional, Sequence, Tuple
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageFilter

from ...errors import AccelDetError
from .drawing import background, draw_clutter, shape_alpha, textured

logger = logging.getLogger(__name__)

GENERATOR_FORMAT = "accel-det-synthetic-voc/1"
STAMP_FILE = "synthetic_voc.json"
DEFAULT_CLASSES = ("circle", "square", "star", "cross", "ring")
SHAPES = DEFAULT_CLASSES + (
    "triangle",
    "hexagon",
    "heart",
)  # triangles are easily confused with corners of the others
DIFFICULT_VISIBLE = 0.35  # visible fraction under which an object is marked difficult
DIFFICULT_SIZE = 10  # pixels: a visible box smaller than this (either side) is difficult
MIN_VISIBLE = 0.10  # objects less visible than this are not annotated at all


def make_synthetic_voc(
    root: str,
    *,
    num_trainval: int = 400,
    num_test: int = 200,
    image_size: int = 160,
    classes: Sequence[str] = DEFAULT_CLASSES,
    max_objects: int = 4,
    min_object: float = 0.18,
    max_object: float = 0.5,
    clutter: int = 10,
    seed: int = 0,
    workers: int = 1,
    jpeg_quality: int = 90,
    progress: bool = True,
) -> dict:
    """Write a VOC2007-style folder at ``root`` (``Annotations/``, ``JPEGImages/``,
    ``ImageSets/Main/{train,val,trainval,test}.txt``) and a stamp ``synthetic_voc.json`` with the
    parameters; returns the stamp.

    Image heights are ``image_size``; widths vary from ``image_size`` to 4/3 of it. Object sizes
    are fractions of the image height. The same parameters give the same files (``workers`` does not
    change them). If ``root`` already holds a set made with the same parameters it is kept; a set
    made with other parameters is replaced; any other existing folder is refused.
    """
    classes = tuple(classes)
    unknown = [c for c in classes if c not in SHAPES]
    if unknown or not classes:
        raise AccelDetError(
            f"unknown synthetic classes {unknown or '(none)'}; choose among {', '.join(SHAPES)}"
        )
    if len(set(classes)) != len(classes):
        raise AccelDetError("synthetic classes must be distinct")
    if num_trainval < 2 or num_test < 1:
        raise AccelDetError("need at least 2 trainval images and 1 test image")
    if image_size < 32:
        raise AccelDetError(f"image_size must be at least 32 pixels, got {image_size}")
    if not 0 < min_object <= max_object <= 1:
        raise AccelDetError(
            f"need 0 < min_object <= max_object <= 1, got {min_object}, {max_object}"
        )
    params = {
        "format": GENERATOR_FORMAT,
        "num_trainval": int(num_trainval),
        "num_test": int(num_test),
        "image_size": int(image_size),
        "classes": list(classes),
        "max_objects": int(max_objects),
        "min_object": float(min_object),
        "max_object": float(max_object),
        "clutter": int(clutter),
        "seed": int(seed),
        "jpeg_quality": int(jpeg_quality),
    }
    root = os.path.abspath(os.path.expanduser(root))
    stamp_path = os.path.join(root, STAMP_FILE)
    if os.path.exists(root):
        existing = _read_stamp(stamp_path)
        if existing is None:
            if os.path.isdir(root) and not os.listdir(root):
                os.rmdir(root)
            else:
                raise AccelDetError(
                    f"{root} exists and is not a synthetic VOC "
                    f"set made by accel-det; choose another folder"
                )
        elif {k: existing.get(k) for k in params} == params:
            logger.info("synthetic VOC set at %s is up to date", root)
            return existing

    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.", dir=parent)
    try:
        for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
            os.makedirs(os.path.join(work, sub))
        total = num_trainval + num_test
        ids = [f"{i + 1:06d}" for i in range(total)]
        jobs = [(work, ids[i], i, params) for i in range(total)]
        counts = np.zeros((len(classes), 2), dtype=np.int64)  # objects, of which difficult
        iterator = _map(_write_one, jobs, workers)
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, total=total, desc="synthetic VOC")
        for labels in iterator:
            for label, difficult in labels:
                counts[label, 0] += 1
                counts[label, 1] += difficult
        trainval, test = ids[:num_trainval], ids[num_trainval:]
        num_train = num_trainval // 2
        splits = {
            "train": trainval[:num_train],
            "val": trainval[num_train:],
            "trainval": trainval,
            "test": test,
        }
        for split, names in splits.items():
            with open(os.path.join(work, "ImageSets", "Main", f"{split}.txt"), "w") as f:
                f.write("\n".join(names) + "\n")
        stamp = dict(params)
        stamp["objects"] = {c: int(counts[i, 0]) for i, c in enumerate(classes)}
        stamp["difficult"] = {c: int(counts[i, 1]) for i, c in enumerate(classes)}
        stamp["note"] = "synthetic data made by accel_det.data.synthetic.voc; not PASCAL VOC"
        with open(os.path.join(work, STAMP_FILE), "w") as f:
            json.dump(stamp, f, indent=2)
        if os.path.exists(root):
            shutil.rmtree(root)  # only a set this generator made (checked above)
        os.replace(work, root)
    finally:
        if os.path.exists(work):
            shutil.rmtree(work, ignore_errors=True)
    logger.info("wrote %d synthetic VOC images to %s", total, root)
    return stamp


def _read_stamp(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            stamp = json.load(f)
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) and stamp.get("format") == GENERATOR_FORMAT else None


def _map(function, jobs, workers):
    if workers <= 1:
        return map(function, jobs)
    executor = ProcessPoolExecutor(max_workers=workers)
    results = executor.map(function, jobs, chunksize=8)

    def generate():
        try:
            yield from results
        finally:
            executor.shutdown()

    return generate()


def _write_one(job) -> List[Tuple[int, int]]:
    folder, image_id, index, params = job
    rng = np.random.default_rng([params["seed"], index])
    image, objects = render_image(rng, params)
    Image.fromarray(image).save(
        os.path.join(folder, "JPEGImages", f"{image_id}.jpg"), quality=params["jpeg_quality"]
    )
    with open(os.path.join(folder, "Annotations", f"{image_id}.xml"), "w", encoding="utf-8") as f:
        f.write(voc_xml(image_id, image.shape[1], image.shape[0], objects, params["classes"]))
    return [(o["label"], o["difficult"]) for o in objects]


def render_image(rng: np.random.Generator, params: dict) -> Tuple[np.ndarray, List[dict]]:
    """One H×W×3 uint8 RGB image and its objects (label, visible box, truncated, difficult)."""
    height = params["image_size"]
    width = int(round(height * rng.uniform(1.0, 4.0 / 3.0)))
    canvas = background(rng, height, width)
    for _ in range(int(rng.integers(params["clutter"] // 2, params["clutter"] + 1))):
        draw_clutter(rng, canvas)

    classes = params["classes"]
    visible: List[np.ndarray] = []
    placed = []
    for _ in range(int(rng.integers(1, params["max_objects"] + 1))):
        label = int(rng.integers(len(classes)))
        size = height * rng.uniform(params["min_object"], params["max_object"])
        aspect = math.exp(rng.uniform(-0.3, 0.3))
        w, h = size * math.sqrt(aspect), size / math.sqrt(aspect)
        # the centre may sit a little outside the image: truncated objects
        cx = rng.uniform(-0.15 * w, width + 0.15 * w)
        cy = rng.uniform(-0.15 * h, height + 0.15 * h)
        angle = rng.uniform(0, 2 * math.pi)
        alpha, full_area = shape_alpha(classes[label], cx, cy, w, h, angle, height, width)
        if full_area <= 0:
            continue
        mask = alpha > 0.5
        for other in visible:
            other &= ~mask
        texture = textured(rng, height, width)
        canvas[:] = canvas * (1 - alpha[..., None]) + texture * alpha[..., None]
        visible.append(mask)
        placed.append((label, full_area))

    objects = []
    for (label, full_area), mask in zip(placed, visible):
        area = int(mask.sum())
        if area < MIN_VISIBLE * full_area or area == 0:
            continue
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
        visible_fraction = area / full_area
        small = min(x1 - x0 + 1, y1 - y0 + 1) < DIFFICULT_SIZE
        objects.append(
            {
                "label": label,
                # VOC: 1-based, inclusive pixel indices
                "box": (x0 + 1, y0 + 1, x1 + 1, y1 + 1),
                "truncated": int(x0 == 0 or y0 == 0 or x1 == width - 1 or y1 == height - 1),
                "difficult": int(visible_fraction < DIFFICULT_VISIBLE or small),
            }
        )
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 0.9))))
    pixels = np.asarray(image).astype(np.float32)
    pixels += rng.normal(0, rng.uniform(2, 8), pixels.shape)  # sensor noise
    return np.clip(pixels, 0, 255).astype(np.uint8), objects


def voc_xml(
    image_id: str, width: int, height: int, objects: Sequence[dict], classes: Sequence[str]
) -> str:
    """The VOC annotation XML of one image (the fields Detectron2's loader and evaluator read)."""
    parts = [
        "<annotation>",
        "  <folder>VOC2007</folder>",
        f"  <filename>{escape(image_id)}.jpg</filename>",
        "  <source><database>accel-det synthetic VOC (not PASCAL VOC)</database></source>",
        f"  <size><width>{width}</width><height>{height}</height><depth>3</depth></size>",
        "  <segmented>0</segmented>",
    ]
    for o in objects:
        x0, y0, x1, y1 = o["box"]
        parts += [
            "  <object>",
            f"    <name>{escape(classes[o['label']])}</name>",
            "    <pose>Unspecified</pose>",
            f"    <truncated>{o['truncated']}</truncated>",
            f"    <difficult>{o['difficult']}</difficult>",
            f"    "
            f"<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>",
            "  </object>",
        ]
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- drawing
