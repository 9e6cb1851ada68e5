"""Image scores by a :class:`~pfadseg.score.rule.ScoreRule`: the torch module a detector scores its maps with
(evaluation, calibration, prediction and ONNX export), and the same rule in numpy for maps already stored; both
float64."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from pfadseg.errors import PfadsegError
from pfadseg.score.rule import ScoreRule

GAUSSIAN_TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default: the kernel reaches 4 sigma


class ScoreError(PfadsegError, ValueError):
    """Maps a rule cannot score (not N x H x W, not finite, fewer pixels than top_k)."""


class TopKMean(nn.Module):
    """Mean of the top-k pixels of each map, float64 (DeSTSeg's eval.py): B x 1 x H x W -> B."""

    def __init__(self, top_k: int) -> None:
        super().__init__()
        self.top_k = int(top_k)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return torch.topk(maps.flatten(1).double(), self.top_k, dim=1).values.mean(dim=1)


def reflected_gaussian(size: int, sigma: float) -> np.ndarray:
    """The size x size matrix of scipy's 1-D Gaussian filter (``mode="reflect"``, truncated at 4 sigma): row i
    weighs the pixels whose reflections fall within the kernel around pixel i."""
    radius = int(GAUSSIAN_TRUNCATE * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * offsets**2 / sigma**2)
    kernel /= kernel.sum()
    source = (np.arange(size)[:, None] + offsets) % (2 * size)  # reflect: d c b a | a b c d | d c b a
    source = np.where(source < size, source, 2 * size - 1 - source)
    matrix = np.zeros((size, size))
    np.add.at(matrix, (np.repeat(np.arange(size), offsets.size), source.ravel()), np.tile(kernel, size))
    return matrix


class SmoothedMax(nn.Module):
    """Max of each Gaussian-smoothed map, float64 (ADPS Algorithm 1): B x 1 x H x W -> B. The smoothing is
    scipy's ``gaussian_filter`` (reflect border) as two matrix products, one per axis."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = float(sigma)
        self._filters: dict[tuple[int, torch.device], torch.Tensor] = {}  # made on a size's first call

    def _filter(self, size: int, device: torch.device) -> torch.Tensor:
        key = (int(size), device)  # int: a traced size (ONNX export) becomes the constant it is there
        if key not in self._filters:
            self._filters[key] = torch.as_tensor(reflected_gaussian(key[0], self.sigma), device=device)
        return self._filters[key]

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        maps = maps[:, 0].double()
        if self.sigma > 0:
            rows, cols = self._filter(maps.shape[-2], maps.device), self._filter(maps.shape[-1], maps.device)
            maps = rows @ maps @ cols.T
        return maps.flatten(1).amax(dim=1)


def score_module(rule: ScoreRule) -> nn.Module:
    """``rule`` as a torch module: B x 1 x H x W maps -> B float64 scores."""
    return TopKMean(rule.top_k) if rule.sigma is None else SmoothedMax(rule.sigma)


def top_k_means(maps: np.ndarray, top_k: int) -> np.ndarray:
    """Mean of the top-k pixels of each map (maps already checked), float64."""
    flat = maps.reshape(maps.shape[0], -1)
    if not 1 <= top_k <= flat.shape[1]:
        raise ScoreError(f"top_k must lie in [1, {flat.shape[1]}] (pixels per map), got {top_k}")
    top = np.partition(flat, flat.shape[1] - top_k, axis=1)[:, flat.shape[1] - top_k :]
    return top.mean(axis=1, dtype=np.float64)


def smoothed_maxima(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Max of each Gaussian-smoothed map (scipy, reflect border; maps already checked), float64."""
    maps = maps.astype(np.float64)
    if sigma > 0:
        maps = ndimage.gaussian_filter(maps, sigma=sigma, axes=(1, 2))
    return maps.reshape(maps.shape[0], -1).max(axis=1)


def score_maps(rule: ScoreRule, maps: Any) -> np.ndarray:
    """The image scores of ``rule`` for N x H x W finite maps, float64."""
    maps = np.asarray(maps)
    if maps.ndim != 3 or 0 in maps.shape or not np.isfinite(maps).all():
        raise ScoreError(f"image scores need finite, non-empty N x H x W maps, got shape {maps.shape}")
    return top_k_means(maps, rule.top_k) if rule.sigma is None else smoothed_maxima(maps, rule.sigma)
