"""Compress a VGG-16 from image files: the library side of ``tools/compress_backbone.py``.

Reads the weights, draws the images with the seed, runs :func:`accel_det.solver.compress` with a
per-layer checkpoint, and writes ``OUT.pth`` (the whole accelerated VGG-16), ``OUT.json`` (the
plan extended with how it was obtained) and ``OUT.png`` (per-layer ranks and errors).
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from .. import __version__
from ..data.images import sample_images
from ..data.transforms import crop_transform, normalize, preprocessing_record
from ..errors import AccelDetError
from ..models.vgg import (
    CROP_SIZE,
    RESIZE_SIZE,
    TORCHVISION_WEIGHTS,
    factorized_key,
    infer_vgg16_config,
    load_checked,
    load_vgg16_state_dict,
    vgg16,
    weights_file,
    with_features,
)
from ..plots import plan_table, plot_plan
from ..solver import compress
from ..solver.channel import DEFAULT_SCHEDULE
from ..utils.io import atomic_torch_save, atomic_write_json, check_writable_folder, load_json, refuse_existing, sha256_file
from .distributed import pick_device

logger = logging.getLogger(__name__)


@dataclass
class CompressOptions:
    """Everything ``tools/compress_backbone.py`` accepts (defaults: the paper's §6 protocol)."""

    weights: str
    images: str
    output: str
    num_images: int = 3000
    samples_per_image: int = 10
    speedup: float = 4.0
    method: str = "asym3d"
    rank_selection: bool = True
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    batch_size: int = 32
    workers: int = 4
    device: str = "auto"
    resize: int = RESIZE_SIZE
    crop: int = CROP_SIZE
    schedule: Tuple[Tuple[float, int], ...] = DEFAULT_SCHEDULE
    rank_cost: str = "with_1x1"
    skip: Sequence[str] = ("conv1_1",)
    progress: bool = True
    plot: bool = True
    stop_after: Optional[str] = None  # test hook: behave like a Ctrl-C after this layer is checkpointed


@dataclass
class OutputPaths:
    weights: str
    record: str
    plot: str
    checkpoint: str

    @classmethod
    def from_prefix(cls, output: str) -> "OutputPaths":
        prefix = os.path.expanduser(output)
        for extension in (".pth", ".json"):
            if prefix.endswith(extension):
                prefix = prefix[: -len(extension)]
        if not os.path.basename(prefix):
            raise AccelDetError(f"--output {output} names a folder; give a file prefix such as {os.path.join(output, 'vgg16_4x')}")
        return cls(prefix + ".pth", prefix + ".json", prefix + ".png", prefix + ".checkpoint.pth")

    @property
    def checkpoint_info(self) -> str:
        """What the checkpoint was made from (weights, images, preprocessing), checked on --resume."""
        return self.checkpoint[: -len(".pth")] + ".json"

    def finals(self, plot: bool = True) -> List[str]:
        return [self.weights, self.record] + ([self.plot] if plot else [])

    def partials(self) -> List[str]:
        return [self.checkpoint, self.checkpoint_info]


def check_outputs(paths: OutputPaths, options: CompressOptions) -> None:
    """Refuse before any work: an unwritable folder, existing outputs, a checkpoint left unresumed."""
    check_writable_folder(os.path.dirname(os.path.abspath(paths.weights)), create=False)
    refuse_existing(paths.finals(options.plot), options.overwrite or options.resume and os.path.exists(paths.checkpoint))
    if os.path.exists(paths.checkpoint) and not options.resume:
        if not options.overwrite:
            raise AccelDetError(
                f"{paths.checkpoint} holds an interrupted run: pass --resume to continue it or --overwrite to start over"
            )
    if options.resume and not os.path.exists(paths.checkpoint):
        logger.warning("--resume: no checkpoint %s yet, starting from the first layer", paths.checkpoint)


def check_resume_info(paths: OutputPaths, info: dict, resume: bool) -> None:
    """On --resume, refuse a checkpoint made from other weights, images or preprocessing; otherwise
    remove a stale checkpoint (``on_layer_done`` records ``info`` next to the new one)."""
    if resume and os.path.exists(paths.checkpoint):
        saved = load_json(paths.checkpoint_info, "checkpoint record") if os.path.exists(paths.checkpoint_info) else {}
        for key, value in info.items():
            if saved.get(key) != value:
                raise AccelDetError(
                    f"checkpoint {paths.checkpoint} was made with another {key.replace('_', ' ')} "
                    f"({saved.get(key)!r}, this run: {value!r}); start over without --resume or use the same inputs"
                )
        return
    for path in paths.partials():
        if os.path.exists(path):
            os.remove(path)  # --overwrite: a stale checkpoint must not be resumed later


def compress_vgg16(options: CompressOptions, argv: Optional[Sequence[str]] = None) -> Tuple[torch.nn.Module, dict]:
    """Run the whole compression; returns the accelerated VGG-16 (on the CPU) and the JSON record
    written to ``OUT.json``."""
    started = time.perf_counter()
    paths = OutputPaths.from_prefix(options.output)
    check_outputs(paths, options)

    state = load_vgg16_state_dict(options.weights)
    key = factorized_key(state)
    if key is not None:
        raise AccelDetError(f"{options.weights} is already an accelerated VGG-16 ({key}); compress a plain VGG-16")
    config = infer_vgg16_config(state)
    model = load_checked(vgg16(**config, init_weights=False), state, f"weights {options.weights}")
    source_file = weights_file(options.weights)
    source = {
        "path": options.weights if options.weights == TORCHVISION_WEIGHTS else os.path.abspath(source_file),
        "sha256": sha256_file(source_file) if source_file else None,
        **config,
    }
    logger.info("weights %s: VGG-16, width %g, %d classes, sha256 %s", options.weights, config["width"],
                config["num_classes"], (source["sha256"] or "?")[:12])

    if options.stop_after is not None and options.stop_after not in _conv_layer_names(model):
        raise AccelDetError(f"--stop-after {options.stop_after}: no such layer")
    check_enough_samples(model, options)
    device = pick_device(options.device)
    if device.type == "cuda":  # the same responses on every run, so --resume ends bit-identical
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    sample = sample_images(options.images, options.num_images, options.seed, crop_transform(options.resize, options.crop),
                           workers=options.workers, progress=options.progress)
    logger.info("%d images drawn with seed %d from %d found in %s (%d unreadable skipped)", len(sample.files),
                options.seed, sample.found, options.images, len(sample.skipped))

    check_writable_folder(os.path.dirname(os.path.abspath(paths.weights)))
    info = {
        "weights_sha256": source["sha256"] or options.weights,
        "images_sha256": sample.record()["files_sha256"],
        "preprocessing": [options.resize, options.crop],
        "schedule": [list(step) for step in options.schedule],
        "rank_cost": options.rank_cost,
        "skip": list(options.skip),
    }
    check_resume_info(paths, info, options.resume)

    def on_layer_done(name: str, entry: dict) -> None:
        if not os.path.exists(paths.checkpoint_info):  # the solver has just written its first checkpoint
            atomic_write_json(info, paths.checkpoint_info)
        if options.stop_after == name:
            raise KeyboardInterrupt(f"stopped after {name} (--stop-after)")

    result = compress(
        model.features,
        sample.batches(options.batch_size, normalize),
        speedup=options.speedup,
        method=options.method,
        rank_selection=options.rank_selection,
        samples_per_image=options.samples_per_image,
        skip=tuple(options.skip),
        seed=options.seed,
        device=device,
        progress=options.progress,
        schedule=options.schedule,
        rank_cost=options.rank_cost,
        checkpoint=paths.checkpoint,
        resume=options.resume,
        on_layer_done=on_layer_done,
    )
    accelerated = with_features(model, result.model.cpu())
    state_dict = {k: v.detach().cpu().contiguous() for k, v in accelerated.state_dict().items()}

    record = dict(result.plan)
    record.update(
        options={k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(options).items()
                 if k not in ("progress", "stop_after")},
        command=list(argv) if argv is not None else None,
        preprocessing=preprocessing_record(options.resize, options.crop),
        source_weights=source,
        images=sample.record(),
        outputs={"weights": os.path.abspath(paths.weights), "plot": os.path.abspath(paths.plot) if options.plot else None},
        device=str(device),
        total_seconds=round(time.perf_counter() - started, 2),
        created=datetime.datetime.now().isoformat(timespec="seconds"),
        versions={"accel_det": __version__, "torch": torch.__version__, "python": platform.python_version()},
    )
    record["options"]["schedule"] = [list(step) for step in options.schedule]
    record["layers"] = record.pop("layers")  # the long per-layer part last, for people reading the file
    atomic_torch_save(state_dict, paths.weights)
    atomic_write_json(record, paths.record)
    if options.plot:
        plot_plan(record, paths.plot)
    for path in paths.partials():
        if os.path.exists(path):
            os.remove(path)
    print(plan_table(record), flush=True)
    logger.info("wrote %s, %s%s (theoretical speedup %.2fx)", paths.weights, paths.record,
                f", {paths.plot}" if options.plot else "", record["theoretical_speedup"])
    return accelerated, record


def check_enough_samples(model, options: CompressOptions) -> None:
    """Refuse fewer sampled responses than a compressed layer has filters: its response covariance
    would be singular (the reduced-rank regression then fails or is meaningless)."""
    from ..solver import conv_specs

    for spec in conv_specs(model.features, (options.crop, options.crop)):
        if spec.name in options.skip:
            continue
        samples = options.num_images * min(options.samples_per_image, spec.out_hw[0] * spec.out_hw[1])
        if samples < spec.out_channels:
            raise AccelDetError(
                f"{options.num_images} images x {options.samples_per_image} samples give {samples} responses of "
                f"{spec.name}, fewer than its {spec.out_channels} filters: use more --num-images or --samples-per-image"
            )


def _conv_layer_names(model) -> List[str]:
    from ..solver import conv_names

    return list(conv_names(model.features))
