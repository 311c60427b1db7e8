"""Drawing for the synthetic VOC set: backgrounds, textures, anti-aliased shape masks, clutter."""

from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np
from PIL import Image, ImageDraw

from ...errors import AccelDetError

SUPERSAMPLE = 4  # shapes are drawn this many times larger, then reduced: smooth edges


def random_colour(rng) -> np.ndarray:
    return rng.uniform(0, 255, 3)


def background(rng, height, width) -> np.ndarray:
    """A smooth two-colour gradient plus low-frequency colour noise (float H×W×3)."""
    a, b = random_colour(rng), random_colour(rng)
    theta = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    t = np.cos(theta) * xx + np.sin(theta) * yy
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    canvas = a * (1 - t[..., None]) + b * t[..., None]
    coarse = rng.normal(0, 35, (max(2, height // 16), max(2, width // 16), 3))
    low = np.asarray(
        Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize(
            (width, height), Image.BICUBIC
        ),
        dtype=np.float32,
    )
    return canvas + (low - 128)


def textured(rng, height, width) -> np.ndarray:
    """A full-image texture: solid, stripes, checker, noise or gradient, in random colours."""
    a, b = random_colour(rng), random_colour(rng)
    kind = int(rng.integers(5))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == 0:  # solid
        return np.broadcast_to(a, (height, width, 3)).astype(np.float32)
    if kind == 1:  # stripes
        theta, period = rng.uniform(0, math.pi), rng.uniform(4, 12)
        t = ((np.cos(theta) * xx + np.sin(theta) * yy) / period) % 1.0 < 0.5
    elif kind == 2:  # checker
        period = rng.uniform(3, 9)
        t = ((xx // period + yy // period) % 2).astype(bool)
    elif kind == 3:  # noise around a colour
        return a + rng.normal(0, 40, (height, width, 3))
    else:  # gradient
        theta = rng.uniform(0, 2 * math.pi)
        t = np.cos(theta) * xx + np.sin(theta) * yy
        t = ((t - t.min()) / max(float(t.max() - t.min()), 1e-6))[..., None]
        return a * (1 - t) + b * t
    return np.where(t[..., None], a, b).astype(np.float32)


def polygon(name: str) -> List[List[Tuple[float, float]]]:
    """Outline(s) of a shape in a unit box centred at 0 (the first is filled, the rest are
    holes)."""
    if name in ("circle", "ring"):
        outer = [
            (0.5 * math.cos(t), 0.5 * math.sin(t))
            for t in np.linspace(0, 2 * math.pi, 72, endpoint=False)
        ]
        if name == "circle":
            return [outer]
        return [outer, [(0.27 * x / 0.5, 0.27 * y / 0.5) for x, y in outer]]
    if name == "square":
        return [[(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)]]
    if name == "triangle":
        return [
            [
                (0.5 * math.cos(t), 0.5 * math.sin(t))
                for t in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)
            ]
        ]
    if name == "hexagon":
        return [
            [
                (0.5 * math.cos(t), 0.5 * math.sin(t))
                for t in np.linspace(0, 2 * math.pi, 6, endpoint=False)
            ]
        ]
    if name == "star":
        points = []
        for i in range(10):
            r = 0.5 if i % 2 == 0 else 0.2
            t = -math.pi / 2 + i * math.pi / 5
            points.append((r * math.cos(t), r * math.sin(t)))
        return [points]
    if name == "cross":
        a = 0.17
        return [
            [
                (-a, -0.5),
                (a, -0.5),
                (a, -a),
                (0.5, -a),
                (0.5, a),
                (a, a),
                (a, 0.5),
                (-a, 0.5),
                (-a, a),
                (-0.5, a),
                (-0.5, -a),
                (-a, -a),
            ]
        ]
    if name == "heart":
        ts = np.linspace(0, 2 * math.pi, 72, endpoint=False)
        xs = 16 * np.sin(ts) ** 3
        ys = -(13 * np.cos(ts) - 5 * np.cos(2 * ts) - 2 * np.cos(3 * ts) - np.cos(4 * ts))
        return [[(x / 34.0, (y + 2.5) / 34.0) for x, y in zip(xs, ys)]]
    raise AccelDetError(f"unknown shape {name!r}")


def shape_alpha(name, cx, cy, w, h, angle, height, width) -> Tuple[np.ndarray, float]:
    """Anti-aliased coverage (H×W float in [0, 1]) of a shape, and its full area in pixels
    (inside and outside the image)."""
    c, si = math.cos(angle), math.sin(angle)
    outlines = []
    for outline in polygon(name):
        points = []
        for x, y in outline:
            x, y = x * w, y * h
            points.append((cx + c * x - si * y, cy + si * x + c * y))
        outlines.append(points)
    # full area from the polygon itself (shoelace), holes subtracted
    area = abs(shoelace(outlines[0])) - sum(abs(shoelace(p)) for p in outlines[1:])
    primitives = [("polygon", outlines[0], 255)] + [("polygon", hole, 0) for hole in outlines[1:]]
    return rasterize(primitives, height, width), area


def rasterize(primitives, height: int, width: int) -> np.ndarray:
    """Coverage (H×W float in [0, 1]) of PIL drawing primitives given in image pixels, drawn
    ``SUPERSAMPLE`` times larger in the window they occupy only, then reduced (smooth edges)."""
    s = SUPERSAMPLE
    xs, ys, margin = [], [], 1.0
    for kind, geometry, *rest in primitives:
        points = geometry if kind in ("polygon", "line") else [geometry[:2], geometry[2:]]
        xs += [p[0] for p in points]
        ys += [p[1] for p in points]
        if kind in ("line", "arc"):
            margin = max(margin, rest[-1])
    x0, y0 = max(0, int(math.floor(min(xs) - margin))), max(0, int(math.floor(min(ys) - margin)))
    x1, y1 = (
        min(width, int(math.ceil(max(xs) + margin)) + 1),
        min(height, int(math.ceil(max(ys) + margin)) + 1),
    )
    alpha = np.zeros((height, width), dtype=np.float32)
    if x1 <= x0 or y1 <= y0:
        return alpha
    layer = Image.new("L", ((x1 - x0) * s, (y1 - y0) * s), 0)
    draw = ImageDraw.Draw(layer)

    def at(x, y):
        return ((x - x0) * s, (y - y0) * s)

    for kind, geometry, *rest in primitives:
        if kind == "polygon":
            draw.polygon([at(*p) for p in geometry], fill=rest[0])
        elif kind == "line":
            draw.line([at(*p) for p in geometry], fill=255, width=max(1, int(rest[0] * s)))
        elif kind == "arc":
            (ax0, ay0), (ax1, ay1) = at(*geometry[:2]), at(*geometry[2:])
            draw.arc(
                [ax0, ay0, ax1, ay1], rest[0], rest[1], fill=255, width=max(1, int(rest[2] * s))
            )
        else:  # ellipse
            (ax0, ay0), (ax1, ay1) = at(*geometry[:2]), at(*geometry[2:])
            draw.ellipse([ax0, ay0, ax1, ay1], fill=255)
    alpha[y0:y1, x0:x1] = (
        np.asarray(layer.resize((x1 - x0, y1 - y0), Image.BOX), dtype=np.float32) / 255.0
    )
    return alpha


def shoelace(points) -> float:
    x = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points])
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def draw_clutter(rng, canvas: np.ndarray) -> None:
    """One distractor that belongs to no class: a line, an arc, a spray of dots or an irregular
    blob."""
    height, width = canvas.shape[:2]
    kind = int(rng.integers(4))
    if kind == 0:
        points = [
            (rng.uniform(0, width), rng.uniform(0, height)) for _ in range(int(rng.integers(2, 4)))
        ]
        primitives = [("line", points, rng.uniform(1, 3))]
    elif kind == 1:
        r = rng.uniform(0.1, 0.35) * height
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        start = rng.uniform(0, 360)
        primitives = [
            (
                "arc",
                (x - r, y - r, x + r, y + r),
                start,
                start + rng.uniform(40, 200),
                rng.uniform(1, 3),
            )
        ]
    elif kind == 2:
        primitives = []
        for _ in range(int(rng.integers(3, 12))):
            x, y, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.7, 2.5)
            primitives.append(("ellipse", (x - r, y - r, x + r, y + r)))
    else:  # an irregular blob: a random star-shaped polygon with many uneven radii
        size = rng.uniform(0.08, 0.3) * height
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        n = int(rng.integers(9, 16))
        radii = size * rng.uniform(0.35, 1.0, n)
        ts = np.sort(rng.uniform(0, 2 * math.pi, n))
        primitives = [
            (
                "polygon",
                [(x + r * math.cos(t), y + r * math.sin(t)) for r, t in zip(radii, ts)],
                255,
            )
        ]
    alpha = rasterize(primitives, height, width)[..., None]
    texture = textured(rng, height, width)
    canvas[:] = canvas * (1 - alpha) + texture * alpha
