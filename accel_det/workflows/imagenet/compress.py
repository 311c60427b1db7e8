"""Compress an ImageNet classifier (VGG-16, or a torchvision ResNet-18/34/50/101) from image files:
the library side of ``tools/compress_backbone.py``.

Reads the weights, draws the images with the seed, runs :func:`accel_det.solver.compress` with a
per-layer checkpoint (on VGG-16's conv layers, or on every conv of a ResNet with its batch norms
folded), and writes ``OUT.pth`` (the whole accelerated classifier), ``OUT.json`` (the plan
extended with how it was obtained) and ``OUT.png`` (per-layer ranks and errors).

Under torch.distributed (``torchrun``, or :func:`accel_det.utils.launch.launch`)
every process reads only its interleaved shard of the drawn images, the solver pools the sampled
responses of all processes, and all end with the model a single process makes (within float
tolerance); process 0 alone writes the outputs and the checkpoint.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import platform
import time
from dataclasses import dataclass, field, fields
from typing import List, Optional, Sequence, Tuple

import torch

from ... import __version__
from ...data.sample import sample_images
from ...data.transforms import crop_transform, normalize, preprocessing_record
from ...errors import AccelDetError
from ...models.vgg import CROP_SIZE, RESIZE_SIZE
from ...solver import SolverOptions, compress, get_method
from ...solver.heldout import split_rows
from ...solver.joint import check_network_reachable, make_network_plan
from ...solver.options import PLAN_OPTIONS, skipped_layers
from ...solver.planning import check_plan_pays, check_reachable
from ...solver.targets import Targets
from ...utils.dist import agreed_errors, barrier, init_distributed
from ...utils.io import (
    atomic_save_pair,
    atomic_write_json,
    check_writable_folder,
    load_json,
    refuse_existing,
)
from ..plots import plan_table, plot_plan
from .fc import classifier_specs, compress_classifier, fc6_responses, fc_eigenvalues
from .source import Source, checked_targets, load_source

logger = logging.getLogger(__name__)


@dataclass
class CompressOptions:
    """Everything ``tools/compress_backbone.py`` accepts: the solver's options (defaults: the
    paper's ImageNet protocol) and where the weights, images and outputs are; ``arch``: vgg16 or a
    torchvision ResNet (None: read off the weights)."""

    weights: str
    images: str
    output: str
    arch: Optional[str] = None
    solver: SolverOptions = field(default_factory=lambda: SolverOptions(speedup=4.0))
    num_images: int = 3000
    image_list: Optional[str] = None  # draw only from the images it lists (relative to images)
    resume: bool = False
    overwrite: bool = False
    batch_size: int = 32
    workers: int = 4
    device: str = "auto"
    resize: int = RESIZE_SIZE
    crop: int = CROP_SIZE
    progress: bool = True
    plot: bool = True
    # also fc6/fc7 of the classifier, one budget with the convs (beyond the paper)
    fc: bool = False
    # torch.use_deterministic_algorithms + CUBLAS_WORKSPACE_CONFIG (for GPUs)
    deterministic: bool = False
    # test hook: behave like a Ctrl-C after this layer is checkpointed
    stop_after: Optional[str] = None

    def record(self) -> dict:
        """The options as JSON: the tool's and the solver's in one object."""
        tool = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("solver", "progress", "stop_after")
        }
        return {**tool, **self.solver.record()}


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
            raise AccelDetError(
                f"--output {output} names a folder; give a file prefix such as "
                f"{os.path.join(output, 'vgg16_4x')}"
            )
        return cls(prefix + ".pth", prefix + ".json", prefix + ".png", prefix + ".checkpoint.pth")

    @property
    def checkpoint_info(self) -> str:
        """What the checkpoint was made from (weights, images, preprocessing), checked on
        --resume."""
        return self.checkpoint[: -len(".pth")] + ".json"

    def finals(self, plot: bool = True) -> List[str]:
        return [self.weights, self.record] + ([self.plot] if plot else [])

    def partials(self) -> List[str]:
        return [self.checkpoint, self.checkpoint_info]


def check_outputs(paths: OutputPaths, options: CompressOptions) -> bool:
    """Refuse before any work: an unwritable folder, existing outputs, a checkpoint left
    unresumed. Returns whether the outputs may replace existing files when they are written."""
    check_writable_folder(os.path.dirname(os.path.abspath(paths.weights)), create=False)
    if os.path.exists(paths.checkpoint) and not options.resume and not options.overwrite:
        # the outputs of a run stopped while writing them are incomplete: --overwrite would
        # throw its solved layers away
        written = [path for path in paths.finals(options.plot) if os.path.exists(path)]
        raise AccelDetError(
            (f"output {written[0]} already exists, but " if written else "")
            + f"{paths.checkpoint} holds an interrupted run: pass --resume to "
            f"{'finish' if written else 'continue'} it or --overwrite to start over"
        )
    replace = options.overwrite or options.resume and os.path.exists(paths.checkpoint)
    refuse_existing(paths.finals(options.plot), replace)
    if options.resume and not os.path.exists(paths.checkpoint):
        logger.warning(
            "--resume: no checkpoint %s yet, starting from the first layer", paths.checkpoint
        )
    return replace


# What a resumed run must share with the checkpoint's run, besides the plan options:
# key -> what differs when it does.
RESUME_INPUTS = {
    "weights_sha256": "weights (sha256 of the file)",
    "images_sha256": "images (sha256 of the names, sizes and bytes of the files used)",
    "preprocessing": "preprocessing (resize, crop)",
}


def resume_info(options: CompressOptions, source: dict, image_record: dict) -> dict:
    """What the checkpoint is made from, checked on --resume before the first pass over the
    images: every option that shapes the plan (the solver checks them again after its first
    pass), the weights file's and the image files' contents, the preprocessing."""
    solver = options.solver.record()
    return {
        **{key: solver[key] for key in PLAN_OPTIONS},
        "num_images": options.num_images,
        "weights_sha256": source["sha256"] or options.weights,
        "images_sha256": image_record["contents_sha256"],
        "preprocessing": [options.resize, options.crop],
    }


def check_resume_info(paths: OutputPaths, info: dict, resume: bool, write: bool = True) -> None:
    """On --resume, refuse a checkpoint made from other weights, images, preprocessing or plan
    options; otherwise remove a stale checkpoint and record ``info``, before the solver writes its
    first checkpoint (so a run killed at any point leaves a checkpoint whose inputs are known).
    ``write``: this process writes (process 0 of a group)."""
    if resume and os.path.exists(paths.checkpoint):
        if not os.path.exists(paths.checkpoint_info):
            raise AccelDetError(
                f"checkpoint {paths.checkpoint} has no record of its inputs "
                f"({paths.checkpoint_info}); start over with --overwrite"
            )
        saved = load_json(paths.checkpoint_info, "checkpoint record")
        for key, value in info.items():
            if saved.get(key) == value:
                continue
            if key in RESUME_INPUTS:
                raise AccelDetError(
                    f"checkpoint {paths.checkpoint} was made from other {RESUME_INPUTS[key]} "
                    f"than this run ({_short(saved.get(key))}, this run: {_short(value)}); start "
                    f"over with --overwrite instead of --resume, or use the same inputs"
                )
            raise AccelDetError(
                f"checkpoint {paths.checkpoint} was made with {key}={saved.get(key)!r} (this run: "
                f"{value!r}); start over with --overwrite instead of --resume, or use the same "
                f"options"
            )
        return
    if not write:
        return
    for path in paths.partials():
        if os.path.exists(path):
            os.remove(path)  # --overwrite: a stale checkpoint must not be resumed later
    atomic_write_json(info, paths.checkpoint_info)


def _short(value) -> str:
    """A digest cut to 12 characters, anything else as it is."""
    return f"{value[:12]}..." if isinstance(value, str) and len(value) == 64 else repr(value)


def compress_model(
    options: CompressOptions, argv: Optional[Sequence[str]] = None
) -> Tuple[torch.nn.Module, dict]:
    """Run the whole compression; returns the accelerated classifier (on the CPU) and the JSON
    record written to ``OUT.json``.

    Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set) it joins the process group
    (NCCL on GPUs, gloo on the CPU; left initialised for the caller to destroy) and every process
    must call it with the same options."""
    started = time.perf_counter()
    if options.deterministic:
        use_deterministic_algorithms()
    with agreed_errors():  # every process fails alike, reported once, before the first collective
        group = init_distributed(options.device)
        device = group.device
        paths = OutputPaths.from_prefix(options.output)
        replace = check_outputs(paths, options)
        source = load_source(options.weights, options.arch)
        targets = checked_targets(source, options)
        solver = options.solver.replace(skip=skipped_layers(options.solver, list(targets.names)))
        options = dataclasses.replace(options, solver=solver, arch=source.arch)
        check_speedup_reachable(source, targets, options)
    model = source.model
    progress = options.progress and group.is_main
    if device.type == "cuda":  # the same responses on every run, so --resume ends bit-identical
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    seed = options.solver.seed
    sample = sample_images(
        options.images,
        options.num_images,
        seed,
        crop_transform(options.resize, options.crop),
        workers=options.workers,
        progress=progress,
        shard=(group.rank, group.world_size),
        image_list=options.image_list,
    )
    logger.info(
        "%d images drawn with seed %d from %d found in %s (%d unreadable skipped)%s",
        len(sample.files),
        seed,
        sample.found,
        options.images,
        len(sample.skipped),
        f", read in {group.world_size} interleaved shards" if group.distributed else "",
    )

    image_record = sample.record()
    info = resume_info(options, source.record, image_record)
    with agreed_errors():
        if group.is_main:
            check_writable_folder(os.path.dirname(os.path.abspath(paths.weights)))
        check_resume_info(paths, info, options.resume, write=group.is_main)
    barrier()  # a stale checkpoint is gone before any process looks for one

    def on_layer_done(name: str, entry: dict) -> None:
        if options.stop_after == name:
            raise KeyboardInterrupt(f"stopped after {name} (--stop-after)")

    batches = sample.batches(options.batch_size, normalize)
    planner, fc_target, fc_images = None, None, None
    if options.fc:  # fc6/fc7 join the budget: their responses and eigenvalues first
        model.to(device)
        fc_target, fc_images = fc6_responses(model, model.features, batches, device, progress)
        keep = ~split_rows(
            fc_images, options.solver.heldout_fraction, options.solver.seed, warn=False
        )
        eigenvalues = fc_eigenvalues(model, fc_target, keep)
        linears, fixed = classifier_specs(model)

        def planner(specs, conv_eigenvalues, spatial_spectra=None):
            every = {**conv_eigenvalues, **eigenvalues}
            return make_network_plan(
                specs, linears, every, options.solver, fixed_macs=fixed,
                spatial_spectra=spatial_spectra,
            )  # fmt: skip

    try:
        result = compress(
            source.part,
            batches,
            options.solver,
            device=device,
            progress=progress,
            input_hw=(options.crop, options.crop),
            checkpoint=paths.checkpoint,
            resume=options.resume,
            on_layer_done=on_layer_done,
            planner=planner,
        )
    except BaseException:
        if (
            group.is_main
            and not os.path.exists(paths.checkpoint)
            and os.path.exists(paths.checkpoint_info)
        ):
            os.remove(paths.checkpoint_info)  # nothing to resume: leave no trace
        raise
    if options.fc:
        regressed, _ = fc6_responses(model, result.model.to(device), batches, device, progress)
        method = options.solver.solver if not options.solver.solver.spatial else get_method("asym")
        compress_classifier(
            model, result.plan, fc_target, regressed, fc_images, method, options.solver
        )
    accelerated = source.accelerated(result.model)
    record = _record(
        options, argv, result.plan, source.record, image_record, paths, device, group.world_size,
        started,
    )  # fmt: skip
    with agreed_errors():  # the outputs are complete when any process returns
        if group.is_main:
            record = _write_outputs(accelerated, record, paths, options.plot, replace)
    return accelerated, record


def use_deterministic_algorithms() -> None:
    """Deterministic GPU kernels for the rest of this process: cuBLAS with a fixed workspace
    (``CUBLAS_WORKSPACE_CONFIG=:4096:8``, unless set; it must be set before cuBLAS starts) and
    ``torch.use_deterministic_algorithms`` (an op without a deterministic kernel warns). cuDNN is
    made deterministic by :func:`compress_model` on GPUs in any case."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


