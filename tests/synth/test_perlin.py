"""Perlin noise and masks against DeSTSeg's data/data_utils.py, DRAEM's construction and the ``noise`` package."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats

from pfadseg.config import BankConfig, Config
from pfadseg.synth import perlin
from pfadseg.synth.perlin import (
    perlin_mask_reference,
    perlin_masks,
    perlin_masks_with_exponents,
    perlin_noise,
    perlin_noise_reference,
    rotate_maps,
)


@pytest.fixture
def bank_cfg(make_config: Callable[..., Config]) -> BankConfig:
    return make_config().bank


def test_noise_shape_range_and_zeros_at_lattice_points() -> None:
    field = perlin_noise(8, 64, (4, 8), np.random.default_rng(0))
    assert field.shape == (8, 64, 64) and field.dtype == np.float32
    # Unit gradients bound classic 2-D Perlin noise by sqrt(2)/2, so x sqrt(2) gives [-1, 1].
    assert np.abs(field).max() <= 1 + 1e-6
    assert field.std() > 0.1
    # Lattice corners are every 64/4 = 16 rows and 64/8 = 8 columns; gradient noise is 0 there.
    assert np.abs(field[:, ::16, ::8]).max() < 1e-6


@pytest.mark.parametrize("res", [(1, 1), (4, 8), (32, 2), (16, 16)])
def test_batched_noise_equals_draem_construction(res: tuple[int, int]) -> None:
    fast = perlin_noise(1, 64, res, np.random.default_rng(7))[0]
    slow = perlin_noise_reference(64, res, np.random.default_rng(7))
    np.testing.assert_allclose(fast, slow, atol=1e-5)


def test_masks_are_seeded(bank_cfg: BankConfig) -> None:
    a = perlin_masks(32, 64, bank_cfg, np.random.default_rng(3))
    b = perlin_masks(32, 64, bank_cfg, np.random.default_rng(3))
    c = perlin_masks(32, 64, bank_cfg, np.random.default_rng(4))
    assert a.shape == (32, 64, 64) and a.dtype == bool
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def _within(value: float, target: float, se: float, k: float = 4.0) -> bool:
    return abs(value - target) <= k * se


def test_empty_share_matches_protocol(bank_cfg: BankConfig) -> None:
    # Empty masks come from coarse lattices (protocol: 54 % at tx+ty = 0, ~37 % at 1, 0 % from 4 on), whose
    # few lattice cells span many pixels at any size, so 64 px reproduces the 256 px shares (checked: 5.4 %
    # over 8,000 masks at 256 px). Tolerance: 4 binomial standard errors sqrt(p(1-p)/n) of each share.
    n = 4000
    masks, tx, ty = perlin_masks_with_exponents(n, 64, bank_cfg, np.random.default_rng(11))
    empty = ~masks.any(axis=(1, 2))
    s = tx + ty
    p = 0.0525
    assert _within(empty.mean(), p, math.sqrt(p * (1 - p) / n)), empty.mean()
    for total, share in ((0, 0.54), (1, 0.37)):
        k = int((s == total).sum())
        assert _within(empty[s == total].mean(), share, math.sqrt(share * (1 - share) / k)), (total, k)
    # Protocol: 0 % from tx+ty >= 4 at 256 px; at 64 px the finest lattice (2 px cells) rarely loses a peak.
    assert empty[s >= 4].mean() <= 0.002


def test_coverage_matches_protocol_at_256(bank_cfg: BankConfig) -> None:
    # Coverage depends on the pixel grid (fine lattices are undersampled at 64 px), so it is checked at the
    # protocol's 256 px: mean 4.8 %, median 4.6 %, p90 7.4 % of pixels. Tolerance: 4 standard errors, the
    # SE of the mean being sd/sqrt(n) and that of a quantile q being sqrt(q(1-q)/n)/density (estimated).
    n = 400
    coverage = perlin_masks(n, 256, bank_cfg, np.random.default_rng(5)).mean(axis=(1, 2))
    assert _within(coverage.mean(), 0.048, coverage.std() / math.sqrt(n)), coverage.mean()
    for q, target in ((50, 0.046), (90, 0.074)):
        kde = stats.gaussian_kde(coverage)
        se = math.sqrt(q / 100 * (1 - q / 100) / n) / float(kde(np.percentile(coverage, q))[0])
        assert _within(np.percentile(coverage, q), target, se), (q, np.percentile(coverage, q), se)


def test_rotation_fills_with_zero_no_anomaly(bank_cfg: BankConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    rotated = rotate_maps(np.ones((1, 64, 64), dtype=np.float32), np.array([45.0]))[0]
    assert rotated[0, 0] == rotated[0, -1] == rotated[-1, 0] == rotated[-1, -1] == 0.0
    assert rotated[24:40, 24:40].min() == pytest.approx(1.0)
    # Force noise that is above the threshold everywhere: only the rotated-in corners can be unmasked.
    monkeypatch.setattr(perlin, "perlin_noise", lambda n, size, res, rng: np.ones((n, size, size)))
    masks = perlin_masks(200, 64, bank_cfg, np.random.default_rng(0))
    assert masks[:, 16:48, 16:48].all()
    corners = masks[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    # The corner pixel leaves the image once |angle| exceeds ~1.8 degrees, until ~88.2: ~96 % of U[-90, 90].
    assert (~corners).all(axis=1).mean() > 0.9


def test_reference_masks_have_the_same_distribution(bank_cfg: BankConfig) -> None:
    # Two-sample checks, batched vs DeSTSeg-style per-sample masks at 64 px: empty shares within 4 SE of
    # their difference, sqrt(p(1-p)(1/n1 + 1/n2)); coverage distributions by Kolmogorov-Smirnov, p > 0.001.
    rng = np.random.default_rng(21)
    n_ref, n_fast = 1000, 2000
    ref = np.array([perlin_mask_reference(64, bank_cfg, rng).mean() for _ in range(n_ref)])
    fast = perlin_masks(n_fast, 64, bank_cfg, rng).mean(axis=(1, 2))
    p = ((ref == 0).sum() + (fast == 0).sum()) / (n_ref + n_fast)
    assert _within((ref == 0).mean(), (fast == 0).mean(), math.sqrt(p * (1 - p) * (1 / n_ref + 1 / n_fast)))
    assert stats.ks_2samp(ref, fast).pvalue > 1e-3


def test_second_moments_match_noise_pnoise2() -> None:
    """Cross-check against ``noise.pnoise2`` (Casey Duncan's improved Perlin noise), one octave.

    pnoise2 picks each corner gradient from 16 fixed vectors ((+-1, +-1) and axis vectors, via a hash),
    ours at a uniform angle on the unit circle, so value distributions and threshold coverage differ by
    design. What both share is the construction: the same lattice alignment (pixel i at i * res / size, with
    repeat = res), the quintic fade and dot products with the corner offsets. For zero-mean, uncorrelated
    gradients with isotropic second moment E[g g^T] = sigma^2 I, the covariance of the field at any two
    points is sigma^2 times a function of the construction only. sigma^2 is 1/2 for unit vectors and 10/16
    for pnoise2's set, so after the same sqrt(2) scaling: (a) the variance at every in-cell position must be
    0.8 times pnoise2's, and (b) the autocorrelation at short lags must be the same. pnoise2's corner
    gradients are hashed, not drawn independently, and with repeat = res the 64 px window is one period of
    its field; both add negative correlation that grows with the lag (measured: 0.001, 0.003, 0.006, 0.011
    at lags 1-4, 0.035 at 7), so lags up to 3 pixels (of 8 per cell) are compared. Those already fix the
    lattice scale and the fade. Tolerances: the variance ratio per row phase comes from 128 fields x 64
    cells (relative SE ~3 %), so 0.8 +- 0.1; the autocorrelations within 0.02.
    """
    noise = pytest.importorskip("noise")  # the dev extra installs it; a bare GPU image need not (no wheel on PyPI)
    res, size, n = 8, 64, 128
    d = size // res
    ours = perlin_noise(n, size, (res, res), np.random.default_rng(0)).astype(np.float64)
    pts = np.arange(size) * res / size
    theirs = math.sqrt(2) * np.array([
        [[noise.pnoise2(float(x), float(y), octaves=1, repeatx=res, repeaty=res, base=b) for y in pts]
         for x in pts]
        for b in range(n)
    ])

    def variance_by_row_phase(f: np.ndarray) -> np.ndarray:
        return (f**2).reshape(len(f), res, d, res, d).mean(axis=(0, 1, 3, 4))

    def autocorrelation(f: np.ndarray, lag: int) -> float:
        return float((f[:, :, :-lag] * f[:, :, lag:]).mean() / (f**2).mean())

    ratio = variance_by_row_phase(ours) / variance_by_row_phase(theirs)
    np.testing.assert_allclose(ratio, 0.8, atol=0.1)
    for lag in (1, 2, 3):
        assert abs(autocorrelation(ours, lag) - autocorrelation(theirs, lag)) < 0.02, lag
    # Both are exactly 0 on the lattice.
    assert np.abs(theirs[:, ::d, ::d]).max() < 1e-6 and np.abs(ours[:, ::d, ::d]).max() < 1e-6


def test_reference_needs_divisible_size(bank_cfg: BankConfig) -> None:
    with pytest.raises(ValueError, match="divisible"):
        perlin_noise_reference(48, (32, 1), np.random.default_rng(0))
    cfg = dataclasses.replace(bank_cfg, perlin_min_exponent=0, perlin_max_exponent=0)
    assert perlin_mask_reference(48, cfg, np.random.default_rng(0)).shape == (48, 48)
