"""Image folders for compression, evaluation and fine-tuning: listing, seeded sampling, VGG
preprocessing, labelled sets (class folders or a flat folder + label file), generated test
folders."""

from .images import (
    IMAGE_EXTENSIONS,
    LabeledImages,
    collate_skipping,
    has_class_folders,
    labeled_images,
    list_images,
    read_class_list,
)
from .sample import ImageBatches, ImageSample, sample_images
from .synthetic import make_image_folder
from .transforms import (
    crop_transform,
    eval_transform,
    normalize,
    preprocessing_record,
    train_transform,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageBatches",
    "ImageSample",
    "LabeledImages",
    "collate_skipping",
    "crop_transform",
    "eval_transform",
    "has_class_folders",
    "labeled_images",
    "list_images",
    "make_image_folder",
    "normalize",
    "preprocessing_record",
    "read_class_list",
    "sample_images",
    "train_transform",
]
