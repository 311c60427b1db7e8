"""Settings of the demo (``tools/demo.py``); the model and training recipe live in its configs."""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence

from ...data.synthetic.voc import DEFAULT_CLASSES
from ...errors import AccelDetError


@dataclasses.dataclass
class DemoOptions:
    """Settings of the demo; the model and training recipe live in the two config files.
    ``model`` picks the demo (:data:`MODELS`; :meth:`for_model` takes its settings)."""

    model: str = "vgg16"
    output: str = "output/demo"
    config: str = "demo/vgg16_synthetic.yaml"
    accel_config: str = "demo/accel_vgg16_synthetic.yaml"
    speedups: Sequence[float] = (2.0, 3.0, 4.0)  # conv layers only (the paper's Table 9)
    detector_speedups: Sequence[float] = (2.0, 3.0, 4.0)  # the whole detector, conv + fc6/fc7
    # fc6/fc7 ranks as fractions of MODEL.ROI_BOX_HEAD.FC_DIM for the truncated-SVD rows: Fast
    # R-CNN's 1024 and 256 of 4096 (empty: no such rows)
    fc_rank_fractions: Sequence[float] = (0.25, 0.0625)
    method: str = "asym3d"
    data_root: Optional[str] = None  # default $DETECTRON2_DATASETS/synthetic_voc
    num_trainval: int = 800
    # test images: at 200, the paired ΔAP50 intervals of the accelerated rows against the
    # baseline were ±1.4 to ±2.8 points (mean ±2.2); the width goes as 1/sqrt(images), so 1000
    # gives about ±1 (±0.6 to ±1.3) and keeps make demo under 20 minutes on 2 cores

    num_test: int = 1000
    classes: Sequence[str] = (
        DEFAULT_CLASSES  # synthetic shapes; MODEL.ROI_HEADS.NUM_CLASSES follows
    )
    max_objects: int = 3  # per image
    min_object: float = 0.3  # object size as a fraction of the image height
    max_object: float = 0.65
    proposal_min_size: int = 8  # pixels; the images are small
    pretrain_iterations: int = 1000  # crop-classifier iterations (batches of 32 crops, 64×64)
    pretrain_lr: float = 0.05
    compress_images: int = 128  # training images the solver samples responses from
    samples_per_image: int = 20
    fc_samples_per_image: int = 64  # RoIs per image whose fc6/fc7 responses are sampled
    round_ranks_to: int = 16
    threads: int = 1  # torch threads for training and evaluation
    latency_threads: int = 1  # the paper's CPU timings are single-thread
    latency_warmup: int = 5
    latency_repeats: int = 30
    full_width_repeats: int = 5  # also time the plans' structures on a full-width VGG-16 (0: skip)
    workers: int = 2  # processes for data generation and selective search
    seed: int = 0  # data, pre-training, compression; and training unless set below
    train_seed: Optional[int] = None  # the baseline's training (default: seed)
    finetune_seed: Optional[int] = None  # the accelerated models' fine-tuning (default: seed)
    opts: Sequence[str] = ()  # config overrides for every stage
    finetune_opts: Sequence[str] = ()  # config overrides for the fine-tuning stages
    force: bool = False
    progress: bool = True

    @classmethod
    def for_model(cls, model: str, **settings) -> "DemoOptions":
        """The options of demo ``model`` (:data:`MODELS`), ``settings`` taking precedence."""
        if model not in MODELS:
            raise AccelDetError(
                f"unknown demo model {model!r}; expected one of {', '.join(MODELS)}"
            )
        return cls(model=model, **{**MODELS[model], **settings})

    def seeds(self) -> dict:
        """The seeds of the baseline's training and of fine-tuning (``seed`` where not set)."""
        return {
            "train": self.seed if self.train_seed is None else self.train_seed,
            "finetune": self.seed if self.finetune_seed is None else self.finetune_seed,
        }

    def record(self) -> dict:
        return {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()
        }


@dataclasses.dataclass(frozen=True)
class DemoStage:
    """One accelerated model of the demo: ``target`` "conv" (the paper's), "network" (the whole
    detector, conv + fc) or "fc" (fc6/fc7 alone at ``fc_ranks``, convs kept)."""

    name: str
    speedup: float
    method: str
    fc_method: str
    target: str
    fc_ranks: Optional[Mapping[str, int]] = None


# The demos (tools/demo.py --model NAME) and the settings each changes from DemoOptions' defaults.
MODELS = {
    "vgg16": {},  # Fast R-CNN with a narrow VGG-16 (make demo)
    # Faster R-CNN with a ResNet-18-FPN trained from scratch, compressed as a whole detector
    # (backbone, FPN and heads under one budget) at 2x and 3x (:mod:`.fpn`)
    "r18-fpn": dict(
        output="output/demo_r18fpn",
        config="demo/faster_rcnn_R_18_FPN_synthetic.yaml",
        accel_config="demo/faster_rcnn_accel_R_18_FPN_synthetic.yaml",
        speedups=(),
        detector_speedups=(2.0, 3.0),
        fc_rank_fractions=(),
        method="asym",
        pretrain_iterations=600,
        full_width_repeats=0,
    ),
}
