"""Offline stand-in for DTD: procedural textures in its layout (``images/<class>/<class>_0001.jpg``), ten kinds
of periodic or noisy field, each mixing two colours."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pfadseg.config import ProceduralTexturesConfig
from pfadseg.data.procedural.fields import Array, coverage, fractal_field, object_pose, pixel_grid, to_uint8
from pfadseg.fsio import atomic_dir
from pfadseg.seeding import numpy_rng

# Each kind maps (rng, rotated coordinates u/v, size, period) to a field in [0, 1] that mixes two colours.

TextureKind = Callable[[np.random.Generator, Array, Array, int, float], Array]


def _banded(rng: np.random.Generator, u: Array, v: Array, size: int, period: float) -> Array:
    return 0.5 + 0.5 * np.tanh(3.0 * np.sin(2 * math.pi * u / period))


def _chequered(rng: np.random.Generator, u: Array, v: Array, size: int, period: float) -> Array:
    return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)


def _blotchy(rng: np.random.Generator, u: Array, v: Array, size: int, period: float) -> Array:
    return np.clip(0.5 + 1.5 * fractal_field(rng, size, 0.5 / period), 0.0, 1.0)


def _marbled(rng: np.random.Generator, u: Array, v: Array, size: int, period: float) -> Array:
    return 0.5 + 0.5 * np.sin(2 * math.pi * (u / period + 1.5 * fractal_field(rng, size, 3)))


def _dotted(rng: np.random.Generator, u: Array, v: Array, size: int, period: float) -> Array:
    du, dv = (u / period) % 1.0 - 0.5, (v / period) % 1.0 - 0.5
    return coverage((np.hypot(du, dv) - rng.uniform(0.2, 0.4)) * period, size)


def _wavy(rng: np.random.Generator, u: Array, v: Array, size: int, period: float) -> Array:
    warp = 0.4 * period * np.sin(2 * math.pi * v / (3 * period))
    return 0.5 + 0.5 * np.sin(2 * math.pi * (u + warp) / period)


def _cellular(rng: np.random.Generator, u: Array, v: Array, size: int, period: float) -> Array:
    n = int(np.clip(round(1.0 / period**2 / 4), 4, 64))
    seeds = rng.uniform(-0.8, 0.8, (n, 2)).astype(np.float32)
    dist = np.stack([np.hypot(u - su, v - sv) for su, sv in seeds])
    order = np.sort(dist, axis=0)
    values = rng.uniform(0.3, 1.0, n).astype(np.float32)[np.argmin(dist, axis=0)]
    return values * np.clip((order[1] - order[0]) * size / 2.0, 0.0, 1.0)


def _plaid(rng: np.random.Generator, u: Array, v: Array, size: int, period: float) -> Array:
    bands_u, bands_v = np.sign(np.sin(2 * math.pi * u / period)), np.sign(np.sin(2 * math.pi * v / period))
    return 0.25 * (2.0 + bands_u + bands_v)


def _zigzagged(rng: np.random.Generator, u: Array, v: Array, size: int, period: float) -> Array:
    tooth = np.abs((u / (2 * period)) % 1.0 - 0.5) * period
    return 0.5 + 0.5 * np.tanh(3.0 * np.sin(2 * math.pi * (v + tooth) / period))


def _grainy(rng: np.random.Generator, u: Array, v: Array, size: int, period: float) -> Array:
    return np.clip(0.5 + fractal_field(rng, size, 2.0 / period, octaves=3), 0.0, 1.0)


TEXTURE_KINDS: dict[str, TextureKind] = {
    "banded": _banded, "chequered": _chequered, "blotchy": _blotchy, "marbled": _marbled, "dotted": _dotted,
    "wavy": _wavy, "cellular": _cellular, "plaid": _plaid, "zigzagged": _zigzagged, "grainy": _grainy,
}


def texture_class_name(index: int) -> str:
    """Class name of texture class ``index``: the kinds in order, then numbered repeats (banded2, ...)."""
    names = list(TEXTURE_KINDS)
    name = names[index % len(names)]
    return name if index < len(names) else f"{name}{index // len(names) + 1}"


def render_texture(kind: str, rng: np.random.Generator, size: int, period: float, angle: float,
                   palette: Array) -> Array:
    """One uint8 H x W x 3 texture of ``kind``: the field mixes palette[0] and palette[1], plus grain."""
    g = pixel_grid(size)
    u, v = object_pose(rng, g, rotate=False, shift=0.5, tilt=0.0)
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * u + s * v, c * v - s * u
    field = TEXTURE_KINDS[kind](rng, u, v, size, max(period * rng.uniform(0.85, 1.15), 4 / size))[..., None]
    colours = palette * (1.0 + 0.05 * rng.standard_normal((2, 3))).astype(np.float32)
    image = colours[0] * (1.0 - field) + colours[1] * field
    image *= (1.0 + 0.05 * fractal_field(rng, size, 8))[..., None]
    return to_uint8(image, 3)


def make_procedural_textures(root: Path, cfg: ProceduralTexturesConfig) -> dict[str, Any]:
    """Write DTD-layout textures ``<root>/images/<class>/<class>_0001.jpg`` (``root`` replaced atomically)."""
    with atomic_dir(root) as tmp:
        for index in range(cfg.n_classes):
            name = texture_class_name(index)
            kind = name.rstrip("0123456789")
            rng = numpy_rng(cfg.seed, "textures", name)
            period, angle = rng.uniform(1 / 24, 1 / 6), rng.uniform(0, math.pi)
            palette = rng.uniform(0.05, 0.95, (2, 3)).astype(np.float32)
            folder = tmp / "images" / name
            folder.mkdir(parents=True)
            for i in range(cfg.per_class):
                tilt = angle + rng.normal(0.0, 0.15)
                image = render_texture(kind, rng, cfg.image_size, period, tilt, palette)
                Image.fromarray(image).save(folder / f"{name}_{i + 1:04d}.jpg", quality=90)
    return {"classes": cfg.n_classes, "images": cfg.n_classes * cfg.per_class, "image_size": cfg.image_size,
            "seed": cfg.seed}

