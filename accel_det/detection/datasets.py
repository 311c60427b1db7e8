"""PASCAL VOC data sets for Fast R-CNN, and the synthetic VOC-format set, registered in Detectron2.

Names registered on ``import accel_det.detection`` (root: ``$DETECTRON2_DATASETS``, default
``./datasets``, read when the names are registered):

* ``accel_voc_2007_trainval``, ``accel_voc_2007_test``, ``accel_voc_2012_trainval``: VOC as
  Fast R-CNN uses it: boxes marked *difficult* are left out of training sets (Detectron2's own
  ``voc_2007_trainval`` keeps them); test sets keep them, and ``PascalVOCDetectionEvaluator``
  ignores them as the VOC devkit does.
* ``synthetic_voc_{trainval,train,val,test}``: ``$DETECTRON2_DATASETS/synthetic_voc`` made by
  ``datasets/make_synthetic_voc.py`` (a VOC2007-format folder; year 2007, so AP50 is the 11-point
  VOC07 metric).

Every loader checks the folder layout first and prints the layout it expects.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Sequence, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.pascal_voc import CLASS_NAMES as VOC_CLASSES
from detectron2.structures import BoxMode

from ..data.synthetic.voc import DEFAULT_CLASSES, STAMP_FILE
from ..errors import AccelDetError

# name -> (dirname, split); the data sets whose layout check_dataset_layout knows
VOC_FORMAT_DATASETS: Dict[str, Tuple[str, str]] = {}

LAYOUT = (
    "Expected layout: $DETECTRON2_DATASETS/{folder}/ with Annotations/<id>.xml, "
    "JPEGImages/<id>.jpg and ImageSets/Main/{split}.txt (one image id per line); "
    "$DETECTRON2_DATASETS is {root} (default ./datasets; see datasets/README.md). {hint}"
)


def datasets_root() -> str:
    """``$DETECTRON2_DATASETS`` (default ``datasets``), as Detectron2's builtin data sets read
    it."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def check_voc_layout(dirname: str, split: str, name: str = "") -> None:
    """Raise :class:`AccelDetError` with the expected layout unless ``dirname`` looks like a VOC
    folder."""
    missing = [
        part
        for part in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main", f"{split}.txt"))
        if not os.path.exists(os.path.join(dirname, part))
    ]
    if not missing:
        return
    folder = os.path.basename(os.path.normpath(dirname))
    if folder.startswith("synthetic"):
        hint = f"Make it with: python datasets/make_synthetic_voc.py {dirname}"
    else:
        hint = (
            "Get VOC with datasets/prepare_voc.sh, or set "
            "DETECTRON2_DATASETS to the folder that holds it."
        )
    what = f"data set {name!r}" if name else "the data set"
    raise AccelDetError(
        f"{what} expects a VOC-format folder at {os.path.abspath(dirname)}, but "
        f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing. "
        + LAYOUT.format(
            root=os.path.abspath(os.path.dirname(os.path.normpath(dirname))),
            folder=folder,
            split=split,
            hint=hint,
        )
    )


def read_split(dirname: str, split: str) -> List[str]:
    """Image ids listed in ``ImageSets/Main/<split>.txt``."""
    check_voc_layout(dirname, split)
    with open(os.path.join(dirname, "ImageSets", "Main", f"{split}.txt"), encoding="utf-8") as f:
        return [line.split()[0] for line in f if line.strip()]


def load_voc_instances(
    dirname: str,
    split: str,
    class_names: Sequence[str],
    keep_difficult: bool = False,
    name: str = "",
) -> List[dict]:
    """VOC annotations in Detectron2's format, like ``detectron2.data.datasets.load_voc_instances``
    (same boxes: 1-based inclusive pixels → ``xmin - 1``), but boxes marked difficult are left
    out unless ``keep_difficult``, and a missing file or an unknown class is one clear error."""
    check_voc_layout(dirname, split, name)
    class_names = list(class_names)
    dicts = []
    for image_id in read_split(dirname, split):
        anno_file = os.path.join(dirname, "Annotations", f"{image_id}.xml")
        jpeg_file = os.path.join(dirname, "JPEGImages", f"{image_id}.jpg")
        if not os.path.isfile(anno_file):
            raise AccelDetError(f"{anno_file} is missing (listed in ImageSets/Main/{split}.txt)")
        if not os.path.isfile(jpeg_file):
            raise AccelDetError(f"{jpeg_file} is missing (listed in ImageSets/Main/{split}.txt)")
        try:
            tree = ET.parse(anno_file)
            record = {
                "file_name": jpeg_file,
                "image_id": image_id,
                "height": int(tree.findall("./size/height")[0].text),
                "width": int(tree.findall("./size/width")[0].text),
            }
        except (ET.ParseError, IndexError, ValueError, TypeError) as error:
            raise AccelDetError(f"cannot read VOC annotation {anno_file}: {error}") from None
        instances = []
        for number, obj in enumerate(tree.findall("object"), 1):
            try:
                cls = obj.find("name").text.strip()
                difficult = obj.find("difficult")
                difficult = difficult is not None and int(difficult.text) == 1
                box = obj.find("bndbox")
                bbox = [float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]
            except (AttributeError, TypeError, ValueError):
                raise AccelDetError(
                    f"{anno_file}: object {number} lacks a <name>, a <bndbox> with numbers "
                    f"xmin, ymin, xmax, ymax, or has a <difficult> that is not 0 or 1"
                ) from None
            if cls not in class_names:
                raise AccelDetError(
                    f"{anno_file}: class {cls!r} is not one of the data set's classes {class_names}"
                )
            if difficult and not keep_difficult:
                continue
            bbox[0] -= 1.0
            bbox[1] -= 1.0
            instances.append(
                {"category_id": class_names.index(cls), "bbox": bbox, "bbox_mode": BoxMode.XYXY_ABS}
            )
        record["annotations"] = instances
        dicts.append(record)
    return dicts


