"""The image score of an anomaly map (DeSTSeg's eval.py: mean of the top-k pixels; ADPS Algorithm 1: max of the
Gaussian-smoothed map): the rule an architecture uses, and its scores of N x H x W maps in float64."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from pfadseg.errors import PfadsegError


class ScoreError(PfadsegError, ValueError):
    """Maps a rule cannot score (not N x H x W, not finite, fewer pixels than top_k)."""


@dataclass(frozen=True)
class ScoreRule:
    """Image score from an anomaly map: top-k mean or, with ``sigma``, the max of the Gaussian-smoothed map."""

    top_k: int
    sigma: float | None = None

    def describe(self) -> str:
        return f"mean of the top-{self.top_k} pixels" if self.sigma is None else \
            f"max of the Gaussian-smoothed map (sigma {self.sigma:g})"

    def problem(self, size: int) -> str | None:
        """Why the rule cannot score size x size maps, or None."""
        if self.sigma is None and not 1 <= self.top_k <= size * size:
            return f"top_k must lie in [1, {size * size}] (pixels per map), got {self.top_k}"
        return None


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
