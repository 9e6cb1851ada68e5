"""Decision thresholds fitted at training time on held-out synthetic anomalies, never on test data.

Threshold-free metrics (AUROC, AP, AUPRO) need no threshold, but ``pfadseg predict`` must say "anomalous" or
not and draw a binary mask. MVTec AD has no anomalous validation split, and fitting on the test set would leak
(anomalib fits on its validation split, which defaults to the test set, or flags everything when the
validation set has no anomalies). Here the thresholds come from the seg stage's own anomaly synthesis: a
:class:`~pfadseg.synth.composer.BatchComposer` driven by its OWN seeded generator (not the training stream),
so the anomalies are fresh draws (bank mask x flip/rotation x offset x texture x opacity x image) the model
was not trained on.

The rule (:data:`RULE`), with ``N = n_samples``:

* normals: the clean ``img_origin`` of the first N composer draws; anomalies: the ``img_aug`` of the first N
  draws whose mask is not empty. A draw with an empty mask is a normal image (its ``img_aug`` equals its
  ``img_origin`` bit for bit, already among the normals) and is not counted twice. The composer gives ~95 %
  non-empty masks, so the two sets are exactly balanced: N normal and N anomalous images.
* image threshold: the image score is the evaluation's (:class:`pfadseg.score.rule.ScoreRule`: the mean of the
  top-k pixels of the segmentation map; for ADPS the max of its Gaussian-smoothed map). Among all cuts
  ``score >= t`` of the 2N sorted scores, the one with the highest F1 (anomalous = positive) wins; ties go to
  the higher cut (fewer false alarms).
  The threshold is the midpoint between the lowest score flagged and the highest score not flagged, so it
  reproduces exactly that split on the calibration set with the widest margin either side.
* pixel threshold: F1 over all pixels of the 2N maps (the mask pixels of the anomalies are positive; every
  other pixel, normal images included, negative), over cuts on a grid of 2^-16 in [0, 1] (the seg map is a
  probability). Values are binned exactly (``floor(v * 2^16)``: a power-of-two scale), so the counts are
  those of the cut itself; the threshold is again the midpoint of the gap around the best cut.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from pfadseg.config import Config
from pfadseg.device import amp_enabled, autocast
from pfadseg.errors import PfadsegError
from pfadseg.score.rule import ScoreRule
from pfadseg.seeding import torch_generator
from pfadseg.synth.bank import AnomalyBank
from pfadseg.synth.composer import BatchComposer, make_composer

log = logging.getLogger(__name__)

RULE = ("f1: max-F1 cuts on N clean img_origin normals vs N non-empty-mask img_aug anomalies from the "
        "composer's own generator; image score = {score}; pixel F1 over all pixels (2^-16 grid); threshold = "
        "midpoint of the gap around the best cut, ties to the higher cut")
PIXEL_BITS = 16  # pixel cuts on a grid of 2^-PIXEL_BITS
MAX_DRAWS_FACTOR = 20  # give up when the bank yields fewer than 1 non-empty mask in this many draws


class CalibrationError(PfadsegError, ValueError):
    """Calibration that cannot run (bad arguments, a bank without anomalies, a broken model)."""


def _best_cut_index(f1: np.ndarray) -> int:
    """Index of the highest F1, the last one on ties (candidates ascending: the higher cut)."""
    return int(f1.size - 1 - np.argmax(f1[::-1]))


def image_threshold_f1(normal: np.ndarray, anomalous: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) of the max-F1 cut ``score >= threshold`` separating anomalous from normal scores."""
    normal = np.sort(np.asarray(normal, dtype=np.float64))
    anomalous = np.sort(np.asarray(anomalous, dtype=np.float64))
    if anomalous.size == 0:
        raise CalibrationError("image threshold: no anomalous scores")
    candidates = np.unique(np.concatenate([normal, anomalous]))  # cut "score >= c", ascending
    tp = anomalous.size - np.searchsorted(anomalous, candidates, side="left")
    fp = normal.size - np.searchsorted(normal, candidates, side="left")
    f1 = 2 * tp / (tp + fp + anomalous.size)
    best = _best_cut_index(f1)
    if best == 0:  # everything flagged: no gap below, the cut itself
        return float(candidates[0]), float(f1[0])
    return float((candidates[best - 1] + candidates[best]) / 2), float(f1[best])


