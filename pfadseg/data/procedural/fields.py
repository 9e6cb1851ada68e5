"""Shared by the procedural generators (:mod:`.scenes`, :mod:`.textures`): pixel grids, smooth random fields,
object poses, anti-aliased coverage and the conversion to uint8."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

Array = np.ndarray
Grid = tuple[Array, Array]  # y and x pixel-centre coordinates in [0, 1), float32 H x W


def pixel_grid(size: int) -> Grid:
    t = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy, xx = np.meshgrid(t, t, indexing="ij")
    return yy, xx


def smooth_field(rng: np.random.Generator, size: int, cells_y: float, cells_x: float | None = None) -> Array:
    """Smooth random field (bicubic upsampling of a coarse Gaussian lattice), std about 0.7."""
    cy = int(np.clip(round(cells_y), 1, size // 2))
    cx = int(np.clip(round(cells_y if cells_x is None else cells_x), 1, size // 2))
    coarse = rng.standard_normal((cy + 1, cx + 1)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), dtype=np.float32)


def fractal_field(rng: np.random.Generator, size: int, cells: float, octaves: int = 4) -> Array:
    """Sum of smooth fields at doubling frequencies with halving amplitudes (Perlin-like)."""
    total = np.zeros((size, size), dtype=np.float32)
    for octave in range(octaves):
        total += 0.5**octave * smooth_field(rng, size, cells * 2**octave)
    return total / math.sqrt(sum(0.25**o for o in range(octaves)))


def object_pose(rng: np.random.Generator, g: Grid, *, rotate: bool, shift: float = 0.02,
          tilt: float = 0.05) -> tuple[Array, Array]:
    """Object coordinates (u along the object's axis, v across) after a random shift, rotation and scale."""
    yy, xx = g
    cy, cx = (0.5 + shift * rng.standard_normal(2)).astype(np.float32)
    theta = rng.uniform(0, 2 * math.pi) if rotate else rng.normal(0.0, tilt)
    scale = 1.0 + 0.03 * rng.standard_normal()
    dx, dy = xx - cx, yy - cy
    c, s = math.cos(theta), math.sin(theta)
    inv = np.float32(1.0 / scale)
    return (np.float32(c) * dx + np.float32(s) * dy) * inv, (np.float32(c) * dy - np.float32(s) * dx) * inv


def coverage(sdf: Array, size: int) -> Array:
    """Anti-aliased coverage of the region ``sdf < 0`` (sdf in image units)."""
    return np.clip(0.5 - sdf * size, 0.0, 1.0).astype(np.float32)


def to_uint8(image: Array, channels: int) -> Array:
    if channels == 1:
        image = (image @ LUMA)[..., None]
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
