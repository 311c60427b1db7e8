"""VGG-16 preprocessing, the one place it is defined: torchvision's ``VGG16_Weights.IMAGENET1K_V1``
transforms (shorter side resized to 256 with bilinear antialiasing, centre crop 224, RGB in [0, 1],
then ImageNet mean/std), and the light training augmentation used for fine-tuning.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from ..errors import AccelDetError
from ..models.vgg import CROP_SIZE, IMAGENET_MEAN, IMAGENET_STD, RESIZE_SIZE

TRAIN_AUGMENTATIONS = ("crop-flip", "resized-crop", "none")


def preprocessing_record(resize: int = RESIZE_SIZE, crop: int = CROP_SIZE) -> dict:
    """What :func:`eval_transform` does, for the JSON records next to outputs."""
    return {
        "resize_shorter_side": resize,
        "center_crop": crop,
        "interpolation": "bilinear, antialias",
        "color": "RGB in [0, 1]",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "same_as": "torchvision VGG16_Weights.IMAGENET1K_V1.transforms()",
    }


def crop_transform(
    resize: int = RESIZE_SIZE, crop: int = CROP_SIZE
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image → uint8 ``3×crop×crop`` tensor: resize the shorter side, centre crop (no
    normalisation)."""
    _check_sizes(resize, crop)
    return T.Compose(
        [
            T.Resize(resize, interpolation=InterpolationMode.BILINEAR, antialias=True),
            T.CenterCrop(crop),
            T.PILToTensor(),
        ]
    )


def normalize(
    images: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """uint8 ``(N×)3×H×W`` images → float, divided by 255, minus ``mean``, over ``std``
    (the same operations, in the same order, as torchvision's ``ToTensor`` + ``Normalize``)."""
    x = images.float().div(255)
    shape = (3, 1, 1)
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(shape)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(shape)
    return x.sub(mean_t).div(std_t)


def eval_transform(
    resize: int = RESIZE_SIZE, crop: int = CROP_SIZE
) -> Callable[[Image.Image], torch.Tensor]:
    """The 1-view test preprocessing of the paper's Tables 6–8 (resize 256, centre crop 224),
    normalised."""
    return T.Compose([crop_transform(resize, crop), normalize])


def train_transform(
    augment: str = "crop-flip", resize: int = RESIZE_SIZE, crop: int = CROP_SIZE
) -> Callable:
    """Training preprocessing for fine-tuning (the paper does not say which; see docs/imagenet.md):

    * ``crop-flip``: shorter side to ``resize``, random ``crop``×``crop`` crop, horizontal flip
      (Caffe's usual ImageNet data layer, light enough for lr 1e-5 fine-tuning);
    * ``resized-crop``: torchvision's ``RandomResizedCrop`` + flip (its training recipe);
    * ``none``: the evaluation preprocessing.
    """
    _check_sizes(resize, crop)
    tail = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if augment == "crop-flip":
        head = [
            T.Resize(resize, interpolation=InterpolationMode.BILINEAR, antialias=True),
            T.RandomCrop(crop),
            T.RandomHorizontalFlip(),
        ]
    elif augment == "resized-crop":
        head = [
            T.RandomResizedCrop(crop, interpolation=InterpolationMode.BILINEAR, antialias=True),
            T.RandomHorizontalFlip(),
        ]
    elif augment == "none":
        head = [
            T.Resize(resize, interpolation=InterpolationMode.BILINEAR, antialias=True),
            T.CenterCrop(crop),
        ]
    else:
        raise ValueError(
            f"unknown augmentation {augment!r}; expected one of {', '.join(TRAIN_AUGMENTATIONS)}"
        )
    return T.Compose(head + tail)


def _check_sizes(resize: int, crop: int) -> None:
    if not (isinstance(resize, int) and isinstance(crop, int) and resize >= 1 and crop >= 1):
        raise AccelDetError(
            f"resize and crop must be positive integers, got {resize!r} and {crop!r}"
        )
    if crop > resize:
        raise AccelDetError(
            f"the crop ({crop}) cannot be larger than the resized shorter side ({resize})"
        )
