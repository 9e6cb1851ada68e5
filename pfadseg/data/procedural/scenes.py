"""Offline stand-in for MVTec AD: a procedural dataset in its layout, each category a scene with defects.

Normal images of one category share a look (a texture, or an object on a plain background) and vary in
pose, colour, lighting and sensor noise. A defect changes a small region (about 0.3-5 % of the image) with
moderate contrast; its mask is exactly the set of pixels that changed by at least ``MASK_THRESHOLD`` levels
in some channel, and every other pixel is left untouched. Defects darken or lighten at random, so global
image statistics do not give them away.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pfadseg.config import SyntheticDataConfig
from pfadseg.data.categories import GRAYSCALE_CATEGORIES, MVTEC_CATEGORIES
from pfadseg.data.procedural.fields import (
    Array,
    Grid,
    coverage,
    fractal_field,
    object_pose,
    pixel_grid,
    smooth_field,
    to_uint8,
)
from pfadseg.errors import UsageError
from pfadseg.fsio import atomic_dir
from pfadseg.seeding import numpy_rng

log = logging.getLogger(__name__)

DEFECT_KINDS: tuple[str, ...] = ("contamination", "crack", "hole", "missing", "scratch", "stain")
MASK_THRESHOLD = 16  # uint8 levels
AREA_RANGE = (0.003, 0.05)  # accepted defect area, as a fraction of the image
MAX_TRIES = 100
NOISE_SIGMA = 0.012  # sensor noise, in [0, 1] units


@dataclass(frozen=True)
class Normal:
    """A rendered normal image (uint8 H x W x C, C = 1 for grayscale categories) and what defects need."""

    image: Array
    fg: Array  # float32 H x W in [0, 1]: where defects may go (the object; everything for textures)
    background: Array | None  # uint8 H x W x C: the scene without the object (None for textures)


# ------------------------------------------------------------------------------------------------ helpers


def _cycles(size: int, cycles: float) -> float:
    """``cycles`` per image, capped so that a period spans at least 4 pixels."""
    return min(cycles, size / 4)


def _disc(u: Array, v: Array, r: float) -> Array:
    return np.hypot(u, v) - r


def _ellipse(u: Array, v: Array, a: float, b: float) -> Array:
    return (np.hypot(u / a, v / b) - 1.0) * min(a, b)


def _capsule(u: Array, v: Array, half: float, r: float) -> Array:
    return np.hypot(np.maximum(np.abs(u) - half, 0.0), v) - r


def _box(u: Array, v: Array, hw: float, hh: float, r: float = 0.0) -> Array:
    qx, qy = np.abs(u) - hw + r, np.abs(v) - hh + r
    return np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0)) + np.minimum(np.maximum(qx, qy), 0.0) - r


def _shade(sdf: Array, depth: float) -> Array:
    """Dome shading: darker at the rim, full brightness ``depth`` inside."""
    return (0.75 + 0.25 * np.sqrt(np.clip(-sdf / depth, 0.0, 1.0)))[..., None]


def _paint(canvas: Array, alpha: Array, colour: Array) -> Array:
    a = alpha[..., None]
    return canvas * (1.0 - a) + colour * a


def _colour(rng: np.random.Generator, rgb: tuple[float, float, float], jitter: float = 0.02) -> Array:
    return np.asarray(rgb, dtype=np.float32) * (1.0 + jitter * rng.standard_normal(3).astype(np.float32))


# ------------------------------------------------------------------------------------------------ textures
# Each renderer returns (image float H x W x 3, fg, background); textures have fg = 1 and no background.

Scene = tuple[Array, Array, Array | None]


def _texture(image: Array) -> Scene:
    return image, np.ones(image.shape[:2], dtype=np.float32), None


def _carpet(rng: np.random.Generator, g: Grid, size: int) -> Scene:
    u, v = object_pose(rng, g, rotate=False, shift=0.5)
    f = 2 * math.pi * _cycles(size, 28)
    weave = np.sin(f * u) * np.sin(f * v)
    pattern = 0.10 * weave + 0.07 * fractal_field(rng, size, 5) + 0.05 * smooth_field(rng, size, size / 3)
    return _texture(_colour(rng, (0.55, 0.46, 0.40)) * (1.0 + pattern)[..., None])


def _grid_texture(rng: np.random.Generator, g: Grid, size: int) -> Scene:
    u, v = object_pose(rng, g, rotate=False, shift=0.5, tilt=0.03)
    f = 2 * math.pi * _cycles(size, 12)
    lines = np.clip((np.maximum(np.cos(f * u), np.cos(f * v)) - 0.6) / 0.4, 0.0, 1.0)
    grey = 0.22 + 0.45 * lines + 0.04 * fractal_field(rng, size, 4)
    return _texture(np.repeat(grey[..., None], 3, axis=2) * _colour(rng, (1.0, 1.0, 1.0)))


def _leather(rng: np.random.Generator, g: Grid, size: int) -> Scene:
    crease = np.exp(-np.abs(smooth_field(rng, size, 7)) * 10.0)
    pattern = 0.06 * fractal_field(rng, size, 8) + 0.05 * smooth_field(rng, size, size / 5) - 0.12 * crease
    return _texture(_colour(rng, (0.50, 0.31, 0.20)) * (1.0 + pattern)[..., None])


def _tile(rng: np.random.Generator, g: Grid, size: int) -> Scene:
    spots = np.clip((smooth_field(rng, size, 18) - 0.7) * 2.5, 0.0, 1.0)
    base = _colour(rng, (0.78, 0.77, 0.74)) * (1.0 + 0.05 * fractal_field(rng, size, 6))[..., None]
    return _texture(_paint(base, 0.6 * spots, _colour(rng, (0.38, 0.36, 0.33))))


def _wood(rng: np.random.Generator, g: Grid, size: int) -> Scene:
    u, _ = object_pose(rng, g, rotate=False, shift=0.5, tilt=0.03)
    rings = np.sin(2 * math.pi * (_cycles(size, 9) * u + 0.6 * smooth_field(rng, size, 3)))
    grain = smooth_field(rng, size, 3, size / 3)
    pattern = 0.09 * rings + 0.05 * grain + 0.03 * fractal_field(rng, size, 6)
    return _texture(_colour(rng, (0.62, 0.43, 0.26)) * (1.0 + pattern)[..., None])


# ------------------------------------------------------------------------------------------------ objects


def _background(rng: np.random.Generator, size: int, rgb: tuple[float, float, float], amp: float) -> Array:
    return _colour(rng, rgb) * (1.0 + amp * fractal_field(rng, size, 4))[..., None]


def _surface(rng: np.random.Generator, size: int, amp: float) -> Array:
    return (1.0 + amp * fractal_field(rng, size, 6))[..., None]


def _bottle(rng: np.random.Generator, g: Grid, size: int) -> Scene:
    bg = _background(rng, size, (0.06, 0.06, 0.06), 0.1)
    u, v = object_pose(rng, g, rotate=True)
    outer, inner = _disc(u, v, 0.40), _disc(u, v, 0.19)
    img = _paint(bg, coverage(outer, size),
                 _colour(rng, (0.40, 0.32, 0.17)) * _shade(outer, 0.12) * _surface(rng, size, 0.05))
    img = _paint(img, coverage(inner, size), _colour(rng, (0.14, 0.11, 0.08)) * _shade(inner, 0.1))
    return img, coverage(outer, size), bg


def _cable(rng: np.random.Generator, g: Grid, size: int) -> Scene:
    bg = _background(rng, size, (0.12, 0.12, 0.12), 0.1)
    u, v = object_pose(rng, g, rotate=False)
    sheath = _disc(u, v, 0.42)
    img = _paint(bg, coverage(sheath, size), _colour(rng, (0.56, 0.56, 0.52)) * _surface(rng, size, 0.04))
    wires = ((0.25, 0.55, 0.30), (0.25, 0.35, 0.70), (0.55, 0.40, 0.25))
    for k, rgb in enumerate(wires):
        angle = math.pi / 2 + k * 2 * math.pi / 3
        wu, wv = u - 0.21 * math.cos(angle), v - 0.21 * math.sin(angle)
        wire = _disc(wu, wv, 0.15)
        img = _paint(img, coverage(wire, size), _colour(rng, rgb) * _shade(wire, 0.06))
        img = _paint(img, coverage(_disc(wu, wv, 0.07), size), _colour(rng, (0.80, 0.52, 0.30)))
    return img, coverage(sheath, size), bg


def _capsule_object(rng: np.random.Generator, g: Grid, size: int) -> Scene:
    bg = _background(rng, size, (0.84, 0.84, 0.82), 0.02)
    u, v = object_pose(rng, g, rotate=False)
    body = _capsule(u, v, 0.24, 0.13)
    halves = np.where((u < 0)[..., None], _colour(rng, (0.14, 0.14, 0.14)), _colour(rng, (0.88, 0.52, 0.14)))
    img = _paint(bg, coverage(body, size), halves * _shade(body, 0.08) * _surface(rng, size, 0.03))
    return img, coverage(body, size), bg


def _hazelnut(rng: np.random.Generator, g: Grid, size: int) -> Scene:
    bg = _background(rng, size, (0.03, 0.03, 0.03), 0.1)
    u, v = object_pose(rng, g, rotate=True)
    nut = _ellipse(u, v, 0.31, 0.26)
    streaks = 1.0 + 0.06 * np.sin(2 * math.pi * (_cycles(size, 14) * v + 0.5 * smooth_field(rng, size, 3)))
    colour = _colour(rng, (0.56, 0.37, 0.19)) * _shade(nut, 0.12) * _surface(rng, size, 0.07)
    return _paint(bg, coverage(nut, size), colour * streaks[..., None]), coverage(nut, size), bg


def _metal_nut(rng: np.random.Generator, g: Grid, size: int) -> Scene:
    bg = _background(rng, size, (0.04, 0.04, 0.04), 0.1)
    u, v = object_pose(rng, g, rotate=False)
    outer, hole = _disc(u, v, 0.36), _disc(u, v, 0.13)
    brushed = 1.0 + 0.05 * np.sin(2 * math.pi * _cycles(size, 40) * np.hypot(u, v))
    colour = _colour(rng, (0.62, 0.63, 0.66)) * _surface(rng, size, 0.04) * brushed[..., None]
    fg = coverage(outer, size) * (1.0 - coverage(hole, size))
    return _paint(bg, fg, colour), fg, bg


def _pill(rng: np.random.Generator, g: Grid, size: int) -> Scene:
    bg = _background(rng, size, (0.06, 0.06, 0.06), 0.1)
    u, v = object_pose(rng, g, rotate=False)
    body = _ellipse(u, v, 0.37, 0.18)
    fg = coverage(body, size)
    img = _paint(bg, fg, _colour(rng, (0.93, 0.91, 0.86)) * _shade(body, 0.08))
    centres, radii = rng.uniform((-0.30, -0.12), (0.30, 0.12), (14, 2)), rng.uniform(0.005, 0.011, 14)
    on = fg > 0  # specks only matter on the pill: evaluate them there
    uo, vo = u[on], v[on]
    specks = np.min([_disc(uo - su, vo - sv, r) for (su, sv), r in zip(centres, radii, strict=True)], axis=0)
    cover = np.zeros_like(fg)
    cover[on] = coverage(specks, size) * fg[on]
    return _paint(img, cover, _colour(rng, (0.78, 0.30, 0.24))), fg, bg


def _screw(rng: np.random.Generator, g: Grid, size: int) -> Scene:
    bg = _background(rng, size, (0.80, 0.80, 0.80), 0.02)
    u, v = object_pose(rng, g, rotate=True, shift=0.04)
    shaft, head = _capsule(u - 0.05, v, 0.22, 0.045), _disc(u + 0.24, v, 0.085)
    threads = 1.0 + 0.18 * np.sin(2 * math.pi * _cycles(size, 55) * u)
    grey = np.full(3, 0.32, dtype=np.float32)
    img = _paint(bg, coverage(shaft, size), grey * _shade(shaft, 0.03) * threads[..., None])
    img = _paint(img, coverage(head, size), _colour(rng, (0.40, 0.40, 0.40)) * _shade(head, 0.06))
    img = _paint(img, coverage(_box(u + 0.24, v, 0.012, 0.06), size), _colour(rng, (0.15, 0.15, 0.15)))
    return img, np.maximum(coverage(shaft, size), coverage(head, size)), bg


def _toothbrush(rng: np.random.Generator, g: Grid, size: int) -> Scene:
    bg = _background(rng, size, (0.08, 0.08, 0.10), 0.1)
    u, v = object_pose(rng, g, rotate=False)
    head = _box(u, v, 0.38, 0.15, 0.07)
    rows = (np.sin(2 * math.pi * _cycles(size, 16) * u) > 0)[..., None]
    colour = np.where(rows, _colour(rng, (0.25, 0.45, 0.85)), _colour(rng, (0.92, 0.92, 0.92)))
    return _paint(bg, coverage(head, size), colour * _surface(rng, size, 0.08)), coverage(head, size), bg


def _transistor(rng: np.random.Generator, g: Grid, size: int) -> Scene:
    bg = _background(rng, size, (0.66, 0.62, 0.56), 0.03)
    u, v = object_pose(rng, g, rotate=False)
    parts = [(_box(u, v + 0.30, 0.20, 0.05, 0.01), (0.70, 0.70, 0.72)),
             (_box(u, v + 0.12, 0.20, 0.15, 0.02), (0.10, 0.10, 0.10))]
    parts += [(_box(u - du, v - 0.20, 0.022, 0.17), (0.80, 0.78, 0.70)) for du in (-0.12, 0.0, 0.12)]
    img, fg, surface = bg, np.zeros((size, size), np.float32), _surface(rng, size, 0.03)
    for sdf, rgb in parts:
        alpha = coverage(sdf, size)
        img = _paint(img, alpha, _colour(rng, rgb) * surface)
        fg = np.maximum(fg, alpha)
    return img, fg, bg


def _zipper(rng: np.random.Generator, g: Grid, size: int) -> Scene:
    f = 2 * math.pi * _cycles(size, 40)
    weave = 1.0 + 0.08 * np.sin(f * g[1]) * np.sin(f * g[0])
    bg = _background(rng, size, (0.30, 0.30, 0.30), 0.05) * weave[..., None]
    u, v = object_pose(rng, g, rotate=False, tilt=0.02)
    band = _box(u, v, 0.13, 0.7)
    phase = np.where(u < 0, 0.0, math.pi)
    teeth = (np.sin(2 * math.pi * _cycles(size, 22) * v + phase) > 0)[..., None]
    colour = np.where(teeth, _colour(rng, (0.78, 0.78, 0.78)), _colour(rng, (0.42, 0.42, 0.42)))
    return _paint(bg, coverage(band, size), colour * _surface(rng, size, 0.04)), coverage(band, size), bg


RENDERERS: dict[str, Callable[[np.random.Generator, Grid, int], Scene]] = {
    "bottle": _bottle, "cable": _cable, "capsule": _capsule_object, "carpet": _carpet, "grid": _grid_texture,
    "hazelnut": _hazelnut, "leather": _leather, "metal_nut": _metal_nut, "pill": _pill, "screw": _screw,
    "tile": _tile, "toothbrush": _toothbrush, "transistor": _transistor, "wood": _wood, "zipper": _zipper,
}


def render_normal(category: str, rng: np.random.Generator, size: int) -> Normal:
    """One normal image of ``category``: its look plus pose, colour, lighting and sensor-noise variation."""
    g = pixel_grid(size)
    image, fg, background = RENDERERS[category](rng, g, size)
    yy, xx = g
    gain = 1.0 + 0.06 * rng.standard_normal()
    gx, gy = 0.05 * rng.standard_normal(), 0.05 * rng.standard_normal()
    light = (gain * (1.0 + gx * (xx - 0.5) + gy * (yy - 0.5)))[..., None]
    channels = 1 if category in GRAYSCALE_CATEGORIES else 3
    noise = rng.standard_normal((size, size, channels), dtype=np.float32) * np.float32(NOISE_SIGMA)
    bg = None if background is None else to_uint8(background * light + noise, channels)
    return Normal(to_uint8(image * light + noise, channels), fg, bg)


# ------------------------------------------------------------------------------------------------ defects


def _centre(rng: np.random.Generator, where: Array, size: int) -> Array:
    """A random pixel centre (y, x in image units) among the pixels where ``where`` is True."""
    flat = np.flatnonzero(where.ravel())
    index = int(flat[rng.integers(len(flat))])
    return np.array([(index // size + 0.5) / size, (index % size + 0.5) / size])


def _outline(fg: Array) -> Array:
    """Object pixels (fg > 0.5) with a 4-neighbour outside the object."""
    on = fg > 0.5
    interior = on.copy()
    interior[1:] &= on[:-1]
    interior[:-1] &= on[1:]
    interior[:, 1:] &= on[:, :-1]
    interior[:, :-1] &= on[:, 1:]
    return on & ~interior


def _window(points: Array, margin: float, size: int) -> tuple[slice, slice]:
    """Pixel slices of the bounding box of ``points`` (K x 2, image units) grown by ``margin``."""
    lo = np.clip(np.floor((points.min(axis=0) - margin) * size), 0, size).astype(int)
    hi = np.clip(np.ceil((points.max(axis=0) + margin) * size), 0, size).astype(int)
    return slice(lo[0], hi[0]), slice(lo[1], hi[1])


def _walk(rng: np.random.Generator, inside: Array, size: int, *, steps: int, step: float,
          turn: float) -> Array:
    """Polyline (K x 2) of a random walk that turns by N(0, turn) per step and stays on ``inside`` pixels."""
    point = _centre(rng, inside, size)
    angle = rng.uniform(0, 2 * math.pi)
    points = [point]
    for _ in range(steps):
        for attempt in range(8):
            angle += rng.normal(0.0, turn if attempt == 0 else 1.5)
            nxt = point + step * np.array([math.sin(angle), math.cos(angle)])
            iy, ix = np.floor(nxt * size).astype(int)
            if 0 <= iy < size and 0 <= ix < size and inside[iy, ix]:
                point = nxt
                points.append(point)
                break
    return np.array(points)


def _stroke(g: Grid, points: Array, size: int, width: float) -> Array:
    """Coverage of a polyline ``width`` pixels wide (computed in its bounding box only)."""
    cover = np.zeros((size, size), dtype=np.float32)
    sl = _window(points, width / size, size)
    yy, xx = g[0][sl], g[1][sl]
    best = np.full(yy.shape, np.inf, dtype=np.float32)
    for (y0, x0), (y1, x1) in itertools.pairwise(points):
        dy, dx = y1 - y0, x1 - x0
        t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / max(dy * dy + dx * dx, 1e-12), 0.0, 1.0)
        best = np.minimum(best, np.hypot(yy - y0 - t * dy, xx - x0 - t * dx))
    cover[sl] = np.clip(width / 2 + 0.5 - best * size, 0.0, 1.0)
    return cover


def _blob(rng: np.random.Generator, g: Grid, centre: Array, radius: float, size: int) -> Array:
    """Coverage of an irregular blob: a rotated ellipse with a noisy outline."""
    theta = rng.uniform(0, math.pi)
    a = radius * rng.uniform(0.8, 1.25)
    outline = 0.25 * radius * smooth_field(rng, size, 6)
    cover = np.zeros((size, size), dtype=np.float32)
    sl = _window(centre[None], 1.6 * radius, size)
    dy, dx = g[0][sl] - centre[0], g[1][sl] - centre[1]
    c, s = math.cos(theta), math.sin(theta)
    sdf = _ellipse(c * dx + s * dy, c * dy - s * dx, a, radius * radius / a) + outline[sl]
    cover[sl] = coverage(sdf, size)
    return cover


def _specks(rng: np.random.Generator, g: Grid, centre: Array, size: int) -> Array:
    """Coverage of a cluster of 5-12 small specks around ``centre``."""
    spots = centre + rng.normal(0.0, 0.025, (int(rng.integers(5, 13)), 2))
    radii = rng.uniform(2.0, 4.5, len(spots)) * max(size / 256, 0.5) / size
    cover = np.zeros((size, size), dtype=np.float32)
    sl = _window(spots, radii.max() + 1 / size, size)
    dist = np.min([np.hypot(g[0][sl] - y, g[1][sl] - x) - r for (y, x), r in zip(spots, radii, strict=True)],
                  axis=0)
    cover[sl] = coverage(dist, size)
    return cover


def _towards(rng: np.random.Generator, x: Array, lo: float, hi: float) -> Array:
    """Blend towards white or black (at random) by a factor in [lo, hi)."""
    k = rng.uniform(lo, hi)
    return x * (1.0 - k) + (k if rng.random() < 0.5 else 0.0)


def _defect(kind: str, normal: Normal, rng: np.random.Generator, g: Grid) -> tuple[Array, Array]:
    """(coverage H x W, target H x W x C) of one defect attempt; it blends the image towards target."""
    size = normal.image.shape[0]
    x = normal.image.astype(np.float32) / 255.0
    inside = normal.fg > 0.99
    if kind == "scratch":
        points = _walk(rng, inside, size, steps=int(rng.integers(8, 15)), step=0.03, turn=0.15)
        return _stroke(g, points, size, max(1.5, size / 85)) * normal.fg, _towards(rng, x, 0.45, 0.7)
    if kind == "crack":
        points = _walk(rng, inside, size, steps=int(rng.integers(8, 15)), step=0.03, turn=0.7)
        return _stroke(g, points, size, max(1.2, size / 100)) * normal.fg, x * rng.uniform(0.2, 0.45)
    if kind == "hole":
        cover = _blob(rng, g, _centre(rng, inside, size), rng.uniform(0.03, 0.06), size)
        return cover * normal.fg, x * 0.15 + 0.02
    if kind == "stain":
        cover = _blob(rng, g, _centre(rng, inside, size), rng.uniform(0.04, 0.08), size)
        cover *= rng.uniform(0.5, 0.75)
        if x.shape[2] == 1:
            return cover * normal.fg, _towards(rng, x, 0.5, 0.8)
        tint = rng.standard_normal(3).astype(np.float32)
        tint -= tint.mean()
        shift = 0.35 * tint / (np.linalg.norm(tint) + 1e-6) + rng.choice([-0.1, 0.1])
        return cover * normal.fg, np.broadcast_to(np.clip(x.mean(axis=(0, 1)) + shift, 0.0, 1.0), x.shape)
    if kind == "missing":
        if normal.background is None:
            cover = _blob(rng, g, _centre(rng, inside, size), rng.uniform(0.04, 0.08), size)
            flat = np.clip(x.mean(axis=(0, 1)) * (1.0 + rng.choice([-0.3, 0.3])), 0.0, 1.0)
            return cover, np.broadcast_to(flat, x.shape)
        cover = _blob(rng, g, _centre(rng, _outline(normal.fg), size), rng.uniform(0.05, 0.09), size)
        return cover * normal.fg, normal.background.astype(np.float32) / 255.0
    if kind == "contamination":
        cover = _specks(rng, g, _centre(rng, inside, size), size)
        colour = rng.uniform(0.0, 1.0, x.shape[2]).astype(np.float32)
        return 0.9 * cover * normal.fg, np.broadcast_to(colour, x.shape)
    raise ValueError(f"unknown defect kind {kind!r}; use one of {', '.join(DEFECT_KINDS)}")


def add_defect(normal: Normal, kind: str, rng: np.random.Generator) -> tuple[Array, Array]:
    """(defective uint8 image, bool mask); the mask is exactly the pixels changed by >= MASK_THRESHOLD."""
    size = normal.image.shape[0]
    g = pixel_grid(size)
    x = normal.image.astype(np.float32) / 255.0
    for _ in range(MAX_TRIES):
        cover, target = _defect(kind, normal, rng, g)
        a = cover[..., None]
        out = np.round(np.clip(x * (1.0 - a) + target * a, 0.0, 1.0) * 255.0).astype(np.uint8)
        mask = np.abs(out.astype(np.int16) - normal.image).max(axis=2) >= MASK_THRESHOLD
        if AREA_RANGE[0] <= mask.mean() <= AREA_RANGE[1]:
            return np.where(mask[..., None], out, normal.image), mask
    raise RuntimeError(f"no {kind} defect covering {AREA_RANGE} of the image after {MAX_TRIES} tries "
                       f"(size {size})")


# ------------------------------------------------------------------------------------------------ writers


def _save_png(path: Path, array: Array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array)
    image.save(path, compress_level=1)


def _write_category(folder: Path, category: str, cfg: SyntheticDataConfig) -> dict[str, Any]:
    size = cfg.image_size
    kinds = sorted(numpy_rng(cfg.seed, "synthetic", category).choice(DEFECT_KINDS, cfg.n_defect_types,
                                                                      replace=False).tolist())
    for split, folder_name, count in (("train", folder / "train" / "good", cfg.n_train),
                                      ("test_good", folder / "test" / "good", cfg.n_test_good)):
        rng = numpy_rng(cfg.seed, "synthetic", category, split)
        for i in range(count):
            _save_png(folder_name / f"{i:03d}.png", render_normal(category, rng, size).image)
    for kind in kinds:
        rng = numpy_rng(cfg.seed, "synthetic", category, "test", kind)
        for i in range(cfg.n_test_per_defect):
            image, mask = add_defect(render_normal(category, rng, size), kind, rng)
            _save_png(folder / "test" / kind / f"{i:03d}.png", image)
            _save_png(folder / "ground_truth" / kind / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)
    log.info("synthetic %s: %d train, %d good and %d defective test images (%s)", category, cfg.n_train,
             cfg.n_test_good, cfg.n_test_per_defect * len(kinds), ", ".join(kinds))
    return {"train": cfg.n_train, "test_good": cfg.n_test_good,
            "test_defective": cfg.n_test_per_defect * len(kinds), "defect_types": kinds}


def make_synthetic_mvtec(root: Path, categories: list[str], cfg: SyntheticDataConfig) -> dict[str, Any]:
    """Write a procedural dataset in MVTec AD layout for ``categories`` at ``root`` (replaced atomically)."""
    unknown = [c for c in categories if c not in MVTEC_CATEGORIES]
    if unknown:
        raise UsageError(f"{unknown}: no procedural look for these; synthetic data covers only the MVTec AD "
                         f"categories ({', '.join(MVTEC_CATEGORIES)})")
    with atomic_dir(root) as tmp:
        per_cat = {cat: _write_category(tmp / cat, cat, cfg) for cat in categories}
    return {"seed": cfg.seed, "image_size": cfg.image_size, "categories": per_cat}
