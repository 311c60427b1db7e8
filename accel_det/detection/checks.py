"""Checks of a VOC-format data set before Detectron2 trains or evaluates on it, so that a bad file
is one line naming it instead of a traceback in a DataLoader worker or, after training, in
``PascalVOCDetectionEvaluator``:

* every image decodes as Detectron2's dataset mapper reads it (``read_image``) and has the size
  its annotation says (``check_image_size``); the files that passed are cached (by path, size and
  modification time) in ``$ACCEL_DET_CACHE_DIR`` (default ``~/.cache/accel_det``), so a second
  run decodes only new or changed files;
* every line of an evaluated split names an annotation with what the evaluator's ``parse_rec``
  reads: per object ``<name>``, ``<pose>``, integer ``<truncated>`` and ``<difficult>``, and a
  ``<bndbox>`` of integer ``xmin``, ``ymin``, ``xmax``, ``ymax``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image

from ..errors import AccelDetError, first_line
from ..utils.io import atomic_write_json

logger = logging.getLogger(__name__)

OBJECT_FIELDS = ("name", "pose", "truncated", "difficult", "bndbox")
INTEGER_FIELDS = (
    "truncated",
    "difficult",
    "bndbox/xmin",
    "bndbox/ymin",
    "bndbox/xmax",
    "bndbox/ymax",
)


def check_dataset_files(name: str, evaluated: bool) -> None:
    """For a VOC-format data set (``evaluator_type`` ``pascal_voc``): decode its images (once, see
    the module docstring) and, when it is ``evaluated``, check its annotations for the
    evaluator. Other data sets are left to Detectron2."""
    meta = MetadataCatalog.get(name)
    if meta.get("evaluator_type") != "pascal_voc" or not meta.get("dirname"):
        return
    if evaluated:
        check_evaluator_annotations(meta.dirname, meta.split, name)
    check_images(DatasetCatalog.get(name), name)


def check_evaluator_annotations(dirname: str, split: str, name: str = "") -> None:
    """Raise :class:`AccelDetError` naming the file and the field unless every line of
    ``ImageSets/Main/<split>.txt`` names an annotation that ``PascalVOCDetectionEvaluator`` can
    read (it takes each whole line as an image id)."""
    split_file = os.path.join(dirname, "ImageSets", "Main", f"{split}.txt")
    with open(split_file, encoding="utf-8") as f:
        lines = f.readlines()
    reads = "which PascalVOCDetectionEvaluator reads"
    for number, line in enumerate(lines, 1):
        image_id = line.strip()
        anno_file = os.path.join(dirname, "Annotations", f"{image_id}.xml")
        if not image_id or not os.path.isfile(anno_file):
            raise AccelDetError(
                f"line {number} of {split_file} ({image_id!r}) names no annotation "
                f"{anno_file}: PascalVOCDetectionEvaluator reads each whole line as an image id"
            )
        try:
            objects = ET.parse(anno_file).findall("object")
        except ET.ParseError as error:
            raise AccelDetError(f"cannot read VOC annotation {anno_file}: {error}") from None
        for index, obj in enumerate(objects, 1):
            for field in OBJECT_FIELDS:
                if obj.find(field) is None:
                    raise AccelDetError(
                        f"{anno_file}: object {index} has no <{field}>, {reads} for every object "
                        f"of data set {name or split!r} (VOC XML has {', '.join(OBJECT_FIELDS)})"
                    )
            for field in INTEGER_FIELDS:
                element = obj.find(field)
                text = element.text if element is not None else None
                try:
                    int(text)
                except (TypeError, ValueError):
                    raise AccelDetError(
                        f"{anno_file}: object {index} has <{field}> {text!r}, not the integer "
                        f"{reads}"
                    ) from None


def check_images(records: List[dict], name: str = "", workers: Optional[int] = None) -> None:
    """Decode the image of every record (Detectron2's dicts: ``file_name``, ``height``,
    ``width``) as Detectron2 does; raise :class:`AccelDetError` naming the first that fails. The
    files that passed are cached; only new or changed ones are decoded."""
    cache_file = _cache_file(records)
    cached = _read_cache(cache_file)
    checked: Dict[str, list] = {}
    todo = []
    for record in records:
        key = _key(record)
        path = os.path.abspath(record["file_name"])
        if key is None or cached.get(path) != key:
            todo.append(record)
        else:
            checked[path] = key
    if not todo:
        return
    logger.info("decoding %d images of data set %s once, to check them", len(todo), name)
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # decoding releases the GIL
        failures = list(pool.map(_decode_error, todo))
    checked.update(
        (os.path.abspath(r["file_name"]), _key(r)) for r, f in zip(todo, failures) if f is None
    )
    _write_cache(cache_file, checked)
    bad = [(r["file_name"], f) for r, f in zip(todo, failures) if f is not None]
    if bad:
        what = f" of data set {name!r}" if name else ""
        more = f" ({len(bad)} images fail, this is the first)" if len(bad) > 1 else ""
        raise AccelDetError(
            f"image {bad[0][0]}{what} cannot be used: {bad[0][1]}{more}; replace the file or "
            f"leave its id out of the split"
        )


def _decode_error(record: dict) -> Optional[str]:
    """Why Detectron2's dataset mapper would fail on this record's image, or ``None``: it reads
    it with ``read_image`` and checks its size with ``check_image_size``."""
    try:
        image = read_image(record["file_name"], format="RGB")
    except Exception as error:  # PIL raises OSError, ValueError, SyntaxError, ...
        return f"it does not decode ({first_line(error)})"
    height, width = image.shape[:2]
    expected = (record.get("width", width), record.get("height", height))
    if (width, height) != expected:
        return f"it is {width}x{height} pixels, its annotation says {expected[0]}x{expected[1]}"
    return None


def _key(record: dict) -> Optional[list]:
    """What a cached check depends on: the file's size and modification time, and the size the
    annotation gives."""
    try:
        stat = os.stat(record["file_name"])
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns, record.get("height"), record.get("width")]


def cache_dir() -> str:
    return os.path.expanduser(os.getenv("ACCEL_DET_CACHE_DIR", "~/.cache/accel_det"))


def _cache_file(records: List[dict]) -> str:
    folders = sorted({os.path.dirname(os.path.abspath(r["file_name"])) for r in records})
    key = hashlib.sha1("\n".join(folders).encode()).hexdigest()[:16]
    return os.path.join(cache_dir(), "checked_images", f"{key}.json")


def _read_cache(path: str) -> Dict[str, list]:
    try:
        with open(path, encoding="utf-8") as f:
            files = json.load(f)["files"]
        return files if isinstance(files, dict) else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _write_cache(path: str, checked: Dict[str, list]) -> None:
    """Merge ``checked`` into the cache (another split of the same folder shares it); a cache that
    cannot be written only means decoding again next time."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write_json({"files": {**_read_cache(path), **checked}}, path)
    except (OSError, AccelDetError) as error:
        logger.debug("cannot write the image check cache %s: %s", path, error)
