"""Solver quality on a network trained here: a generated 10-class image task, a small VGG-16 trained
on it for a few CPU minutes, and every method of the solver at several speedups, with held-out
output error, accuracy, compression time and peak memory (paper Fig. 5/6, Tables 6/7 in shape).

Also the speed figures of the solver (one 512-channel layer from 30,000 samples; compressing all of
VGG-16 against plain forward passes) and the MAC-based vs latency-based rank selection (beyond the
paper, :mod:`accel_det.solver.latency`). No ImageNet and no GPU is needed: numbers come from a
network that is small enough to train on 2 CPU cores, so they show the *order* of the methods and
the shape of the curves, not the paper's absolute ImageNet errors.

Peak memory is the increase of the process's resident set size (RSS) over its value at the start
of a run, polled every 2 ms by a thread with psutil (tracemalloc does not see PyTorch's C++
allocations); freed heap is handed back to the OS (``malloc_trim``) before each run so that the
baseline is low.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import gc
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import AccelDetError
from ..models.vgg import init_vgg_weights, vgg16_features
from ..solver import METHODS, compress
from ..solver.channel import nonlinear_reconstruction
from ..solver.network import apply_plan, conv_specs
from ..solver.latency import num_threads
from .speed import random_features, sampled_eigenvalues

logger = logging.getLogger(__name__)

NUM_CLASSES = 10
CLASS_NAMES = ("disk", "square", "triangle", "ring", "cross", "stripes", "checkerboard", "dots", "target", "speckle")
MEAN, STD = 0.5, 0.25


# --------------------------------------------------------------------------------------------
# The generated task
# --------------------------------------------------------------------------------------------


def make_task(num_images: int, *, size: int = 32, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """``num_images`` normalised RGB images (N×3×size×size) and labels of the 10 generated classes.

    Classes 0–4 are solid shapes (disk, square, triangle, ring, cross), 5–9 a disk or square region
    filled with a texture (stripes, checkerboard, dots, concentric rings, speckle); position, size,
    rotation, texture period and both colours are random, so only shape and texture tell the
    classes apart. The same ``seed`` gives the same images (balanced labels, shuffled).
    """
    if num_images < 1 or size < 8:
        raise AccelDetError("make_task needs at least one image of at least 8×8 pixels")
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_images) % NUM_CLASSES
    labels = labels[torch.randperm(num_images, generator=g)]
    images = torch.empty(num_images, 3, size, size)
    for start in range(0, num_images, 512):
        images[start:start + 512] = _render(labels[start:start + 512], size, g)
    return (images - MEAN) / STD, labels


def _render(labels: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    n = len(labels)

    def uniform(low, high, *shape):
        return low + (high - low) * torch.rand(n, *shape, generator=g)

    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    cx, cy = uniform(0.35, 0.65)[:, None, None] * size, uniform(0.35, 0.65)[:, None, None] * size
    radius = uniform(0.2, 0.34)[:, None, None] * size
    angle = uniform(0, 2 * math.pi)[:, None, None]
    u = (xx - cx) * angle.cos() + (yy - cy) * angle.sin()
    v = -(xx - cx) * angle.sin() + (yy - cy) * angle.cos()
    dist = (u.square() + v.square()).sqrt()
    period = uniform(3.0, 6.0)[:, None, None] * size / 32
    background = uniform(0, 1, 3)
    foreground = (background + 0.5 + uniform(-0.15, 0.15, 3)) % 1.0

    disk = radius - dist
    square = 0.85 * radius - torch.maximum(u.abs(), v.abs())
    triangle = torch.stack([
        0.5 * radius - (u * math.cos(a) + v * math.sin(a)) for a in (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3)
    ]).amin(0)
    ring = torch.minimum(radius - dist, dist - 0.55 * radius)
    arm = 0.3 * radius
    cross = torch.maximum(torch.minimum(radius - u.abs(), arm - v.abs()), torch.minimum(radius - v.abs(), arm - u.abs()))
    region = torch.where(torch.rand(n, 1, 1, generator=g) < 0.5, disk, square)
    shapes = {0: disk, 1: square, 2: triangle, 3: ring, 4: cross}

    wave = 2 * math.pi / period
    speckle = (torch.rand(n, (size + 1) // 2, (size + 1) // 2, generator=g) > 0.5).float()
    speckle = speckle.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, :size, :size]
    textures = {
        5: torch.sigmoid(4 * torch.sin(wave * u)),
        6: torch.sigmoid(4 * torch.sin(wave * u) * torch.sin(wave * v)),
        7: torch.sigmoid(4 * (torch.cos(wave * u) + torch.cos(wave * v) - 1)),
        8: torch.sigmoid(4 * torch.sin(wave * dist)),
        9: speckle,
    }
    mask = torch.zeros(n, size, size)
    fill = torch.ones(n, size, size)
    for label in range(NUM_CLASSES):
        chosen = labels == label
        if label in shapes:
            mask[chosen] = (shapes[label][chosen] + 0.5).clamp(0, 1)
        else:
            mask[chosen] = (region[chosen] + 0.5).clamp(0, 1)
            fill[chosen] = textures[label][chosen]
    amount = (mask * fill)[:, None]
    image = background[:, :, None, None] * (1 - amount) + foreground[:, :, None, None] * amount
    gradient = uniform(-0.15, 0.15, 2)
    image = image + (gradient[:, 0, None, None] * (xx / size - 0.5) + gradient[:, 1, None, None] * (yy / size - 0.5))[:, None]
    image = image + 0.06 * torch.randn(image.shape, generator=g)
    return image.clamp(0, 1)


# --------------------------------------------------------------------------------------------
# The small network: VGG-16 layout at a fraction of the width, trained with batch norm, folded
# --------------------------------------------------------------------------------------------


class Classifier(nn.Module):
    """``features`` (a Conv2d / ReLU / MaxPool2d chain) then a global average pool and a 2-layer head."""

    def __init__(self, features: nn.Sequential, channels: int, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.features = features
        self.head = make_head(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def make_head(channels: int, num_classes: int = NUM_CLASSES) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, channels), nn.ReLU(inplace=True),
                         nn.Linear(channels, num_classes))


def _with_batchnorm(features: nn.Sequential) -> nn.Sequential:
    layers = []
    for module in features:
        layers.append(module)
        if isinstance(module, nn.Conv2d):
            layers.append(nn.BatchNorm2d(module.out_channels))
    return nn.Sequential(*layers)


def fold_batchnorm(features: nn.Sequential) -> nn.Sequential:
    """The same function without BatchNorm2d (eval statistics folded into the preceding convs),
    i.e. the Conv2d / ReLU / MaxPool2d chain the solver takes."""
    layers: List[nn.Module] = []
    for module in features:
        if isinstance(module, nn.BatchNorm2d):
            conv = layers[-1]
            scale = module.weight.detach() / (module.running_var + module.eps).sqrt()
            folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
            with torch.no_grad():
                folded.weight.copy_(conv.weight * scale[:, None, None, None])
                bias = conv.bias if conv.bias is not None else torch.zeros_like(module.running_mean)
                folded.bias.copy_((bias - module.running_mean) * scale + module.bias)
            layers[-1] = folded
        else:
            layers.append(copy.deepcopy(module))
    return nn.Sequential(*layers)


@dataclass
class TrainedNet:
    """The trained network: BN-free ``features`` for the solver and the ``head`` that reads them."""

    features: nn.Sequential
    head: nn.Sequential
    width: float
    train_seconds: float
    train_accuracy: float
    history: List[dict]

    def classify(self, images: torch.Tensor, features: Optional[nn.Module] = None, batch: int = 256) -> torch.Tensor:
        return logits(features or self.features, self.head, images, batch).argmax(1)


def train_small_vgg(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    width: float = 0.25,
    steps: int = 1500,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    log_every: int = 250,
) -> TrainedNet:
    """VGG-16's 13 convs at ``width`` (with batch norm while training, folded away afterwards) and a
    small head, trained with Adam (cosine learning rate, random flips) for ``steps`` steps."""
    torch.manual_seed(seed)
    features = vgg16_features(width)
    init_vgg_weights(features)
    channels = [m for m in features if isinstance(m, nn.Conv2d)][-1].out_channels
    model = Classifier(_with_batchnorm(features), channels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.15)
    g = torch.Generator().manual_seed(seed + 1)
    history = []
    start = time.perf_counter()
    model.train()
    correct = seen = 0
    for step in range(steps):
        index = torch.randint(len(images), (batch_size,), generator=g)
        x, y = images[index], labels[index]
        flips = torch.rand(2, generator=g)
        if flips[0] < 0.5:
            x = x.flip(3)
        if flips[1] < 0.5:
            x = x.flip(2)
        out = model(x)
        loss = F.cross_entropy(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        correct += int((out.argmax(1) == y).sum())
        seen += len(y)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            history.append({"step": step + 1, "loss": float(loss.detach()), "train_accuracy": correct / seen,
                            "seconds": round(time.perf_counter() - start, 1)})
            logger.info("train step %d/%d loss %.3f running accuracy %.3f (%.0fs)", step + 1, steps, float(loss.detach()),
                        correct / seen, time.perf_counter() - start)
            correct = seen = 0
    model.eval()
    folded = fold_batchnorm(model.features).eval()
    return TrainedNet(folded, model.head.eval(), width, time.perf_counter() - start,
                      history[-1]["train_accuracy"] if history else float("nan"), history)


def logits(features: nn.Module, head: nn.Module, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([head(features(images[i:i + batch])) for i in range(0, len(images), batch)])


def feature_maps(features: nn.Module, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([features(images[i:i + batch]) for i in range(0, len(images), batch)])


def held_out_metrics(net: TrainedNet, features: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                     reference: torch.Tensor) -> dict:
    """Relative output error ‖F̂(x) − F(x)‖/‖F(x)‖ of the features on held-out images (F = the
    original features, ``reference`` = F(images)) and top-1 accuracy with the original head."""
    out = feature_maps(features, images)
    error = float((out - reference).norm() / reference.norm())
    with torch.inference_mode():
        accuracy = float((net.head(out).argmax(1) == labels).float().mean())
    return {"error": error, "accuracy": accuracy}


# --------------------------------------------------------------------------------------------
# Measuring a run: wall time and peak RSS increase
# --------------------------------------------------------------------------------------------


def _trim_heap() -> None:
    gc.collect()
    with contextlib.suppress(Exception):  # glibc only
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextlib.contextmanager
def peak_memory(interval: float = 0.002) -> Iterator[dict]:
    """Yields a dict that, after the block, holds ``peak_mb``: the largest RSS increase over the
    RSS at entry, polled every ``interval`` seconds by a thread (psutil)."""
    import psutil

    _trim_heap()
    process = psutil.Process()
    baseline = process.memory_info().rss
    result = {"peak_mb": 0.0, "method": "RSS increase over the start of the run, polled every 2 ms (psutil)"}
    peak = [baseline]
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            stop.wait(interval)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], process.memory_info().rss)
        result["peak_mb"] = (peak[0] - baseline) / 2**20


# --------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------


@dataclass
class SweepConfig:
    """Sizes of a benchmark run (see :func:`quick_config` and :func:`full_config`)."""

    size: int = 32
    width: float = 0.25
    train_images: int = 8000
    test_images: int = 2000
    calibration_images: int = 500
    train_steps: int = 1500
    samples_per_image: int = 10
    speedups: Tuple[float, ...] = (2.0, 3.0, 4.0, 5.0)
    methods: Tuple[str, ...] = METHODS
    rank_selection: Tuple[bool, ...] = (True, False)
    schedule: Tuple[Tuple[float, int], ...] = ((0.01, 25), (1.0, 25))
    seed: int = 0


def quick_config() -> SweepConfig:
    """About two minutes on 2 cores: 2×/3×/4×, every method, both rank selections."""
    return SweepConfig(train_images=4000, test_images=1000, calibration_images=200, train_steps=500,
                       speedups=(2.0, 3.0, 4.0))


def full_config() -> SweepConfig:
    """About ten minutes on 2 cores: 2×–5×."""
    return SweepConfig(calibration_images=300, train_steps=1200)


def prepare(config: SweepConfig, cache_folder: Optional[str] = None) -> dict:
    """Generate the task and train the network: ``{"net", "test", "calibration", "trained"}``.

    With ``cache_folder`` the trained network is saved there (:func:`net_cache_name`) and reused by
    later runs of the same configuration (``trained`` says which happened). Test and calibration
    images are drawn from other seeds than the training images.
    """
    import os

    test = make_task(config.test_images, size=config.size, seed=config.seed + 1000)
    calibration = make_task(config.calibration_images, size=config.size, seed=config.seed + 2000)
    path = os.path.join(cache_folder, net_cache_name(config)) if cache_folder else None
    if path and os.path.exists(path):
        return {"net": load_net(path), "test": test, "calibration": calibration, "trained": False, "net_file": path}
    train = make_task(config.train_images, size=config.size, seed=config.seed)
    net = train_small_vgg(*train, width=config.width, steps=config.train_steps, seed=config.seed)
    if path:
        save_net(net, path)
    return {"net": net, "test": test, "calibration": calibration, "trained": True, "net_file": path}


def _batches(images: torch.Tensor, batch: int = 100) -> List[torch.Tensor]:
    return [images[i:i + batch] for i in range(0, len(images), batch)]


def run_one(net: TrainedNet, calibration: torch.Tensor, test: Tuple[torch.Tensor, torch.Tensor], reference: torch.Tensor,
            *, method: str, speedup: float, rank_selection: bool, samples_per_image: int,
            schedule, seed: int = 0, **options) -> dict:
    """Compress ``net.features`` once and measure it: error, accuracy, seconds, peak memory, ranks."""
    record = {"method": method, "rank_selection": bool(rank_selection) and method != "jaderberg",
              "speedup": float(speedup)}
    try:
        with peak_memory() as memory:
            start = time.perf_counter()
            result = compress(net.features, _batches(calibration), speedup=speedup, method=method,
                              rank_selection=rank_selection, samples_per_image=samples_per_image,
                              schedule=schedule, seed=seed, progress=False, **options)
            seconds = time.perf_counter() - start
    except AccelDetError as error:
        record["impossible"] = str(error)
        return record
    record.update(held_out_metrics(net, result.model, test[0], test[1], reference))
    plan = result.plan
    record.update(
        theoretical_speedup=plan["theoretical_speedup"],
        seconds=seconds,
        peak_mb=memory["peak_mb"],
        ranks={n: e["rank"] for n, e in plan["layers"].items() if e["rank"] is not None},
        spatial_ranks={n: e["spatial_rank"] for n, e in plan["layers"].items() if e["spatial_rank"] is not None},
        # Per layer, relative error of the rectified responses on the calibration samples, given the
        # approximated input (conv1_2's input is exact: a single-layer comparison as in Fig. 4).
        layer_errors={n: e["error"] for n, e in plan["layers"].items() if e["structure"] != "original"},
        pca_energy_product=pca_energy_product(plan),
    )
    if "latency" in plan:
        record["latency"] = plan["latency"]
    return record


def pca_energy_product(plan: dict) -> float:
    """Eq. (13): the product over the channel-decomposed layers of their kept PCA energy."""
    product = 1.0
    for entry in plan["layers"].values():
        if entry.get("rank") is not None:
            product *= entry["pca_energy"]
    return product


def run_sweep(config: SweepConfig, prepared: dict, on_record: Optional[Callable[[dict], None]] = None) -> dict:
    """Every method × rank selection × speedup of ``config`` on the prepared network."""
    net = prepared["net"]
    test_images, test_labels = prepared["test"]
    reference = feature_maps(net.features, test_images)
    baseline = held_out_metrics(net, net.features, test_images, test_labels, reference)
    records = []
    for method in config.methods:
        for selection in (config.rank_selection if method != "jaderberg" else (True,)):
            for speedup in config.speedups:
                record = run_one(net, prepared["calibration"][0], prepared["test"], reference, method=method,
                                 speedup=speedup, rank_selection=selection, samples_per_image=config.samples_per_image,
                                 schedule=config.schedule, seed=config.seed)
                records.append(record)
                if on_record is not None:
                    on_record(record)
    return {"baseline": baseline, "records": records}


def method_order(records: Sequence[dict], speedup: float, rank_selection: bool = True, key: str = "error") -> List[str]:
    """Methods at ``speedup`` sorted best first by ``key`` (error ascending, accuracy descending);
    jaderberg (no rank selection) is ranked with either setting."""
    rows = [r for r in records if r["speedup"] == speedup and "impossible" not in r
            and (r["rank_selection"] == rank_selection or r["method"] == "jaderberg")]
    reverse = key == "accuracy"
    return [r["method"] for r in sorted(rows, key=lambda r: r[key], reverse=reverse)]


# --------------------------------------------------------------------------------------------
# Speed figures
# --------------------------------------------------------------------------------------------


def time_channel_solve(samples: int = 30000, channels: int = 512, rank: int = 230, *, seed: int = 0,
                       schedule=((0.01, 25), (1.0, 25))) -> dict:
    """Seconds of :func:`nonlinear_reconstruction` (the asymmetric problem, eq. 12) on a
    ``samples × channels`` problem at ``rank``, with the paper's 50-iteration schedule.

    Responses are correlated (a random linear map of 1.2·d-dimensional inputs, shifted so that
    about 40 % are negative), the regressor a perturbed copy, as in a deep layer.
    """
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(samples, int(1.2 * channels), generator=g)
    mixing = torch.randn(inputs.shape[1], channels, generator=g) / math.sqrt(inputs.shape[1])
    target = inputs @ mixing - 0.25
    regressor = target + 0.1 * torch.randn(samples, channels, generator=g)
    with peak_memory() as memory:
        start = time.perf_counter()
        solution = nonlinear_reconstruction(target, regressor, rank, schedule=schedule)
        seconds = time.perf_counter() - start
    relu = target.clamp(min=0)
    error = float((relu - solution.apply(regressor).clamp(min=0)).norm() / relu.norm())
    return {"samples": samples, "channels": channels, "rank": rank, "iterations": sum(int(i) for _, i in schedule),
            "seconds": seconds, "peak_mb": memory["peak_mb"], "error": error, "threads": torch.get_num_threads()}


def time_compress_vs_forward(counts: Sequence[int] = (24,), size: int = 224, *, method: str = "asym3d",
                             speedup: float = 4.0, batch: int = 8, samples_per_image: int = 10, seed: int = 0) -> dict:
    """Wall time of ``compress`` on full-width VGG-16 features (He-initialised random weights) over
    generated images, divided by the time of one plain forward pass of the same features over the
    same images (the mean of a pass just before and one just after the compression), for each
    image count in ``counts``. With two counts or more, also the *marginal* ratio between the
    smallest and the largest (extra compression time per extra forward time), which leaves out
    the per-layer costs that do not grow with the images (SVDs, the 50 solver iterations)."""
    features = random_features(1.0, seed)

    def forward(batches) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for x in batches:
                features(x)
        return time.perf_counter() - start

    runs = []
    for count in counts:
        images = make_task(count, size=size, seed=seed + 3000)[0]
        batches = _batches(images, batch)
        forward(batches[:1])  # warm-up
        before = forward(batches)
        with peak_memory() as memory:
            start = time.perf_counter()
            result = compress(features, batches, speedup=speedup, method=method, samples_per_image=samples_per_image,
                              seed=seed, progress=False)
            seconds = time.perf_counter() - start
        after = forward(batches)
        plain = (before + after) / 2
        runs.append({"images": count, "forward_seconds": plain, "forward_passes": [before, after],
                     "compress_seconds": seconds, "ratio": seconds / plain, "peak_mb": memory["peak_mb"],
                     "theoretical_speedup": result.plan["theoretical_speedup"],
                     "layer_seconds": {n: e["seconds"] for n, e in result.plan["layers"].items()}})
    record = {"size": size, "method": method, "speedup": speedup, "batch": batch, "samples_per_image": samples_per_image,
              "runs": runs, "threads": torch.get_num_threads(), **{k: runs[-1][k] for k in ("images", "ratio")}}
    if len(runs) > 1:
        first, last = runs[0], runs[-1]
        record["marginal_ratio"] = ((last["compress_seconds"] - first["compress_seconds"])
                                    / (last["forward_seconds"] - first["forward_seconds"]))
    return record


# --------------------------------------------------------------------------------------------
# MAC-based vs latency-based rank selection
# --------------------------------------------------------------------------------------------


def plan_only(features: nn.Sequential, images: torch.Tensor, *, speedup: float, method: str = "asym",
              samples_per_image: int = 100, rank_cost: str = "with_1x1", latency_table=None, round_ranks_to: int = 1,
              skip=("conv1_1",), seed: int = 0) -> dict:
    """The plan ``compress`` would follow (ranks from eigenvalues of sampled responses), without
    solving any layer: enough to build the architecture and time it."""
    from ..solver import pipeline

    specs = conv_specs(features, tuple(images.shape[-2:]))
    eigenvalues = sampled_eigenvalues(features, images, samples_per_image=samples_per_image, seed=seed)
    pipeline._check_latency_arguments(method, True, rank_cost, latency_table, round_ranks_to)
    return pipeline._make_plan(specs, eigenvalues, method, speedup, True, skip, rank_cost, latency_table, round_ranks_to)


def measured_speedups(features: nn.Sequential, plans: Dict[str, dict], input_hw: Tuple[int, int], *,
                      batch: int = 1, warmup: int = 2, repeats: int = 9, threads_count: Optional[int] = None) -> dict:
    """Median latency of the original features and of each plan's architecture (random weights:
    speed only), measured interleaved, and the speedups over the original."""
    from .latency import measure_many

    x = torch.randn(batch, 3, *input_hw)
    models = {"original": features.eval()}
    for name, plan in plans.items():
        models[name] = apply_plan(features, plan).eval()
    calls = {name: (lambda m=model: m(x)) for name, model in models.items()}
    timings = measure_many(calls, warmup=warmup, repeats=repeats, threads=threads_count)
    base = timings["original"]["median_ms"]
    return {name: {"median_ms": t["median_ms"], "speedup": base / t["median_ms"]} for name, t in timings.items()}


def latency_comparison(net: Optional[TrainedNet], small_test: Optional[Tuple[torch.Tensor, torch.Tensor]],
                       small_calibration: Optional[torch.Tensor], *, speedup: float = 4.0, method: str = "asym",
                       size: int = 224, num_images: int = 8, samples_per_image: int = 100, round_to: int = 8,
                       threads_count: Optional[int] = None, cache: Optional[str] = None, repeats: int = 5,
                       measure_repeats: int = 9, small_samples_per_image: int = 10,
                       schedule=((0.01, 25), (1.0, 25)), seed: int = 0) -> dict:
    """MAC-based vs latency-based rank selection at ``speedup`` (method ``asym``: the channel structure).

    1. Full-width VGG-16 at ``size``², batch 1 on this CPU: each conv's latency table
       (:func:`accel_det.solver.latency.measure_latency_table`, cached in ``cache``); plans from the
       eigenvalues of He-initialised VGG-16 on generated images (no ImageNet weights here), by
       multiply-adds, by latency, and by latency with ranks rounded to multiples of ``round_to``;
       their theoretical speedup, the speedup the table predicts and the measured speedup of the
       whole ``features`` (interleaved medians, random weights: speed only).
    2. The trained small network (``net``): the same three selections, the latency costs being the
       full-width table with the rank axis scaled by the width (:meth:`LatencyTable.rescaled`);
       held-out error and accuracy after compression.
    """
    from ..solver.latency import measure_latency_table

    result: dict = {"speedup": speedup, "method": method}
    with num_threads(threads_count) as used:
        full = random_features(1.0, seed)
        start = time.perf_counter()
        table = measure_latency_table(full, (size, size), batch=1, threads=used, cache=cache, skip=("conv1_1",),
                                      repeats=repeats)
        result["table"] = {**table.meta, "key": table.key, "seconds": time.perf_counter() - start}
        images = make_task(num_images, size=size, seed=seed + 4000)[0]
        specs = conv_specs(full, (size, size))
        original_ms = 1e3 * table.predicted(specs, {})
        equal = "latency, same predicted ms as MACs"
        variants = {
            "MACs": dict(speedup=speedup, rank_cost="with_1x1"),
            "latency": dict(speedup=speedup, rank_cost="latency", latency_table=table),
            f"latency, ranks x{round_to}": dict(speedup=speedup, rank_cost="latency", latency_table=table,
                                                 round_ranks_to=round_to),
            equal: dict(rank_cost="latency", latency_table=table),  # speedup: the MAC plan's predicted one
        }
        plans, vgg = {}, {}
        for name, options in variants.items():
            if name == equal:
                options = {**options, "speedup": vgg["MACs"]["predicted_speedup"]}
            plan = plan_only(full, images, method=method, samples_per_image=samples_per_image, seed=seed, **options)
            ranks = {n: e["rank"] for n, e in plan["layers"].items() if e["rank"] is not None}
            predicted_ms = 1e3 * table.predicted(specs, ranks)
            plans[name] = plan
            vgg[name] = {"target": options["speedup"], "theoretical_speedup": plan["theoretical_speedup"],
                         "pca_energy_product": pca_energy_product(plan),
                         "predicted_ms": predicted_ms, "predicted_speedup": original_ms / predicted_ms, "ranks": ranks}
        measured = measured_speedups(full, plans, (size, size), repeats=measure_repeats, threads_count=used)
        for name in plans:
            vgg[name].update(median_ms=measured[name]["median_ms"], measured_speedup=measured[name]["speedup"])
        result["vgg16"] = {"original": {"median_ms": measured["original"]["median_ms"], "predicted_ms": original_ms}, **vgg}
        result["threads"] = used

        if net is not None:
            input_hw = tuple(small_test[0].shape[-2:])
            small_specs = conv_specs(net.features, input_hw)
            small_table = table.rescaled(small_specs)
            small_original = small_table.predicted(small_specs, {})
            reference = feature_maps(net.features, small_test[0])
            small = {}
            # Ranks rounded to multiples of round_to at full width are multiples of round_to·width here.
            small_round = max(1, round(round_to * small_specs[-1].out_channels / specs[-1].out_channels))
            for name, options in variants.items():
                if "latency_table" in options:
                    options = {**options, "latency_table": small_table}
                if "round_ranks_to" in options:
                    options = {**options, "round_ranks_to": small_round}
                if name == equal:
                    mac_ranks = small["MACs"].get("ranks")
                    if mac_ranks is None:
                        continue
                    options = {**options, "speedup": small_original / small_table.predicted(small_specs, mac_ranks)}
                record = run_one(net, small_calibration, small_test, reference, method=method,
                                 rank_selection=True, samples_per_image=small_samples_per_image, schedule=schedule,
                                 seed=seed, **options)
                if "ranks" in record:
                    record["predicted_speedup"] = small_original / small_table.predicted(small_specs, record["ranks"])
                small[name] = record
            result["small_net"] = small
    return result


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def _label(record: dict) -> str:
    if record["method"] == "jaderberg":
        return "jaderberg"
    return f"{record['method']} ({'rank sel.' if record['rank_selection'] else 'uniform'})"


def sweep_table(sweep: dict, speedups: Sequence[float], field: str = "quality") -> str:
    """A fixed-width table: rows method × rank selection, one column per speedup. ``field``:
    "quality" (held-out error / top-1 accuracy) or "cost" (compression seconds / peak MB)."""
    rows: Dict[str, Dict[float, str]] = {}
    for record in sweep["records"]:
        cells = rows.setdefault(_label(record), {})
        if "impossible" in record:
            cells[record["speedup"]] = "impossible"
        elif field == "quality":
            cells[record["speedup"]] = f"{record['error']:.3f} / {100 * record['accuracy']:.1f}%"
        else:
            cells[record["speedup"]] = f"{record['seconds']:.1f}s / {record['peak_mb']:.0f}MB"
    what = "held-out error / top-1" if field == "quality" else "seconds / peak RSS"
    header = [f"method ({what})"] + [f"{s:g}x" for s in speedups]
    body = [[label] + [cells.get(s, "-") for s in speedups] for label, cells in rows.items()]
    if field == "quality":
        base = sweep["baseline"]
        body.insert(0, ["original"] + [f"{base['error']:.3f} / {100 * base['accuracy']:.1f}%"] * len(speedups))
    return _format(header, body)


def latency_table_text(comparison: dict) -> str:
    """The MAC- vs latency-based selections side by side."""
    header = ["selection (budget)", "VGG-16 theor.", "table-predicted", "measured", "small net theor.",
              "small net E (eq. 13)", "small net error / top-1"]
    body = []
    for name, row in comparison["vgg16"].items():
        if name == "original":
            continue
        small = comparison.get("small_net", {}).get(name, {})
        quality = ("impossible" if "impossible" in small else
                   f"{small['error']:.3f} / {100 * small['accuracy']:.1f}%" if small else "-")
        small_theoretical = f"{small['theoretical_speedup']:.2f}x" if "theoretical_speedup" in small else "-"
        energy = f"{small['pca_energy_product']:.3f}" if "pca_energy_product" in small else "-"
        body.append([f"{name} ({row['target']:.2f}x)", f"{row['theoretical_speedup']:.2f}x", f"{row['predicted_speedup']:.2f}x",
                     f"{row['measured_speedup']:.2f}x ({row['median_ms']:.0f} ms)", small_theoretical, energy, quality])
    return _format(header, body)


def _format(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in body]
    return "\n".join(lines)


def plot_sweep(sweep: dict, path: str, title: str = "") -> None:
    """PNG: held-out error and top-1 accuracy vs speedup, one colour per method; solid lines with
    rank selection, dashed without. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from ..utils.io import atomic_path

    colours = dict(zip(METHODS, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")))
    fig, (ax_error, ax_accuracy) = plt.subplots(1, 2, figsize=(13, 4.4))
    groups: Dict[Tuple[str, bool], List[dict]] = {}
    for record in sweep["records"]:
        if "impossible" not in record:
            groups.setdefault((record["method"], record["rank_selection"]), []).append(record)
    for (method, selection), records in groups.items():
        records = sorted(records, key=lambda r: r["speedup"])
        xs = [r["speedup"] for r in records]
        style = dict(color=colours.get(method), marker="o", linestyle="-" if selection or method == "jaderberg" else "--",
                     label=_label(records[0]))
        ax_error.plot(xs, [r["error"] for r in records], **style)
        ax_accuracy.plot(xs, [100 * r["accuracy"] for r in records], **style)
    ax_accuracy.axhline(100 * sweep["baseline"]["accuracy"], color="black", linewidth=0.8, label="original")
    ax_error.set(xlabel="theoretical speedup (×)", ylabel="held-out relative output error", yscale="log")
    ax_accuracy.set(xlabel="theoretical speedup (×)", ylabel="held-out top-1 accuracy (%)")
    for ax in (ax_error, ax_accuracy):
        ax.grid(True, alpha=0.3)
    ax_accuracy.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5), handlelength=3)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as temporary:
        fig.savefig(temporary, dpi=110, format="png")
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# The trained network, cached next to the outputs
# --------------------------------------------------------------------------------------------


