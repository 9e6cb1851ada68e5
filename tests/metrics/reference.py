"""Slow, obviously-correct references for the metrics tests: one loop per threshold, straight from the definitions.

IAP: DeSTSeg's IAPS (model/metrics.py). AUPRO mvtec: the MVTec AD evaluation code (compute_pro + trapezoid).
AUPRO destseg: DeSTSeg's copy of anomalib 0.4's anomalib/utils/metrics/aupro.py, its index arithmetic, in lists.
"""

from __future__ import annotations

from bisect import bisect_left
from itertools import pairwise

import numpy as np
from scipy import ndimage

TORCH_F32_EPS = float(np.finfo(np.float32).eps)


def regions(masks: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(image index, boolean region mask) of every 8-connected GT component, image by image."""
    out = []
    for i, gt in enumerate(masks):
        labelled, n = ndimage.label(gt, structure=np.ones((3, 3)))
        out += [(i, labelled == r) for r in range(1, n + 1)]
    return out


def iap(maps: np.ndarray, masks: np.ndarray) -> tuple[float, float]:
    """IAP and IAP@90, one pass over all pixels per instance threshold."""
    scores = []
    for i, region in regions(masks):
        values = sorted(maps[i][region].tolist(), reverse=True)
        scores.append(values[int(0.5 * len(values))])
    scores.sort()
    pred, gt = maps.ravel(), masks.ravel().astype(np.float64)
    recall, precision = [], []
    for i, s in enumerate(scores):
        recall.append(1 - i / len(scores))
        precision.append(float(np.sum(pred * gt >= s) / np.sum(pred >= s)))
    for i in range(len(precision) - 1):
        precision[i + 1] = max(precision[i + 1], precision[i])
    return sum(precision) / len(scores), precision[::-1][bisect_left(recall[::-1], 0.9)]


def aupro_mvtec(maps: np.ndarray, masks: np.ndarray, limit: float = 0.3) -> float:
    """FPR and mean region overlap at every distinct score, (0,0) ... (1,1), area up to the limit / limit."""
    found = regions(masks)
    ok = ~masks
    xs, ys = [0.0], [0.0]
    for threshold in sorted(set(maps.ravel().tolist()), reverse=True):
        predicted = maps >= threshold
        xs.append(float((predicted & ok).sum() / ok.sum()))
        ys.append(float(np.mean([predicted[i][r].sum() / r.sum() for i, r in found])))
    xs.append(1.0)
    ys.append(1.0)
    area = 0.0
    for (x0, y0), (x1, y1) in pairwise(zip(xs, ys, strict=True)):
        if x1 <= limit:
            area += (x1 - x0) * (y0 + y1) / 2
        elif x0 < limit:
            y_at = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            area += (limit - x0) * (y0 + y_at) / 2
    return area / limit


def roc(scores: list[float], target: list[bool]) -> tuple[list[float], list[float]]:
    """Exact ROC as torchmetrics 0.10 builds it: (0, 0), then one point per distinct score, descending."""
    n_pos = sum(target)
    n_neg = len(target) - n_pos
    fpr, tpr = [0.0], [0.0]
    for threshold in sorted(set(scores), reverse=True):
        fpr.append(sum(1 for s, y in zip(scores, target, strict=True) if s >= threshold and not y) / n_neg)
        tpr.append(sum(1 for s, y in zip(scores, target, strict=True) if s >= threshold and y) / n_pos)
    return fpr, tpr


def interp1d(old_x: list[float], old_y: list[float], x: float) -> float:
    """anomalib's interp1d at one point; bisect_left is torch.searchsorted's binary search, sorted or not."""
    j = min(max(bisect_left(old_x, x) - 1, 0), len(old_x) - 2)
    return old_y[j] + (old_y[j + 1] - old_y[j]) / (TORCH_F32_EPS + old_x[j + 1] - old_x[j]) * (x - old_x[j])


def aupro_destseg(maps: np.ndarray, masks: np.ndarray, limit: float = 0.3) -> float:
    """Per-region ROC on background U region, resampled by index to the global count, averaged, area/last."""
    pred, gt = maps.ravel().tolist(), masks.ravel().tolist()
    global_fpr, _ = roc(pred, gt)
    size = sum(1 for f in global_fpr if f <= limit)
    tpr_sum, fpr_sum = [0.0] * size, [0.0] * size
    found = regions(masks)
    for i, region in found:
        mine = np.zeros_like(masks)
        mine[i] = region
        mine_flat = mine.ravel().tolist()
        union = [k for k in range(len(pred)) if mine_flat[k] or not gt[k]]
        fpr, tpr = roc([pred[k] for k in union], [mine_flat[k] for k in union])
        region_limit = min(f for f in fpr if f > limit) if max(f for f in fpr if f <= limit) == 0 else limit
        idx = [k for k, f in enumerate(fpr) if f <= region_limit]
        new_x = [float(k) for k in range(size)]
        interpolate = not abs(fpr[idx[-1]] - limit) <= 1e-8 + 1e-5 * limit  # torch.allclose
        if interpolate:
            nxt = bisect_left(fpr, limit)
            idx.append(nxt)
            slope = 1 - (fpr[nxt] - limit) / (fpr[nxt] - fpr[nxt - 1])
        old_x = [k / max(idx) * (size - 1) for k in idx]
        if interpolate:
            new_x[-1] = old_x[-2] + (old_x[-1] - old_x[-2]) * slope
        for k, x in enumerate(new_x):
            tpr_sum[k] += interp1d(old_x, [tpr[j] for j in idx], x)
            fpr_sum[k] += interp1d(old_x, [fpr[j] for j in idx], x)
    fpr_avg = [f / len(found) for f in fpr_sum]
    tpr_avg = [t / len(found) for t in tpr_sum]
    points = sorted(zip(fpr_avg, tpr_avg, strict=True), key=lambda p: p[0])
    area = sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in pairwise(points))
    return area / fpr_avg[-1]
