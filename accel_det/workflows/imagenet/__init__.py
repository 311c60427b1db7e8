"""ImageNet-side tools as library code: compressing a VGG-16 from image files, top-1/top-5
evaluation, and fine-tuning (one process or DDP through ``torchrun``)."""

from .evaluate import evaluate, format_results
from .finetune import FinetuneConfig, finetune

__all__ = ["FinetuneConfig", "evaluate", "finetune", "format_results"]