def pixel_histograms(maps: torch.Tensor, masks: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """int64 counts of positive and negative pixels per bin ``floor(v * 2^16)`` (0 .. 2^16), v clipped to [0, 1]."""
    scale = float(2**PIXEL_BITS)
    bins = torch.clamp(maps.float(), 0.0, 1.0).mul_(scale).floor_().long().flatten()
    positive = masks.flatten() > 0.5
    n_bins = 2**PIXEL_BITS + 1
    pos = torch.bincount(bins[positive], minlength=n_bins)
    neg = torch.bincount(bins[~positive], minlength=n_bins)
    return pos.cpu().numpy().astype(np.int64), neg.cpu().numpy().astype(np.int64)


def pixel_threshold_f1(pos_hist: np.ndarray, neg_hist: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) of the max-F1 pixel cut from :func:`pixel_histograms` counts (midpoint of the gap)."""
    n_pos = int(pos_hist.sum())
    if n_pos == 0:
        raise CalibrationError("pixel threshold: no anomalous pixels")
    # cut j: pixel flagged when its bin >= j, i.e. value >= j / 2^16 (exact: a power-of-two scale)
    tp = np.cumsum(pos_hist[::-1])[::-1]
    fp = np.cumsum(neg_hist[::-1])[::-1]
    f1 = 2 * tp / (tp + fp + n_pos)
    j = _best_cut_index(f1)
    occupied = np.flatnonzero((pos_hist + neg_hist) > 0)
    above = occupied[occupied >= j]
    below = occupied[occupied < j]
    hi = int(above[0]) if above.size else j
    if below.size == 0:
        return hi / 2**PIXEL_BITS, float(f1[j])
    # any t in [(lo + 1) / 2^16, hi / 2^16] splits the calibration pixels the same way: take the middle
    return (int(below[-1]) + 1 + hi) / 2 / 2**PIXEL_BITS, float(f1[j])


@torch.inference_mode()
def _detect(detector: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device,
              amp: bool) -> tuple[torch.Tensor, np.ndarray]:
    """The detector's maps (N x H x W float32) and image scores (N float64) of ``images``."""
    maps, scores = [], []
    for start in range(0, len(images), batch_size):
        with autocast(device, amp):
            detection = detector(images[start : start + batch_size].to(device))
        maps.append(detection.anomaly_map[:, 0].float())
        scores.append(detection.score.cpu().numpy())
    return torch.cat(maps), np.concatenate(scores)


def _check_maps(maps: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(maps).all()):
        raise CalibrationError(f"calibration: the segmentation map of a {what} image contains NaN or inf; "
                               "the model is broken, retrain it")


@torch.inference_mode()
def calibrate_threshold(
    detector: nn.Module,
    composer: BatchComposer,
    *,
    n_samples: int,
    batch_size: int,
    score: ScoreRule,
    device: torch.device | str,
    amp: bool,
) -> dict[str, Any]:
    """Image and pixel thresholds of ``detector`` on synthetic anomalies from ``composer`` (rule: module doc);
    ``score`` is the rule of the detector's image scores.

    ``composer`` must carry its own seeded generator (not the training stream); the result is deterministic for
    a given generator state. Returns ``image_threshold`` (on the image score of ``score``, e.g. the mean of
    the top-k seg-map pixels), ``pixel_threshold`` (on the seg map), ``n_normal`` = ``n_anomalous`` = ``n_samples``, the
    ``rule``, the calibration-set ``image_f1`` and ``pixel_f1``, plus ``top_k``, ``image_score``, ``image_size`` and
    ``n_draws`` (composer draws consumed). Touches no dataset: only the composer's images and bank.
    """
    if n_samples < 1 or batch_size < 1:
        raise CalibrationError(f"n_samples and batch_size must be >= 1, got {n_samples} and {batch_size}")
    size = composer.size
    if problem := score.problem(size):
        raise CalibrationError(problem)
    device = torch.device(device)
    detector.eval()
    normal_scores: list[np.ndarray] = []
    anomalous_scores: list[np.ndarray] = []
    pos_hist = np.zeros(2**PIXEL_BITS + 1, dtype=np.int64)
    neg_hist = np.zeros_like(pos_hist)
    n_normal = n_anomalous = draws = 0
    max_draws = MAX_DRAWS_FACTOR * n_samples + batch_size
    while n_normal < n_samples or n_anomalous < n_samples:
        if draws >= max_draws:
            raise CalibrationError(f"calibration: only {n_anomalous} non-empty anomaly masks in {draws} draws; "
                                   "the anomaly bank has (almost) only empty masks: check bank.perlin_threshold")
        batch = composer.sample(batch_size)
        draws += batch_size
        origin = batch["img_origin"][: n_samples - n_normal]
        nonempty = torch.flatten(batch["mask"], 1).amax(dim=1) > 0.5
        index = torch.nonzero(nonempty).flatten()[: n_samples - n_anomalous]
        augmented, masks = batch["img_aug"].index_select(0, index), batch["mask"][:, 0].index_select(0, index)
        if len(origin):
            maps, scores = _detect(detector, origin, batch_size, device, amp)
            _check_maps(maps, "normal")
            normal_scores.append(scores)
            neg_hist += pixel_histograms(maps, torch.zeros_like(maps))[1]
            n_normal += len(origin)
        if len(index):
            maps, scores = _detect(detector, augmented, batch_size, device, amp)
            _check_maps(maps, "synthetic anomalous")
            anomalous_scores.append(scores)
            pos, neg = pixel_histograms(maps, masks.to(maps.device))
            pos_hist += pos
            neg_hist += neg
            n_anomalous += len(index)
    image_threshold, image_f1 = image_threshold_f1(np.concatenate(normal_scores), np.concatenate(anomalous_scores))
    pixel_threshold, pixel_f1 = pixel_threshold_f1(pos_hist, neg_hist)
    result = {
        "image_threshold": image_threshold,
        "pixel_threshold": pixel_threshold,
        "n_normal": n_normal,
        "n_anomalous": n_anomalous,
        "rule": RULE.format(score=score.describe()),
        "image_f1": image_f1,
        "pixel_f1": pixel_f1,
        "top_k": score.top_k,
        "image_score": score.describe(),
        "image_size": size,
        "n_draws": draws,
    }
    log.info("calibration: image threshold %.4f (F1 %.3f), pixel threshold %.4f (F1 %.3f) on %d normal + %d "
             "synthetic anomalous images", image_threshold, image_f1, pixel_threshold, pixel_f1, n_normal,
             n_anomalous)
    return result


def calibrate_run(
    cfg: Config,
    category: str,
    run_seed: int,
    detector: nn.Module,
    score: ScoreRule,
    train_images_uint8: np.ndarray,
    bank: AnomalyBank,
    device: torch.device,
) -> dict[str, Any]:
    """:func:`calibrate_threshold` for one trained run, as the calibrate stage calls it.

    The composer draws from its own generator ``torch_generator(run_seed, category, "calibrate")``, distinct
    from the training streams (``"student"``/``"seg"``/``"adps"``, ``"batches"``); ``calibrate.n_samples``
    of each kind, batch size ``eval.batch_size``, bf16 as ``train.amp`` (:func:`pfadseg.device.amp_enabled`).
    """
    generator = torch_generator(run_seed, category, "calibrate", device=device)
    composer = make_composer(cfg, category, train_images_uint8, bank, device, generator)
    return calibrate_threshold(detector, composer, n_samples=cfg.calibrate.n_samples,
                               batch_size=cfg.eval.batch_size, score=score, device=device,
                               amp=amp_enabled(device, cfg.train))
