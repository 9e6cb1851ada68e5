"""Threshold calibration on synthetic anomalies: the rule exactly (a perfect and a noisy stub detector, brute
force), determinism, balance, errors, and a real trained run. No test data is ever involved: the calibrator
only takes a composer (here built from constant images and in-memory masks)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from pfadseg.calibrate import (
    PIXEL_BITS,
    RULE,
    CalibrationError,
    calibrate_run,
    calibrate_threshold,
    image_threshold_f1,
    pixel_threshold_f1,
)
from pfadseg.config import Config
from pfadseg.data.images import load_train_set, normalize
from pfadseg.metrics import image_scores
from pfadseg.models.detector import Detection
from pfadseg.score.maps import score_module
from pfadseg.score.rule import ScoreRule
from pfadseg.synth.bank import AnomalyBank
from pfadseg.synth.composer import BatchComposer
from tests.predict.conftest import CALIBRATION_SAMPLES, CATEGORY, TrainedRun

SIZE = 32
GRAY = 200  # normal images are GRAY + noise of up to +-10; textures stay below 100: anomalies differ by far more
TOP_K = 5


def _masks(n: int, empty_every: int) -> np.ndarray:
    """n packed S x S masks: random rectangles, every ``empty_every``-th one empty."""
    rng = np.random.default_rng(3)
    masks = np.zeros((n, SIZE, SIZE), dtype=bool)
    for i in range(n):
        if empty_every and i % empty_every == 0:
            continue
        h, w = rng.integers(1, 12, size=2)
        r, c = rng.integers(0, SIZE - h), rng.integers(0, SIZE - w)
        masks[i, r : r + h, c : c + w] = True
    return np.packbits(masks, axis=-1)


def _composer(cfg: Config, seed: int, *, empty_every: int = 4) -> BatchComposer:
    rng = np.random.default_rng(5)
    noise = np.stack([rng.integers(-a, a + 1, (3, SIZE, SIZE)) for a in (1, 4, 10)])  # 3 images, 3 noise levels
    images = torch.from_numpy((GRAY + noise).astype(np.uint8))
    textures = torch.from_numpy(rng.integers(0, 100, (4, 3, SIZE, SIZE), dtype=np.uint8))
    generator = torch.Generator().manual_seed(seed)
    return BatchComposer(images, torch.from_numpy(_masks(16, empty_every)), textures, "none", cfg.bank,
                         cfg.train.augment, generator)


class PerfectDetector(nn.Module):
    """Finds exactly the pixels that differ from the normal images by more than their noise: the mask."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("normal", normalize(torch.full((1, 3, 1, 1), GRAY / 255)))
        self.score = score_module(ScoreRule(TOP_K))

    def forward(self, x: torch.Tensor) -> Detection:
        seg = ((x - self.normal).abs().amax(dim=1, keepdim=True) > 0.2).float()  # noise < 0.18, anomalies > 0.3
        return Detection(seg, self.score(seg), seg)


class NoisyDetector(PerfectDetector):
    """The mask blurred, plus a response to the images' noise: imperfect (overlapping scores), deterministic."""

    def forward(self, x: torch.Tensor) -> Detection:
        mask = super().forward(x).anomaly_map
        blurred = nn.functional.avg_pool2d(mask, 5, stride=1, padding=2)
        seg = (0.5 * blurred + 0.5 * torch.sigmoid(20 * (x - self.normal)[:, :1])).clamp(0, 1)
        return Detection(seg, self.score(seg), seg)


def _replay(composer: BatchComposer, detector: nn.Module, n: int, batch: int) -> tuple[np.ndarray, ...]:
    """The calibration set as the documented rule defines it, drawn again: normal maps, anomalous maps, masks."""
    normal, anomalous, masks = [], [], []
    while len(normal) < n or len(anomalous) < n:
        sample = composer.sample(batch)
        with torch.inference_mode():
            for i in range(batch):
                if len(normal) < n:
                    normal.append(detector(sample["img_origin"][i : i + 1])[0][0, 0].numpy())
                if sample["mask"][i].any() and len(anomalous) < n:
                    anomalous.append(detector(sample["img_aug"][i : i + 1])[0][0, 0].numpy())
                    masks.append(sample["mask"][i, 0].numpy() > 0.5)
    return np.stack(normal), np.stack(anomalous), np.stack(masks)


def _f1(pred: np.ndarray, truth: np.ndarray) -> float:
    tp = np.sum(pred & truth)
    return 2 * tp / (np.sum(pred) + np.sum(truth))


def test_a_perfect_detector_separates_perfectly(tiny_config: Callable[..., Config]) -> None:
    cfg = tiny_config()
    n, batch = 24, 8
    result = calibrate_threshold(PerfectDetector(), _composer(cfg, 11), n_samples=n, batch_size=batch,
                                 score=ScoreRule(TOP_K), device="cpu", amp=False)
    assert result["image_f1"] == 1.0 and result["pixel_f1"] == 1.0
    assert result["n_normal"] == result["n_anomalous"] == n
    assert result["n_draws"] > n, "a quarter of the masks are empty: more draws than anomalies are needed"
    assert result["rule"] == RULE.format(score=ScoreRule(TOP_K).describe())
    normal, anomalous, masks = _replay(_composer(cfg, 11), PerfectDetector(), n, batch)
    assert (normal == 0).all() and np.array_equal(anomalous, masks.astype(np.float32))
    # image: normal scores are 0, anomalous ones min(area, k) / k > 0; the threshold is the middle of the gap
    scores = image_scores(anomalous, TOP_K)
    assert result["image_threshold"] == pytest.approx(scores.min() / 2, rel=1e-12)
    # pixel: values 0 and 1, the gap between bin 0 and bin 2^16: its middle
    assert result["pixel_threshold"] == (1 + 2**PIXEL_BITS) / 2 / 2**PIXEL_BITS


