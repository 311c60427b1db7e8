"""Generated data, for tests, demos and benchmarks (no ImageNet or VOC here): image folders of a
few classes, the 10-class shapes task of the solver benchmark, and a VOC-format detection set."""

from .folders import class_name, make_image_folder, synthetic_image, write_class_list
from .shapes import CLASS_NAMES, MEAN, NUM_CLASSES, STD, make_task
from .voc import DEFAULT_CLASSES, SHAPES, STAMP_FILE, make_synthetic_voc

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_CLASSES",
    "MEAN",
    "NUM_CLASSES",
    "SHAPES",
    "STAMP_FILE",
    "STD",
    "class_name",
    "make_image_folder",
    "make_synthetic_voc",
    "make_task",
    "synthetic_image",
    "write_class_list",
]