def _record(options, argv, plan, source, image_record, paths, device, world_size, started) -> dict:
    """``OUT.json``: the solver's plan extended with how it was obtained."""
    record = dict(plan)
    record.update(
        arch=source["arch"],
        options=options.record(),
        command=list(argv) if argv is not None else None,
        preprocessing=preprocessing_record(options.resize, options.crop),
        source_weights=source,
        images=image_record,
        outputs={
            "weights": os.path.abspath(paths.weights),
            "plot": os.path.abspath(paths.plot) if options.plot else None,
        },
        device=str(device),
        world_size=world_size,
        total_seconds=round(time.perf_counter() - started, 2),
        created=datetime.datetime.now().isoformat(timespec="seconds"),
        versions={
            "accel_det": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    )
    record["layers"] = record.pop(
        "layers"
    )  # the long per-layer part last, for people reading the file
    return record


def _write_outputs(
    accelerated, record: dict, paths: OutputPaths, plot: bool, replace: bool = True
) -> dict:
    """Write OUT.pth and OUT.json as a pair (the record last, with the weights' sha256; without
    ``replace``, refused if either exists by then), OUT.png, then drop the checkpoint; on a
    failure the checkpoint stays for --resume. Returns the record."""
    check_plan_pays(record, paths.record)
    state_dict = {k: v.detach().cpu().contiguous() for k, v in accelerated.state_dict().items()}
    try:
        record = atomic_save_pair(state_dict, paths.weights, record, paths.record, replace)
        if plot:
            plot_plan(record, paths.plot)
    except AccelDetError as error:
        if not os.path.exists(paths.checkpoint):
            raise
        raise AccelDetError(
            f"{error}; the solved layers stay in {paths.checkpoint}: make room and rerun with "
            f"--resume"
        ) from None
    for path in paths.partials():
        if os.path.exists(path):
            os.remove(path)
    print(plan_table(record), flush=True)
    logger.info(
        "wrote %s, %s%s (theoretical speedup %.2fx)",
        paths.weights,
        paths.record,
        f", {paths.plot}" if plot else "",
        record["theoretical_speedup"],
    )
    return record


def check_speedup_reachable(source: Source, targets: Targets, options: CompressOptions) -> None:
    """Refuse, from the layers' shapes, a --speedup that rank 1 everywhere cannot reach, before any
    image is read (with VGG-16's fc layers under one budget for --fc)."""
    if options.fc:
        linears, fixed = classifier_specs(source.model)
        check_network_reachable(targets.specs, linears, options.solver, fixed_macs=fixed)
    else:
        check_reachable(targets.specs, options.solver)


def compress_in_group(options: CompressOptions, argv: Optional[Sequence[str]] = None) -> int:
    """What each process of a (possibly one-process) group runs for ``tools/compress_backbone.py``:
    the compression with quiet logs and no progress bars on processes other than 0, then the
    process group destroyed. Returns 0 (errors are raised)."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from ...utils.dist import shutdown

    if int(os.environ.get("RANK", "0")) != 0:
        logging.getLogger().setLevel(
            logging.WARNING
        )  # process 0 tells the story; warnings from all
    try:
        with logging_redirect_tqdm():
            compress_model(options, argv=argv)
    finally:
        shutdown()
    return 0


def compress_process(
    options: CompressOptions,
    argv: Optional[Sequence[str]],
    verbose: bool = False,
    debug: bool = False,
) -> int:
    """The body of one process started by ``tools/compress_backbone.py --num-gpus N``
    (:func:`accel_det.utils.launch.launch`): logging, :func:`compress_in_group`, and
    errors as one line and an exit code, as the tool itself does."""
    import argparse

    from ...utils.cli import run_main, setup_logging

    setup_logging(verbose)
    if options.device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(
            max(1, (os.cpu_count() or 1) // int(os.environ.get("WORLD_SIZE", "1")))
        )
    return run_main(lambda _: compress_in_group(options, argv), argparse.Namespace(debug=debug))
