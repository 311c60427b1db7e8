"""Helpers shared by the tests (fixtures are in conftest.py)."""

import importlib.util
import sys
from pathlib import Path

import torch
from torch import nn

from accel_det.nn import CHANNEL, SPATIAL_CHANNEL
from accel_det.solver import plan_from_structures

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools"


def load_tool(name: str):
    """The module of ``tools/<name>.py``, imported from its file (its ``main`` and parser)."""
    if str(TOOLS) not in sys.path:
        sys.path.insert(0, str(TOOLS))  # the tools import tools/bootstrap.py
    spec = importlib.util.spec_from_file_location(f"tool_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# a tiny Detectron2 detector (config overrides): an iteration or an evaluation takes seconds
TINY_DETECTOR = (
    "MODEL.VGG.WIDTH",
    "0.0625",
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    "32",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "32",
    "INPUT.MIN_SIZE_TRAIN",
    "(64,)",
    "INPUT.MAX_SIZE_TRAIN",
    "86",
    "INPUT.MIN_SIZE_TEST",
    "64",
    "INPUT.MAX_SIZE_TEST",
    "86",
)

SHORT = ((0.01, 3), (1.0, 3))  # a short lambda schedule for the nonlinear solver


def small_net(width=16, seed=0):
    """A 7-conv VGG-style chain (3 blocks) with random weights, in eval mode."""
    torch.manual_seed(seed)
    layers, c = [], 3
    for block in ((width, width), (2 * width, 2 * width), (4 * width, 4 * width, 4 * width)):
        for d in block:
            layers += [nn.Conv2d(c, d, 3, padding=1), nn.ReLU(inplace=True)]
            c = d
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers).eval()


def image_batches(count=3, size=24, seed=0):
    """``count`` batches of 4 random images."""
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(4, 3, size, size, generator=g) for _ in range(count)]


def hand_macs(layer, rank=None, spatial_rank=None) -> int:
    """Multiply-adds of one conv layer, counted from the formulas of docs/solver.md (stride 1 as in
    VGG-16), for checking the code's counts: ``layer`` has ``in_channels`` c, ``out_channels`` d,
    ``kernel_size`` (kh, kw) and ``out_hw``. Original d·kh·kw·c; rank d' (channel) d'(kh·kw·c + d);
    spatial rank d'' (spatial) d''·kh·c + d·kw·d''; both (3d) d''·kh·c + d'·kw·d'' + d·d'; per
    output position. A rank d' = d has no 1×1 layer (folded)."""
    c, d = layer["in_channels"], layer["out_channels"]
    (kh, kw), (h, w) = layer["kernel_size"], layer["out_hw"]
    if rank == d:
        rank = None
    if rank and spatial_rank:
        per_position = spatial_rank * kh * c + rank * kw * spatial_rank + d * rank
    elif rank:
        per_position = rank * (kh * kw * c + d)
    elif spatial_rank:
        per_position = spatial_rank * kh * c + d * kw * spatial_rank
    else:
        per_position = d * kh * kw * c
    return per_position * h * w


def hand_speedup(layers, ranks, spatial_ranks=None) -> float:
    """Whole-model theoretical speedup counted by :func:`hand_macs`: ``layers`` are shapes (plan
    entries or ConvSpec-like dicts) of all conv layers, ``ranks`` / ``spatial_ranks`` map names to
    d' / d'' (layers in neither stay original)."""
    spatial_ranks = spatial_ranks or {}
    original = sum(hand_macs(layer) for layer in layers)
    approximated = sum(
        hand_macs(layer, ranks.get(layer["name"]), spatial_ranks.get(layer["name"]))
        for layer in layers
    )
    return original / approximated


def full_rank_planner(specs, eigenvalues):
    """Every conv factorized at full rank: k×k ones in the 3d structure (d' = d, d'' full), 1×1
    ones in the channel structure (d' = d)."""
    layers = {}
    for s in specs:
        kh, kw = s.kernel_size
        if kh > 1:
            full = min(kh * s.in_channels, kw * s.out_channels)
            layers[s.name] = dict(structure=SPATIAL_CHANNEL, rank=s.out_channels, spatial_rank=full)
        else:
            layers[s.name] = dict(structure=CHANNEL, rank=s.out_channels)
    plan = plan_from_structures(specs, layers, method="linear", speedup=1.01)
    for entry in plan["layers"].values():
        entry.update(pca_energy=1.0, error=None, seconds=None)
    return plan