def register_voc_dataset(
    name: str,
    dirname: str,
    split: str,
    year: int = 2007,
    class_names: Sequence[str] = VOC_CLASSES,
    keep_difficult: bool = False,
    replace: bool = False,
) -> None:
    """Register a VOC-format folder like ``detectron2.data.datasets.register_pascal_voc``, with
    :func:`load_voc_instances` as loader and metadata for ``PascalVOCDetectionEvaluator``
    (``year`` 2007 selects the 11-point VOC07 AP). ``replace`` re-registers an existing name."""
    dirname = os.path.abspath(dirname)
    if name in DatasetCatalog.list():
        if not replace:
            return  # registered before (e.g. module imported twice): keep it
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(
        name,
        lambda: load_voc_instances(
            dirname, split, class_names, keep_difficult=keep_difficult, name=name
        ),
    )
    MetadataCatalog.get(name).set(
        thing_classes=list(class_names),
        dirname=dirname,
        year=year,
        split=split,
        evaluator_type="pascal_voc",
    )
    VOC_FORMAT_DATASETS[name] = (dirname, split)


def synthetic_classes(dirname: str) -> Tuple[str, ...]:
    """Class names of a synthetic set (from its stamp file), else the generator's defaults."""
    try:
        with open(os.path.join(dirname, STAMP_FILE), encoding="utf-8") as f:
            return tuple(json.load(f)["classes"])
    except (OSError, ValueError, KeyError, TypeError):
        return tuple(DEFAULT_CLASSES)


def register_synthetic_voc(
    dirname: Optional[str] = None, prefix: str = "synthetic_voc", replace: bool = True
) -> None:
    """Register ``<prefix>_{trainval,train,val,test}`` for a synthetic VOC folder
    (default ``$DETECTRON2_DATASETS/synthetic_voc``); its classes come from its stamp file."""
    dirname = dirname or os.path.join(datasets_root(), "synthetic_voc")
    classes = synthetic_classes(dirname)
    for split in ("trainval", "train", "val", "test"):
        register_voc_dataset(
            f"{prefix}_{split}",
            dirname,
            split,
            2007,
            classes,
            keep_difficult=split == "test",
            replace=replace,
        )


def register_all(root: Optional[str] = None) -> None:
    """Register the VOC and synthetic names above under ``root`` (default
    ``$DETECTRON2_DATASETS``)."""
    root = root or datasets_root()
    for name, folder, split, year, keep in (
        ("accel_voc_2007_trainval", "VOC2007", "trainval", 2007, False),
        ("accel_voc_2007_test", "VOC2007", "test", 2007, True),
        ("accel_voc_2012_trainval", "VOC2012", "trainval", 2012, False),
    ):
        register_voc_dataset(
            name, os.path.join(root, folder), split, year, VOC_CLASSES, keep_difficult=keep
        )
    register_synthetic_voc(os.path.join(root, "synthetic_voc"), replace=False)


def check_dataset_layout(name: str) -> None:
    """Check the folder of a VOC-format data set registered here (other names: only that they
    exist)."""
    if name in VOC_FORMAT_DATASETS:
        dirname, split = VOC_FORMAT_DATASETS[name]
        check_voc_layout(dirname, split, name)
    elif name not in DatasetCatalog.list():
        raise AccelDetError(
            f"data set {name!r} is not registered (accel-det registers: "
            f"{', '.join(sorted(VOC_FORMAT_DATASETS))})"
        )


def dataset_images(name: str) -> List[Tuple[str, str]]:
    """``(image id, file name)`` of every image of a data set (VOC-format: from its split file)."""
    if name in VOC_FORMAT_DATASETS:
        dirname, split = VOC_FORMAT_DATASETS[name]
        return [
            (i, os.path.join(dirname, "JPEGImages", f"{i}.jpg")) for i in read_split(dirname, split)
        ]
    return [(str(d["image_id"]), d["file_name"]) for d in DatasetCatalog.get(name)]


def dataset_image_ids(name: str) -> List[str]:
    """Image ids of a data set: from its split file when it is VOC-format, else from its dicts."""
    if name in VOC_FORMAT_DATASETS:
        return read_split(*VOC_FORMAT_DATASETS[name])
    return [str(d["image_id"]) for d in DatasetCatalog.get(name)]
