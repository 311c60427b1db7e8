"""Image folders: listing, reading with unreadable images skipped, labelled sets (the solver's
seeded sample is in :mod:`accel_det.data.sample`).

Two layouts are understood everywhere:

* an **ImageNet-style tree**: ``DIR/<class>/.../*.JPEG``; class indices are the sorted folder
  names, which for ImageNet is torchvision's (and Caffe's) class order;
* a **flat folder** of images (e.g. VOC ``JPEGImages``), with a **label file** when labels are
  needed: one ``<file> <label>`` line per image (whitespace or comma separated), the label either a
  0-based class index (Caffe's ``val.txt``) or a class name such as a WordNet id
  (``LOC_val_solution.csv``: the first word of the second column is used).

For compression no labels are needed: every image below ``DIR`` counts, whatever the layout.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import AccelDetError, first_line
from ..utils.files import not_found

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


# --------------------------------------------------------------------------- listing and reading


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not os.path.basename(name).startswith(".")


def check_folder(root: str, what: str = "image folder") -> str:
    """``root`` with ``~`` expanded; a clear error when it is missing or not a readable folder."""
    path = os.path.expanduser(root)
    if not os.path.exists(path):
        raise not_found(what, root)
    if not os.path.isdir(path):
        raise AccelDetError(f"{what} {root} is not a folder")
    if not os.access(path, os.R_OK | os.X_OK):
        raise AccelDetError(f"{what} {root} is not readable")
    return path


def list_images(root: str) -> List[str]:
    """Paths (relative to ``root``, sorted) of every image file below ``root``: an ImageNet-style
    tree and a flat folder alike. Hidden files and folders are ignored; symlinks are followed."""
    path = check_folder(root)
    found = []
    for folder, dirs, files in os.walk(path, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        relative = os.path.relpath(folder, path)
        for name in files:
            if is_image_file(name):
                found.append(os.path.normpath(os.path.join(relative, name)))
    return sorted(found)


def read_rgb(path: str) -> Image.Image:
    """The image at ``path`` as RGB, fully decoded (so truncated files fail here, not later)."""
    with Image.open(path) as image:
        image.load()
        return image.convert("RGB")


UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def try_read(path, transform: Optional[Callable] = None, name: Optional[str] = None):
    """``transform(read_rgb(path))``, or ``None`` with a warning when the file cannot be read;
    ``path`` may be a file object, ``name`` what the warning calls it."""
    try:
        image = read_rgb(path)
    except UNREADABLE as error:
        logger.warning("skipping unreadable image %s (%s)", name or path, first_line(error))
        return None
    return transform(image) if transform is not None else image


# --------------------------------------------------------------------------- labelled images


class LabeledImages(Dataset):
    """``(path, label)`` samples; an item is ``(image tensor, label)`` or ``None`` if unreadable.

    An index may be an ``(index, seed)`` pair: the transform then runs under that torch seed, so
    random augmentation depends only on the sample, not on the worker or on a resumed run.
    """

    def __init__(
        self, samples: Sequence[Tuple[str, int]], classes: Sequence[str], transform: Callable
    ):
        self.samples, self.classes, self.transform = list(samples), list(classes), transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):
        seed = None
        if isinstance(index, (tuple, list)):
            index, seed = index
        path, label = self.samples[index]
        if seed is None:
            image = try_read(path, self.transform)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                image = try_read(path, self.transform)
        return None if image is None else (image, label)


def collate_skipping(batch):
    """Stack the readable items of a batch: ``(images, labels, number skipped)``; images is
    ``None`` when none was readable."""
    good = [item for item in batch if item is not None]
    skipped = len(batch) - len(good)
    if not good:
        return None, None, skipped
    images = torch.stack([image for image, _ in good])
    labels = torch.as_tensor([label for _, label in good], dtype=torch.long)
    return images, labels, skipped


def read_class_list(path: str) -> List[str]:
    """Class names, one per line; the first word counts (so Caffe's ``synset_words.txt`` works)."""
    if not os.path.isfile(path):
        raise not_found("class list file", path)
    with open(path, encoding="utf-8") as f:
        names = [
            line.split()[0] for line in f if line.strip() and not line.lstrip().startswith("#")
        ]
    if not names:
        raise AccelDetError(f"class list {path} is empty")
    if len(set(names)) != len(names):
        raise AccelDetError(f"class list {path} names a class twice")
    return names


def class_folder_samples(
    root: str, classes: Optional[Sequence[str]] = None
) -> Tuple[List[Tuple[str, int]], List[str]]:
    """Samples of an ImageNet-style tree: the class of an image is its top-level folder, indexed
    by sorted folder names (or by ``classes`` when given)."""
    path = check_folder(root)
    folders = sorted(
        d
        for d in os.listdir(path)
        if not d.startswith(".") and os.path.isdir(os.path.join(path, d))
    )
    names = list(classes) if classes is not None else folders
    index = {name: i for i, name in enumerate(names)}
    unknown = [d for d in folders if d not in index]
    if unknown:
        raise AccelDetError(
            f"class folder {unknown[0]} of {root} is not in the class list ({len(unknown)} unknown)"
        )
    samples, empty = [], []
    for folder in folders:
        images = list_images(os.path.join(path, folder))
        if not images:
            empty.append(folder)
        samples += [(os.path.join(path, folder, name), index[folder]) for name in images]
    if empty:
        logger.warning(
            "%d class folder(s) of %s hold no image, e.g. %s", len(empty), root, empty[0]
        )
    if not samples:
        raise AccelDetError(f"no images found in the class folders of {root}")
    return samples, names


def label_file_samples(
    root: str, label_file: str, classes: Optional[Sequence[str]] = None
) -> Tuple[List[Tuple[str, int]], List[str]]:
    """Samples of a flat folder whose labels come from ``label_file`` (see the module docstring)."""
    path = check_folder(root)
    if not os.path.isfile(label_file):
        raise not_found("label file", label_file)
    on_disk = list_images(path)
    if not on_disk:
        raise AccelDetError(f"no images (JPEG/PNG/...) found in {root}")
    by_name: Dict[str, str] = {}
    for relative in on_disk:
        for key in (
            relative,
            os.path.basename(relative),
            os.path.splitext(os.path.basename(relative))[0],
        ):
            by_name.setdefault(key, relative)
    pairs: List[Tuple[str, str, int]] = []
    with open(label_file, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            fields = [x.strip() for x in text.split(",", 1)] if "," in text else text.split(None, 1)
            if len(fields) < 2 or not fields[1]:
                raise AccelDetError(
                    f"label file {label_file}, line {number}: expected '<file> <label>' (a 0-based "
                    f"class index or a class name)"
                )
            label = fields[1].split()[0]
            pairs.append((fields[0], label, number))
    if pairs and pairs[0][0] not in by_name and not _is_int(pairs[0][1]):
        pairs = pairs[1:]  # a CSV header such as "ImageId,PredictionString"
    if not pairs:
        raise AccelDetError(f"label file {label_file} holds no labels")
    numeric = all(_is_int(label) for _, label, _ in pairs)
    if numeric:
        names = (
            list(classes)
            if classes is not None
            else [str(i) for i in range(max(int(label) for _, label, _ in pairs) + 1)]
        )
        index = None
    else:
        names = list(classes) if classes is not None else sorted({label for _, label, _ in pairs})
        index = {name: i for i, name in enumerate(names)}
    samples, missing, seen = [], 0, set()
    for name, label, number in pairs:
        relative = by_name.get(name)
        if relative is None:
            missing += 1
            continue
        if numeric:
            value = int(label)
            if value < 0:
                raise AccelDetError(
                    f"label file {label_file}, line {number}: negative class index {value}"
                )
        else:
            if label not in index:
                raise AccelDetError(
                    f"label file {label_file}, line {number}: "
                    f"class {label} is not in the class list"
                )
            value = index[label]
        seen.add(relative)
        samples.append((os.path.join(path, relative), value))
    if not samples:
        raise AccelDetError(f"none of the {len(pairs)} files named in {label_file} is in {root}")
    if missing:
        logger.warning(
            "%d file(s) named in %s are not in %s; evaluating the %d found",
            missing,
            label_file,
            root,
            len(samples),
        )
    unlabelled = len(on_disk) - len(seen)
    if unlabelled:
        logger.warning(
            "%d image(s) of %s have no label in %s and are ignored", unlabelled, root, label_file
        )
    return samples, names


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def has_class_folders(root: str) -> bool:
    """True when ``root`` holds sub-folders (an ImageNet-style tree) and no image directly."""
    path = check_folder(root)
    entries = [e for e in os.listdir(path) if not e.startswith(".")]
    folders = [e for e in entries if os.path.isdir(os.path.join(path, e))]
    return bool(folders) and not any(is_image_file(e) for e in entries)


def labeled_images(
    root: str,
    transform: Callable,
    labels: Optional[str] = None,
    classes: Optional[Sequence[str]] = None,
) -> LabeledImages:
    """An ImageNet-style tree, or a flat folder with ``labels`` (a label file), as a dataset."""
    if labels is not None:
        samples, names = label_file_samples(root, labels, classes)
    elif has_class_folders(root):
        samples, names = class_folder_samples(root, classes)
    else:
        if not list_images(root):
            raise AccelDetError(f"no images (JPEG/PNG/...) found in {root}")
        raise AccelDetError(
            f"{root} has no class folders: pass a label file "
            f"(--labels FILE) with one '<file> <label>' line per image"
        )
    return LabeledImages(samples, names, transform)