def net_cache_name(config: SweepConfig) -> str:
    """File name of the trained network for ``config`` (what training depends on)."""
    import hashlib

    key = f"{config.size}|{config.width}|{config.train_images}|{config.train_steps}|{config.seed}|v1"
    return f"small_vgg_{hashlib.sha256(key.encode()).hexdigest()[:10]}.pth"


def save_net(net: TrainedNet, path: str) -> None:
    from ..utils.io import atomic_torch_save

    atomic_torch_save({"features": net.features.state_dict(), "head": net.head.state_dict(), "width": net.width,
                       "train_seconds": net.train_seconds, "train_accuracy": net.train_accuracy,
                       "history": json_safe(net.history)}, path)


def load_net(path: str) -> TrainedNet:
    from ..utils.io import load_torch_file

    saved = load_torch_file(path, "trained network")
    features = vgg16_features(saved["width"])
    features.load_state_dict(saved["features"])
    channels = [m for m in features if isinstance(m, nn.Conv2d)][-1].out_channels
    head = make_head(channels)
    head.load_state_dict(saved["head"])
    return TrainedNet(features.eval(), head.eval(), saved["width"], saved["train_seconds"], saved["train_accuracy"],
                      list(saved["history"]))


def json_safe(value):
    """Plain JSON types (floats, ints, lists, dicts, strings) from nested records."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
