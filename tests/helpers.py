"""Helpers shared by the tests (fixtures are in conftest.py)."""

import importlib.util
import sys
from pathlib import Path

import torch
from torch import nn

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
