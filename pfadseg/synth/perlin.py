"""Perlin anomaly masks exactly as DeSTSeg/DRAEM make them (DeSTSeg's data/data_utils.py, DRAEM's perlin.py).

Two implementations of the same distribution:

* :func:`perlin_masks` draws a whole batch at once: masks are grouped by lattice resolution, the noise of a
  group is computed with array operations, and all maps are rotated together with ``grid_sample``. It is
  what the ``bank`` stage uses.
* :func:`perlin_mask_reference` makes one mask the way the reference code does (DRAEM's tiled-gradient
  noise, ``scipy.ndimage.rotate``); it is kept for tests and the benchmark.

Every random draw comes from an explicit ``np.random.Generator``; nothing here touches a global RNG.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from pfadseg.config import BankConfig

# Elements per noise chunk (masks x pixels): bounds the float32 temporaries of one step to ~200 MB.
_CHUNK_PIXELS = 1 << 22


def fade(t: np.ndarray) -> np.ndarray:
    """Perlin's quintic fade 6t^5 - 15t^4 + 10t^3 (DRAEM's rand_perlin_2d_np)."""
    return t * t * t * (t * (t * 6 - 15) + 10)


def _axis(size: int, res: int) -> tuple[np.ndarray, np.ndarray]:
    """Lattice cell index and in-cell position of each pixel: pixel i sits at i * res / size, as DRAEM."""
    pos = np.arange(size, dtype=np.float64) * (res / size)
    cell = np.floor(pos).astype(np.intp)
    return cell, (pos - cell).astype(np.float32)


def noise_from_angles(angles: np.ndarray, size: int) -> np.ndarray:
    """Gradient noise (x sqrt 2) of k fields from corner angles k x (rx+1) x (ry+1): float32 k x size x size.

    Rows follow the first lattice axis (DRAEM's ``res[0]``), columns the second.
    """
    _, rx1, ry1 = angles.shape
    ci, fu = _axis(size, rx1 - 1)
    cj, fv = _axis(size, ry1 - 1)
    gx = np.cos(angles).astype(np.float32)
    gy = np.sin(angles).astype(np.float32)
    u, v = fu[:, None], fv[None, :]

    def dot(di: int, dj: int) -> np.ndarray:
        rows, cols = (ci + di)[:, None], (cj + dj)[None, :]
        return gx[:, rows, cols] * (u - di) + gy[:, rows, cols] * (v - dj)

    n00, n10, n01, n11 = dot(0, 0), dot(1, 0), dot(0, 1), dot(1, 1)
    tu, tv = fade(u), fade(v)
    nx0 = n00 + tu * (n10 - n00)
    nx1 = n01 + tu * (n11 - n01)
    return (math.sqrt(2) * (nx0 + tv * (nx1 - nx0))).astype(np.float32)


def perlin_noise(n: int, size: int, res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """n single-octave Perlin fields at lattice resolution ``res``, values in [-1, 1] (as DRAEM's).

    Gradient angles are U[0, 2pi) at the (res+1) x (res+1) corners, drawn as one block from ``rng``.
    """
    angles = 2 * math.pi * rng.random((n, res[0] + 1, res[1] + 1))
    return noise_from_angles(angles, size)


def rotation_theta(degrees: torch.Tensor, quarter_turns: torch.Tensor | None = None) -> torch.Tensor:
    """``affine_grid`` matrices (B x 2 x 3) rotating counter-clockwise (as PIL) about the image centre.

    ``quarter_turns`` (0..3) are applied as an exact integer rotation on top of ``degrees``, so a multiple of
    90 degrees permutes pixels instead of going through an inexact cos/sin.
    """
    rad = torch.deg2rad(degrees)
    cos, sin = torch.cos(rad), torch.sin(rad)
    if quarter_turns is not None:
        # cos and sin of k * 90 degrees, exactly, without a host-to-device table.
        qc = (quarter_turns == 0).to(cos.dtype) - (quarter_turns == 2).to(cos.dtype)
        qs = (quarter_turns == 1).to(cos.dtype) - (quarter_turns == 3).to(cos.dtype)
        cos, sin = qc * cos - qs * sin, qs * cos + qc * sin
    zero = torch.zeros_like(cos)
    # Output (x, y) samples the input at R(-angle) (x, y); y points down, so this turns the picture CCW.
    return torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], -2)


def rotation_grid(theta: torch.Tensor, size: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """``F.affine_grid(theta, (B, C, size, size), align_corners=False)`` for a linear theta, broadcast (into
    ``out``, B x size x size x 2, if given)."""
    base = (torch.arange(size, device=theta.device, dtype=theta.dtype) * 2 + 1) / size - 1
    bx, by = base.view(1, 1, size), base.view(1, size, 1)
    t = theta[..., None, None]
    grid = theta.new_empty(len(theta), size, size, 2) if out is None else out
    torch.add(t[:, 0, 0] * bx, t[:, 0, 1] * by, out=grid[..., 0])
    torch.add(t[:, 1, 0] * bx, t[:, 1, 1] * by, out=grid[..., 1])
    return grid


def rotate_maps(maps: np.ndarray, degrees: np.ndarray) -> np.ndarray:
    """Rotate k x S x S maps about their centres, bilinear, no expansion, zero fill (as imgaug's Affine)."""
    x = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32)).unsqueeze(1)
    theta = rotation_theta(torch.from_numpy(np.asarray(degrees, dtype=np.float32)))
    grid = rotation_grid(theta, maps.shape[-1])
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.squeeze(1).numpy()


def perlin_masks_with_exponents(
    n: int, size: int, cfg: BankConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like :func:`perlin_masks`, also returning each mask's lattice exponents (tx, ty)."""
    lo, hi = cfg.perlin_min_exponent, cfg.perlin_max_exponent
    tx = rng.integers(lo, hi + 1, size=n)
    ty = rng.integers(lo, hi + 1, size=n)
    degrees = rng.uniform(-cfg.rotation_degrees, cfg.rotation_degrees, size=n)
    masks = np.empty((n, size, size), dtype=bool)
    chunk = max(1, _CHUNK_PIXELS // (size * size))
    for ex, ey in sorted(set(zip(tx.tolist(), ty.tolist(), strict=True))):
        (index,) = np.nonzero((tx == ex) & (ty == ey))
        for start in range(0, len(index), chunk):
            part = index[start:start + chunk]
            noise = perlin_noise(len(part), size, (2**ex, 2**ey), rng)
            masks[part] = rotate_maps(noise, degrees[part]) > cfg.perlin_threshold
    return masks, tx, ty


def perlin_masks(n: int, size: int, cfg: BankConfig, rng: np.random.Generator) -> np.ndarray:
    """n Perlin anomaly masks, bool n x size x size: scales, noise, rotation, threshold (as DeSTSeg's perlin_noise)."""
    return perlin_masks_with_exponents(n, size, cfg, rng)[0]


def perlin_noise_reference(size: int, res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """One Perlin field the way DRAEM's ``rand_perlin_2d_np`` builds it (tiled gradients).

    Needs ``size`` divisible by both resolutions, as the reference code does.
    """
    if size % res[0] or size % res[1]:
        raise ValueError(f"reference Perlin noise needs size {size} divisible by the lattice {res}")
    d = (size // res[0], size // res[1])
    grid = np.stack(np.meshgrid(np.arange(size) * res[0] / size, np.arange(size) * res[1] / size,
                                indexing="ij"), axis=-1) % 1
    angles = 2 * math.pi * rng.random((1, res[0] + 1, res[1] + 1))[0]
    gradients = np.stack((np.cos(angles), np.sin(angles)), axis=-1)

    def tile(rows: slice, cols: slice) -> np.ndarray:
        return np.repeat(np.repeat(gradients[rows, cols], d[0], axis=0), d[1], axis=1)

    def dot(grad: np.ndarray, shift: tuple[int, int]) -> np.ndarray:
        return ((grid + np.asarray(shift, dtype=np.float64)) * grad).sum(axis=-1)

    n00 = dot(tile(slice(0, -1), slice(0, -1)), (0, 0))
    n10 = dot(tile(slice(1, None), slice(0, -1)), (-1, 0))
    n01 = dot(tile(slice(0, -1), slice(1, None)), (0, -1))
    n11 = dot(tile(slice(1, None), slice(1, None)), (-1, -1))
    t = fade(grid)
    nx0 = n00 + t[..., 0] * (n10 - n00)
    nx1 = n01 + t[..., 0] * (n11 - n01)
    return math.sqrt(2) * (nx0 + t[..., 1] * (nx1 - nx0))


def perlin_mask_reference(size: int, cfg: BankConfig, rng: np.random.Generator) -> np.ndarray:
    """One mask, DeSTSeg-style: scales, noise, ``ndimage.rotate`` (order 1, zero fill), threshold (1.4)."""
    tx = int(rng.integers(cfg.perlin_min_exponent, cfg.perlin_max_exponent + 1))
    ty = int(rng.integers(cfg.perlin_min_exponent, cfg.perlin_max_exponent + 1))
    noise = perlin_noise_reference(size, (2**tx, 2**ty), rng)
    angle = rng.uniform(-cfg.rotation_degrees, cfg.rotation_degrees)
    rotated = ndimage.rotate(noise, angle, reshape=False, order=1, mode="constant", cval=0.0)
    return rotated > cfg.perlin_threshold
