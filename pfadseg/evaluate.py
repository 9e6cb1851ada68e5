"""Test-set inference -> anomaly maps of both branches -> metrics (as DeSTSeg's eval.py)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from pfadseg.config import EvalConfig
from pfadseg.data.images import TestSet, normalize, to_tensor
from pfadseg.device import autocast
from pfadseg.metrics import MetricsError, evaluate_maps, image_level
from pfadseg.score.maps import score_maps
from pfadseg.score.rule import ScoreRule

log = logging.getLogger(__name__)

BRANCHES = ("seg", "dest")  # the segmentation output (DeSTSeg/PFADSeg) and the DeST product of cosine maps


@dataclass(frozen=True)
class BranchMaps:
    """Anomaly maps N x H x W (float32) of both branches, at the evaluation size, and the detector's image scores
    of its own map (``seg``), N float64."""

    seg: np.ndarray
    dest: np.ndarray
    seg_scores: np.ndarray

    def scores(self, branch: str, rule: ScoreRule) -> np.ndarray:
        """A branch's image scores: the detector's for ``seg``; ``rule`` on the stored DeST map (the same rule,
        :mod:`pfadseg.score.maps`) for ``dest``, which the detector does not score."""
        return self.seg_scores if branch == "seg" else score_maps(rule, getattr(self, branch))


@torch.inference_mode()
def infer_maps(
    detector: nn.Module, images: np.ndarray, *, batch_size: int, device: torch.device, amp: bool
) -> BranchMaps:
    """Run the detector over uint8 N x H x W x 3 images in batches; no gradients, bf16 autocast when ``amp``."""
    detector.eval()
    seg_maps, dest_maps, scores = [], [], []
    for start in range(0, len(images), batch_size):
        batch = normalize(to_tensor(images[start : start + batch_size]).to(device))
        with autocast(device, amp):
            detection = detector(batch)
        seg_maps.append(detection.anomaly_map[:, 0].float().cpu().numpy())
        dest_maps.append(detection.dest_map[:, 0].float().cpu().numpy())
        scores.append(detection.score.cpu().numpy())
    return BranchMaps(np.concatenate(seg_maps), np.concatenate(dest_maps), np.concatenate(scores))


def _check_finite(maps: np.ndarray, test_set: TestSet, branch: str) -> None:
    bad = ~np.isfinite(maps).all(axis=(1, 2))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise MetricsError(f"{branch} map of {test_set.paths[first]} contains NaN or inf "
                           f"({int(bad.sum())} image(s) affected); the model is broken, retrain it")


def evaluate_branches(
    maps: BranchMaps, test_set: TestSet, cfg: EvalConfig, rule: ScoreRule, *, pixel_skipped: str | None = None
) -> dict[str, dict[str, Any]]:
    """Metrics (with curves) of each branch on one category's test set.

    ``pixel_skipped`` (why, e.g. ground-truth masks missing in a custom folder) computes only the image-level
    metrics and curves, from the folder labels, and records the reason as ``pixel_metrics``.
    """
    results = {}
    for branch in BRANCHES:
        branch_maps = getattr(maps, branch)
        _check_finite(branch_maps, test_set, branch)
        scores = maps.scores(branch, rule)
        if pixel_skipped is None:
            results[branch] = evaluate_maps(branch_maps, test_set.masks, top_k=cfg.top_k, scores=scores,
                                            aupro_mode=cfg.aupro_mode, fpr_limit=cfg.aupro_fpr_limit, curves=True)
        else:
            results[branch] = {**image_level(scores, test_set.folder_labels, curves=True), "top_k": cfg.top_k,
                               "pixel_metrics": pixel_skipped}
        results[branch]["image_score"] = rule.describe()
    return results


def score_table(maps: BranchMaps, test_set: TestSet, rule: ScoreRule) -> list[dict[str, Any]]:
    """One row per test image: path, defect folder, labels (from the mask and the folder) and branch scores."""
    scores = {branch: maps.scores(branch, rule) for branch in BRANCHES}
    return [
        {"path": str(path), "defect": defect, "label": int(label), "folder_label": int(folder_label),
         **{f"score_{b}": float(scores[b][i]) for b in BRANCHES}}
        for i, (path, defect, label, folder_label) in enumerate(
            zip(test_set.paths, test_set.defects, test_set.labels, test_set.folder_labels, strict=True))
    ]