def test_the_rule_matches_brute_force_and_is_deterministic(tiny_config: Callable[..., Config]) -> None:
    cfg = tiny_config()
    n, batch = 20, 6
    run = lambda: calibrate_threshold(NoisyDetector(), _composer(cfg, 7), n_samples=n, batch_size=batch,  # noqa: E731
                                      score=ScoreRule(TOP_K), device="cpu", amp=False)
    result = run()
    assert run() == result, "same generator seed, same thresholds"
    assert result != calibrate_threshold(NoisyDetector(), _composer(cfg, 8), n_samples=n, batch_size=batch,
                                         score=ScoreRule(TOP_K), device="cpu", amp=False)
    normal, anomalous, masks = _replay(_composer(cfg, 7), NoisyDetector(), n, batch)

    scores = np.concatenate([image_scores(normal, TOP_K), image_scores(anomalous, TOP_K)])
    labels = np.arange(2 * n) >= n
    best = max(_f1(scores >= t, labels) for t in np.unique(scores))
    assert 0 < result["image_f1"] < 1
    assert result["image_f1"] == pytest.approx(best, abs=1e-12)
    assert _f1(scores >= result["image_threshold"], labels) == pytest.approx(best, abs=1e-12)

    values = np.concatenate([normal.ravel(), anomalous.ravel()])
    truth = np.concatenate([np.zeros(normal.size, dtype=bool), masks.ravel()])
    cuts = np.unique(np.floor(values * 2**PIXEL_BITS)) / 2**PIXEL_BITS  # every distinct cut on the grid
    best_pixel = max(_f1(values >= t, truth) for t in cuts)
    assert result["pixel_f1"] == pytest.approx(best_pixel, abs=1e-12)
    assert _f1(values >= result["pixel_threshold"], truth) == pytest.approx(best_pixel, abs=1e-12)


def test_threshold_helpers_on_hand_made_cases() -> None:
    # 0.2 and 0.4 normal, 0.3 0.5 0.6 anomalous: cut >= 0.5 gives F1 2*2/(2+0+3) = 0.8, cut >= 0.3 gives
    # 2*3/(4+3) = 0.857: best; the threshold is the middle of 0.2 and 0.3
    threshold, f1 = image_threshold_f1(np.array([0.2, 0.4]), np.array([0.3, 0.5, 0.6]))
    assert f1 == pytest.approx(6 / 7) and threshold == pytest.approx(0.25)
    # a tie (cuts >= 0.9 and >= 0.3 both give F1 2/3) goes to the higher cut
    threshold, f1 = image_threshold_f1(np.array([0.4, 0.5]), np.array([0.3, 0.9]))
    assert f1 == pytest.approx(2 / 3) and threshold == pytest.approx(0.7)
    pos, neg = np.zeros(2**PIXEL_BITS + 1, dtype=np.int64), np.zeros(2**PIXEL_BITS + 1, dtype=np.int64)
    pos[40000], neg[[100, 30000]] = 5, (7, 1)
    threshold, f1 = pixel_threshold_f1(pos, neg)
    assert f1 == 1.0 and threshold == (30001 + 40000) / 2 / 2**PIXEL_BITS


def test_errors(tiny_config: Callable[..., Config]) -> None:
    cfg = tiny_config()
    with pytest.raises(CalibrationError, match="top_k"):
        calibrate_threshold(PerfectDetector(), _composer(cfg, 0), n_samples=4, batch_size=4,
                            score=ScoreRule(SIZE**2 + 1), device="cpu", amp=False)
    with pytest.raises(CalibrationError, match="only 0 non-empty"):
        calibrate_threshold(PerfectDetector(), _composer(cfg, 0, empty_every=1), n_samples=2, batch_size=4,
                            score=ScoreRule(TOP_K), device="cpu", amp=False)


def test_calibration_of_a_trained_run(trained_run: TrainedRun) -> None:
    cfg = trained_run.cfg
    result = trained_run.calibration  # calibrate_run on the trained detector, made by the fixture
    assert result["n_normal"] == result["n_anomalous"] == CALIBRATION_SAMPLES
    assert 0.0 <= result["image_threshold"] <= 1.0 and 0.0 <= result["pixel_threshold"] <= 1.0
    assert 0.0 < result["image_f1"] <= 1.0 and 0.0 < result["pixel_f1"] <= 1.0
    assert result["top_k"] == cfg.eval.top_k and result["image_size"] == cfg.data.image_size


class MeanDetector(nn.Module):
    """A cheap stand-in for the networks: the seg map is the sigmoid of the channel mean."""

    def __init__(self, top_k: int) -> None:
        super().__init__()
        self.score = score_module(ScoreRule(top_k))

    def forward(self, x: torch.Tensor) -> Detection:
        seg = torch.sigmoid(x.mean(dim=1, keepdim=True))
        return Detection(seg, self.score(seg), seg)


def test_calibrate_run_draws_from_its_own_seeded_stream(trained_run: TrainedRun) -> None:
    cfg, layout = trained_run.cfg, trained_run.layout
    images = load_train_set(layout.images, CATEGORY, cfg.data.image_size)
    bank = AnomalyBank.load(layout.bank, cfg)
    run = lambda seed: calibrate_run(cfg, CATEGORY, seed, MeanDetector(cfg.eval.top_k), ScoreRule(cfg.eval.top_k),  # noqa: E731
                                     images, bank, torch.device("cpu"))
    first = run(0)
    assert run(0) == first, "seeded from the training run: the same thresholds every time"
    assert run(1) != first, "another run seed draws other anomalies"
