"""The detector's torch image score equals the numpy rule that scores stored maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pfadseg.score.maps import SmoothedMax, TopKMean, score_maps, score_module
from pfadseg.score.rule import ScoreRule


def _maps(size: int, scale: float = 1.0, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((3, size, size)) * scale).astype(np.float32)


@pytest.mark.parametrize(("top_k", "scale"), [(1, 1.0), (10, 1.0), (100, 8.0), (4096, 1.0)])
def test_top_k_mean_equals_the_numpy_rule_exactly(top_k: int, scale: float) -> None:
    maps = _maps(64, scale)
    module = score_module(ScoreRule(top_k))
    assert isinstance(module, TopKMean)
    scores = module(torch.from_numpy(maps)[:, None])
    assert scores.dtype == torch.float64
    np.testing.assert_array_equal(scores.numpy(), score_maps(ScoreRule(top_k), maps))


@pytest.mark.parametrize(("size", "sigma"), [(7, 0.5), (7, 20.0), (32, 4.0), (33, 1.5), (32, 0.0)])
def test_smoothed_max_equals_scipy_gaussian_filter(size: int, sigma: float) -> None:
    """scipy's reflect border, a kernel wider than the map (sigma 20 on 7 px) and no smoothing (sigma 0)."""
    maps = _maps(size, seed=size)
    maps[0, 0, :3] = 5.0  # a peak on the border, where the reflection decides the smoothed max
    module = score_module(ScoreRule(10, sigma))
    assert isinstance(module, SmoothedMax)
    scores = module(torch.from_numpy(maps)[:, None])
    assert scores.dtype == torch.float64
    np.testing.assert_allclose(scores.numpy(), score_maps(ScoreRule(10, sigma), maps), rtol=1e-12, atol=0)
