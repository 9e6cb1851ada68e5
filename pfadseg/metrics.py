"""Anomaly-detection metrics of the DeSTSeg/PFADSeg protocol, exact and fast (DeSTSeg's eval.py, model/metrics.py).

Every pixel metric is computed from two sorted arrays: the background scores (one ``np.sort``, the only
pass over all pixels) and the scores of the anomalous pixels (few, sorted with their region ids). Counts at
any threshold are ``searchsorted`` positions, i.e. exact int64 integers; nothing is accumulated in float32.

* pixel AUROC: the trapezoidal ROC area with exact thresholds and tied scores merged, computed as the
  equivalent Mann-Whitney count (integer sums);
* pixel AP: step-wise average precision, ``sklearn.metrics.average_precision_score`` semantics;
* AUPRO ``mvtec``: the MVTec AD evaluation code's exact global-sort PRO curve and ``trapezoid(x_max=limit)``;
  ``destseg``: the anomalib-0.4 AUPRO that DeSTSeg copied and reports (per-region ROCs resampled by index);
* IAP and IAP@90: DeSTSeg's ``IAPS`` (instance recall, pixel precision), quirks included.

Float arithmetic is float64 throughout; the reference codes round some quantities to float32 (MVTec's FPR,
torchmetrics' curves and DeSTSeg's precision), so their printed values may differ from ours by ~1e-7.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from pfadseg.errors import PfadsegError
from pfadseg.score.maps import ScoreError, smoothed_maxima, top_k_means

log = logging.getLogger(__name__)

AUPRO_MODES = ("mvtec", "destseg")
IOI_THRESH = 0.5  # DeSTSeg IAPS: instance score at index floor(0.5 n) of its scores sorted descending
IAP_RECALL = 0.9  # DeSTSeg IAPS recall_thresh: IAP@90
CURVE_POINTS = 300  # points per curve handed to the report (evaluate_maps(curves=True))
_TORCH_F32_EPS = float(np.finfo(np.float32).eps)  # the eps of anomalib's float32 interp1d
# The per-image connected components of DeSTSeg's and MVTec's metric code: 3x3 ones (8-connectivity) in each
# image, nothing across images.
_EIGHT_CONNECTED_PER_IMAGE = np.zeros((3, 3, 3), dtype=bool)
_EIGHT_CONNECTED_PER_IMAGE[1] = True


class MetricsError(PfadsegError, ValueError):
    """Maps or masks on which the metrics are undefined or would be wrong; the message says why."""


# ------------------------------------------------------------------------------------------ validation


def _check_maps(maps: Any) -> np.ndarray:
    """N x H x W finite float maps (float32 kept, other dtypes widened exactly); errors name the image."""
    maps = np.asarray(maps)
    if maps.ndim != 3 or 0 in maps.shape:
        raise MetricsError(f"anomaly maps must be a non-empty N x H x W array, got shape {maps.shape}")
    if maps.dtype == np.float16:
        maps = maps.astype(np.float32)
    elif maps.dtype not in (np.float32, np.float64):
        if not (np.issubdtype(maps.dtype, np.integer) or maps.dtype == bool):
            raise MetricsError(f"anomaly maps must be real numbers, got dtype {maps.dtype}")
        maps = maps.astype(np.float64)
    if not np.isfinite(maps).all():
        bad = np.flatnonzero(~np.isfinite(maps).all(axis=(1, 2)))
        raise MetricsError(f"anomaly map of image {int(bad[0])} contains NaN or inf "
                           f"({bad.size} image(s) affected: {bad[:10].tolist()})")
    return maps


def _check_binary(values: Any, what: str) -> np.ndarray:
    """Boolean view of masks or labels given as bool or 0/1 numbers."""
    values = np.asarray(values)
    if values.dtype == bool:
        return values
    if not (np.issubdtype(values.dtype, np.number) and np.isin(values, (0, 1)).all()):
        raise MetricsError(f"{what} must be boolean (or 0/1), got dtype {values.dtype} with other values")
    return values.astype(bool)


def _check_inputs(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """Checked maps and masks of one N x H x W shape, the evaluation size (256 in DeSTSeg's eval.py)."""
    maps = _check_maps(maps)
    masks = _check_binary(masks, "ground-truth masks")
    if masks.shape != maps.shape:
        raise MetricsError(f"shape mismatch: anomaly maps {maps.shape} vs ground-truth masks {masks.shape} "
                           "(both must be N x H x W at the evaluation size)")
    return maps, masks


def _check_limit(fpr_limit: float) -> float:
    """The AUPRO FPR limit, in (0, 1]."""
    if not 0.0 < fpr_limit <= 1.0:
        raise MetricsError(f"AUPRO fpr_limit must lie in (0, 1], got {fpr_limit}")
    return float(fpr_limit)


# ------------------------------------------------------------------------------------------ sorted pixels


def _run_starts(sorted_values: np.ndarray) -> np.ndarray:
    """Index of the first element of each run of equal values in a sorted array."""
    change = np.empty(sorted_values.size, dtype=bool)
    change[:1] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=change[1:])
    return np.flatnonzero(change)


def _count_at_least(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Exact int64 count of elements >= each threshold in an ascending array (float32 counts stop at 2**24)."""
    return sorted_values.size - np.searchsorted(sorted_values, thresholds, side="left").astype(np.int64)


def _count_above(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Exact int64 count of elements > each threshold in an ascending array."""
    return sorted_values.size - np.searchsorted(sorted_values, thresholds, side="right").astype(np.int64)


@dataclass(frozen=True)
class _Pixels:
    """All pixels of a test set, sorted once: background scores and anomalous scores with region ids."""

    neg: np.ndarray  # background scores, ascending
    pos: np.ndarray  # anomalous scores, ascending
    pos_region: np.ndarray  # region id (0 .. R-1) of each entry of ``pos``
    region_sizes: np.ndarray  # int64 pixel count of each region
    by_region: np.ndarray  # anomalous scores grouped by region id, ascending within each region
    region_starts: np.ndarray  # offset of each region in ``by_region`` (R + 1 entries)

    @property
    def n_regions(self) -> int:
        return self.region_sizes.size


def _sort_pixels(maps: np.ndarray, masks: np.ndarray) -> _Pixels:
    """Label the GT regions (8-connected, per image) and sort the pixel scores (4.3 IAP step 2)."""
    labels, n_regions = ndimage.label(masks, structure=_EIGHT_CONNECTED_PER_IMAGE)
    if n_regions == 0:
        raise MetricsError("the test set has no anomalous region (every ground-truth mask is empty): "
                           "pixel AUROC, pixel AP, AUPRO and IAP are undefined; a category needs anomalous "
                           "test images")
    flat, inside = maps.reshape(-1), masks.reshape(-1)
    neg = np.sort(flat[~inside])
    if neg.size == 0:
        raise MetricsError("the test set has no normal pixel (every mask is all anomalous): pixel AUROC, "
                           "AUPRO and the false-positive rates are undefined")
    pos = flat[inside]
    order = np.argsort(pos, kind="stable")
    pos, pos_region = pos[order], labels.reshape(-1)[inside][order] - 1
    by_region_order = np.argsort(pos_region, kind="stable")
    sizes = np.bincount(pos_region, minlength=n_regions).astype(np.int64)
    return _Pixels(neg=neg, pos=pos, pos_region=pos_region, region_sizes=sizes,
                   by_region=pos[by_region_order], region_starts=np.concatenate(([0], np.cumsum(sizes))))


@dataclass(frozen=True)
class _Thresholds:
    """Exact counts at each distinct positive score, descending: the vertices of ROC, PR and PRO curves."""

    count: np.ndarray  # positives equal to each value
    first: np.ndarray  # index of each value's run in the ascending positive array
    tp_ge: np.ndarray  # positives >= value
    fp_ge: np.ndarray  # negatives >= value
    fp_gt: np.ndarray  # negatives > value
    n_pos: int
    n_neg: int


def _thresholds(neg: np.ndarray, pos: np.ndarray) -> _Thresholds:
    """Counts at the distinct positive scores from the ascending negative and positive arrays."""
    first = _run_starts(pos)
    values = pos[first]  # ascending; every field below is reversed to descending
    return _Thresholds(count=np.diff(np.append(first, pos.size))[::-1], first=first[::-1],
                       tp_ge=(pos.size - first)[::-1].astype(np.int64),
                       fp_ge=_count_at_least(neg, values)[::-1], fp_gt=_count_above(neg, values)[::-1],
                       n_pos=pos.size, n_neg=neg.size)


# ---------------------------------------------------------------------------------- AUROC, AP, curves


def _auroc(th: _Thresholds) -> float:
    """Trapezoidal ROC area with merged ties = P(pos > neg) + P(pos = neg)/2, from integer counts."""
    twice_u = int(np.sum(th.count * (2 * th.n_neg - th.fp_ge - th.fp_gt), dtype=np.int64))
    return twice_u / (2 * th.n_pos * th.n_neg)


def _average_precision(th: _Thresholds) -> float:
    """Step-wise AP = sum over thresholds of (recall increment) x precision (sklearn semantics)."""
    return float(np.sum(th.count / th.n_pos * (th.tp_ge / (th.tp_ge + th.fp_ge))))


def _interleave(before: np.ndarray, after: np.ndarray, start: float, end: float) -> np.ndarray:
    """start, before[0], after[0], before[1], after[1], ..., end."""
    return np.concatenate(([start], np.column_stack((before, after)).ravel(), [end]))


def _roc_vertices(th: _Thresholds) -> tuple[np.ndarray, np.ndarray]:
    """Exact ROC polyline: at each positive value the points just above it and at it, then (1, 1)."""
    tp_gt = np.concatenate(([0], th.tp_ge[:-1]))
    fpr = _interleave(th.fp_gt, th.fp_ge, 0, th.n_neg) / th.n_neg
    tpr = _interleave(tp_gt, th.tp_ge, 0, th.n_pos) / th.n_pos
    return fpr, tpr


def _pr_vertices(th: _Thresholds) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision at each positive value taken as the threshold (the step-wise AP's points)."""
    return th.tp_ge / th.n_pos, th.tp_ge / (th.tp_ge + th.fp_ge)


def _thin(columns: dict[str, np.ndarray], n_points: int = CURVE_POINTS) -> dict[str, list[float]]:
    """Keep about ``n_points`` evenly spaced (by index) points of a curve, always the first and last."""
    length = len(next(iter(columns.values())))
    keep = np.unique(np.linspace(0, length - 1, min(length, n_points)).round().astype(np.int64))
    return {name: values[keep].astype(float).tolist() for name, values in columns.items()}


def _labels_defined(labels: np.ndarray) -> bool:
    """Whether both image classes occur (image AUROC is defined); warns when not."""
    if labels.all() or not labels.any():
        log.warning("image AUROC is undefined: the test set has only %s images; reporting NaN",
                    "anomalous" if labels.any() else "normal")
        return False
    return True


def image_scores(maps: np.ndarray, top_k: int) -> np.ndarray:
    """Image score = mean of the top-k pixels of each map, float64 (DeSTSeg's eval.py)."""
    return _top_k_means(_check_maps(maps), top_k)


def _top_k_means(maps: np.ndarray, top_k: int) -> np.ndarray:
    """:func:`pfadseg.score.maps.top_k_means` of checked maps, its refusal a metrics error."""
    try:
        return top_k_means(maps, top_k)
    except ScoreError as exc:
        raise MetricsError(str(exc)) from None


def smoothed_max_scores(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Image score = max of the Gaussian-smoothed map (scipy, reflect border), float64 (ADPS Algorithm 1)."""
    return smoothed_maxima(_check_maps(maps), sigma)


def _image_thresholds(scores: np.ndarray, labels: np.ndarray) -> _Thresholds:
    """Counts of image scores: normal images are the negatives."""
    return _thresholds(np.sort(scores[~labels]), np.sort(scores[labels]))


def image_level(scores: np.ndarray, labels: np.ndarray, *, curves: bool = False) -> dict[str, Any]:
    """Image AUROC and step-wise AP of per-image scores vs labels, NaN with a warning when one class is absent
    (4.3); with ``curves`` also the exact image ROC and PR curves (empty when undefined)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = _check_binary(labels, "image labels")
    if scores.ndim != 1 or scores.shape != labels.shape:
        raise MetricsError(f"shape mismatch: image scores {scores.shape} vs labels {labels.shape}")
    if not np.isfinite(scores).all():
        raise MetricsError(f"image score {int(np.flatnonzero(~np.isfinite(scores))[0])} is NaN or inf")
    th = _image_thresholds(scores, labels) if _labels_defined(labels) else None
    result: dict[str, Any] = {"image_auroc": float("nan") if th is None else _auroc(th),
                              "image_ap": float("nan") if th is None else _average_precision(th)}
    if curves:
        empty = np.zeros(0)
        fpr, tpr = (empty, empty) if th is None else _roc_vertices(th)
        recall, precision = (empty, empty) if th is None else _pr_vertices(th)
        result["curves"] = {"image_roc": _thin({"fpr": fpr, "tpr": tpr}, n_points=fpr.size),
                            "image_pr": _thin({"recall": recall, "precision": precision}, n_points=recall.size)}
    return result


def pixel_auroc(maps: np.ndarray, masks: np.ndarray) -> float:
    """Pixel AUROC over all pixels of the test set, exact thresholds (as DeSTSeg's torchmetrics AUROC)."""
    px = _sort_pixels(*_check_inputs(maps, masks))
    return _auroc(_thresholds(px.neg, px.pos))


def pixel_ap(maps: np.ndarray, masks: np.ndarray) -> float:
    """Pixel AP over all pixels, step-wise (average_precision_score semantics, as DeSTSeg's torchmetrics)."""
    px = _sort_pixels(*_check_inputs(maps, masks))
    return _average_precision(_thresholds(px.neg, px.pos))


# ------------------------------------------------------------------------------------------ AUPRO mvtec


def _cut_at(x: np.ndarray, y: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """Curve cut at x = limit (interpolated): its area is MVTec's trapezoid(x_max) (generic_util.py)."""
    ins = int(np.searchsorted(x, limit, side="right"))  # x[:ins] <= limit
    if x[ins - 1] == limit:
        return x[:ins], y[:ins]
    y_at = y[ins - 1] + (y[ins] - y[ins - 1]) * (limit - x[ins - 1]) / (x[ins] - x[ins - 1])
    return np.append(x[:ins], limit), np.append(y[:ins], y_at)


def _pro_curve_mvtec(px: _Pixels, th: _Thresholds) -> tuple[np.ndarray, np.ndarray]:
    """MVTec compute_pro: OK-pixel FPR vs mean region overlap, ties merged (MVTec's pro_curve_util.py)."""
    # Only anomalous scores change the PRO, so the polyline through the points just above and at each of them
    # is the whole curve: the thresholds of background pixels alone only add collinear points.
    weights_desc = (1.0 / px.region_sizes[px.pos_region])[::-1]
    cum = np.cumsum(weights_desc)[px.pos.size - 1 - th.first] / px.n_regions
    pro = np.minimum(cum, 1.0)
    fpr = np.minimum(_interleave(th.fp_gt, th.fp_ge, 0, th.n_neg) / th.n_neg, 1.0)
    return fpr, _interleave(np.concatenate(([0.0], pro[:-1])), pro, 0.0, 1.0)


def _aupro_mvtec(px: _Pixels, th: _Thresholds, limit: float) -> tuple[float, np.ndarray, np.ndarray]:
    """MVTec AU-PRO = trapezoid(fpr, pro, x_max=limit) / limit, with the curve up to the limit."""
    fpr, pro = _cut_at(*_pro_curve_mvtec(px, th), limit)
    return float(np.trapezoid(pro, fpr)) / limit, fpr, pro


def aupro_mvtec(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    """AUPRO up to ``fpr_limit`` by the MVTec AD evaluation code's exact algorithm (pro_curve_util.py)."""
    px = _sort_pixels(*_check_inputs(maps, masks))
    return _aupro_mvtec(px, _thresholds(px.neg, px.pos), _check_limit(fpr_limit))[0]


# ---------------------------------------------------------------------------------------- AUPRO destseg


def _lower_bound(arr: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """torch.searchsorted(arr, keys) as the binary search it runs, defined on unsorted arr too (4.3 AUPRO)."""
    lo = np.zeros(keys.shape, dtype=np.int64)
    hi = np.full(keys.shape, arr.size, dtype=np.int64)
    while (active := lo < hi).any():
        mid = (lo + hi) >> 1
        right = active & ~(arr[np.minimum(mid, arr.size - 1)] >= keys)
        lo = np.where(right, mid + 1, lo)
        hi = np.where(active & ~right, mid, hi)
    return lo


def _interp1d(old_x: np.ndarray, old_ys: tuple[np.ndarray, ...], new_x: np.ndarray) -> list[np.ndarray]:
    """anomalib 0.4 AUPRO.interp1d: linear in old_x, end segments extrapolated, eps'd slope (4.3 AUPRO)."""
    dx = np.diff(old_x)
    pos = np.searchsorted(old_x, new_x, side="left") if (dx >= 0).all() else _lower_bound(old_x, new_x)
    i = np.clip(pos - 1, 0, old_x.size - 2)
    step = new_x - old_x[i]
    return [y[i] + (np.diff(y) / (_TORCH_F32_EPS + dx))[i] * step for y in old_ys]


def _grid_positions(pos: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Left grid point and fraction of positions in [0, size - 1] on the grid 0, 1, ..., size - 1."""
    at = pos.astype(np.int64)
    np.minimum(at, size - 2, out=at)
    return at, pos - at


def _lerp(y: np.ndarray, at: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """y (given on the grid 0, 1, ...) linearly interpolated at ``at + frac``: np.interp, 3x faster here."""
    out = np.diff(y).take(at).astype(np.float64, copy=False)
    out *= frac
    out += y.take(at)
    return out


def _allclose(a: float, b: float) -> bool:
    """torch.allclose with its defaults (rtol 1e-5, atol 1e-8), as anomalib calls it."""
    return abs(a - b) <= 1e-8 + 1e-5 * abs(b)


def _aupro_destseg(px: _Pixels, th: _Thresholds, limit: float) -> tuple[float, np.ndarray, np.ndarray]:
    """anomalib-0.4 AUPRO as copied by DeSTSeg (model/metrics.py; anomalib 0.4 anomalib/utils/metrics/aupro.py)."""
    # Region r's ROC runs over background U region r: (0, 0), then one point per distinct score, descending.
    # Its FP counts come from the background alone, so its points are the distinct background scores (shared
    # counts ``fp``) with the region's own scores inserted, each repeating the FP count before it. Each curve
    # is built up to just past the limit (no per-region sort) and resampled by index as anomalib does.
    neg, n_neg = px.neg, px.neg.size
    bg_first = _run_starts(neg)
    bg_values = neg[bg_first]  # distinct background scores, ascending
    n_bg = bg_values.size
    fp = np.concatenate(([0.0], (n_neg - bg_first)[::-1]))  # fp[a]: background >= a-th highest value
    fpr_of = fp / n_neg
    n_bg_in = int(np.searchsorted(fpr_of[1:], limit, side="right"))  # background values with FPR <= limit
    only = th.fp_ge == th.fp_gt  # anomalous scores that no background pixel has
    n_out = 1 + n_bg_in + int(np.count_nonzero(only & (th.fp_gt / n_neg <= limit)))  # global ROC points
    if n_out < 2:
        log.warning("destseg AUPRO is undefined: no threshold has 0 < FPR <= %s (the top score is shared by "
                    "more than that fraction of the background pixels)", limit)
        return float("nan"), np.zeros(0), np.zeros(0)
    m = n_out - 1
    edge = n_bg_in == 0  # anomalib's "ROC only has fpr vals > fpr_limit" branch: a big tie at the top
    last_g = 1 if edge else n_bg_in  # background values kept up to the region FPR limit
    n_keep = min(last_g + 1, n_bg)  # ... and the next one
    first_at_limit = int(np.searchsorted(fpr_of, limit, side="left"))  # first fp index with FPR >= limit
    k = np.arange(m, dtype=np.float64)
    fp_sum, tpr_sum = np.zeros(n_out), np.zeros(n_out)
    for r in range(px.n_regions):
        scores = px.by_region[px.region_starts[r] : px.region_starts[r + 1]]
        above = n_bg - np.searchsorted(bg_values, scores, side="right")  # distinct background values > score
        kept = above[above < n_keep] + 1
        tps = np.cumsum(np.bincount(kept, minlength=n_keep + 1))  # region >= each value
        first = _run_starts(scores)
        n_above = above[first]
        own = (n_bg - np.searchsorted(bg_values, scores[first], side="left") == n_above) & (n_above <= last_g)
        own_above, own_tp = n_above[own][::-1], (scores.size - first[own])[::-1]  # descending scores
        fps = np.insert(fp[: n_keep + 1], own_above + 1, fp[own_above])
        tps = np.insert(tps, own_above + 1, own_tp)
        last = last_g + own_above.size  # last point with FPR <= the region limit
        interp = not _allclose(fpr_of[last_g], limit)
        if interp:  # add the first point with FPR >= limit; the last sample lands where FPR crosses the limit
            nxt = first_at_limit + int(np.count_nonzero(own_above < first_at_limit))
            slope = 1 - (fps[nxt] / n_neg - limit) / (fps[nxt] / n_neg - fps[nxt - 1] / n_neg)
            if nxt != last + 1:  # the edge branch: a non-contiguous index list, anomalib's interp1d as is
                idx = np.append(np.arange(last + 1), nxt)
                old_x = idx / idx.max() * m
                x_last = old_x[-2] + (old_x[-1] - old_x[-2]) * slope
                fp_r, tp_r = _interp1d(old_x, (fps[idx], tps[idx]), np.append(k, x_last))
                fp_sum += fp_r
                tpr_sum += tp_r / scores.size
                continue
        # points 0 .. top sit at old_x = i / top * m: resample at 0 .. m-1 linearly, the end point as anomalib
        top = last + 1 if interp else last
        x_last = ((top - 1) / top * m + (m - (top - 1) / top * m) * slope) if interp else float(m)
        end = int(np.clip(np.ceil(x_last / m * top) - 1, 0, top - 1))
        fp_end, tp_end = _interp1d(np.array([end / top * m, (end + 1) / top * m]),
                                   (fps[end : end + 2], tps[end : end + 2]), np.array([x_last]))
        at, frac = _grid_positions(k * (top / m), top + 1)
        fp_sum[:m] += _lerp(fps[: top + 1], at, frac)
        tpr_sum[:m] += _lerp(tps[: top + 1], at, frac) / scores.size
        fp_sum[m] += fp_end[0]
        tpr_sum[m] += tp_end[0] / scores.size
    fpr_avg, tpr_avg = fp_sum / n_neg / px.n_regions, tpr_sum / px.n_regions
    order = np.argsort(fpr_avg, kind="stable")  # torchmetrics auc(reorder=True)
    area = float(np.trapezoid(tpr_avg[order], fpr_avg[order]))
    return area / float(fpr_avg[-1]), fpr_avg[order], tpr_avg[order]


def aupro_destseg(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    """AUPRO as DeSTSeg reports it: anomalib 0.4, per-region ROCs resampled by index (4.3 AUPRO)."""
    px = _sort_pixels(*_check_inputs(maps, masks))
    return _aupro_destseg(px, _thresholds(px.neg, px.pos), _check_limit(fpr_limit))[0]


# ------------------------------------------------------------------------------------------------- IAP


def _instance_scores(px: _Pixels) -> np.ndarray:
    """Score of each GT instance: its (floor(0.5 n))-th highest pixel score (4.3 IAP step 3)."""
    n = px.region_sizes
    return px.by_region[px.region_starts[:-1] + n - 1 - np.floor(IOI_THRESH * n).astype(np.int64)]


def _iap(px: _Pixels) -> tuple[float, float]:
    """DeSTSeg ``IAPS`` (4.3 IAP steps 5-9): instance recall, pixel precision over all pixels, VOC max."""
    thresholds = np.sort(_instance_scores(px))
    k = thresholds.size
    tp_pos = _count_at_least(px.pos, thresholds)
    predicted = tp_pos + _count_at_least(px.neg, thresholds)
    # sum(pred * gt >= s): background pixels contribute pred * 0 = 0, which is >= s when s <= 0 (the quirk)
    tp = tp_pos + np.where(thresholds <= 0, px.neg.size, 0)
    precision = np.maximum.accumulate(tp / predicted)
    recall = 1 - np.arange(k) / k
    at = int(np.searchsorted(recall[::-1], IAP_RECALL, side="left"))  # bisect_left on ascending recall
    return float(np.sum(precision) / k), float(precision[::-1][at])


def iap(maps: np.ndarray, masks: np.ndarray) -> tuple[float, float]:
    """(IAP, IAP@90) exactly as DeSTSeg's IAPS, quirks included (DeSTSeg's model/metrics.py)."""
    return _iap(_sort_pixels(*_check_inputs(maps, masks)))


# ------------------------------------------------------------------------------------------ entry point


def evaluate_maps(
    maps: np.ndarray,
    masks: np.ndarray,
    *,
    top_k: int = 100,
    aupro_mode: str = "mvtec",
    fpr_limit: float = 0.3,
    labels: np.ndarray | None = None,
    scores: np.ndarray | None = None,
    curves: bool = False,
) -> dict[str, Any]:
    """All metrics of one category's test set (as DeSTSeg's eval.py); pixels are sorted only once.

    ``maps`` N x H x W float, ``masks`` N x H x W bool at the evaluation size. The keyword defaults are
    conveniences of this function only: pipeline callers pass ``EvalConfig.top_k``, ``.aupro_mode`` and
    ``.aupro_fpr_limit`` from params.yaml. Image labels default to "mask has an anomalous pixel". With
    ``curves`` the result also holds ``curves``: image ROC and PR, pixel ROC and PR, and the PRO curve up to the
    limit, as plain lists (pixel curves thinned to about ``CURVE_POINTS`` points).
    ``scores`` replaces the top-k image scores by precomputed ones (e.g. :func:`smoothed_max_scores`).
    Raises :class:`MetricsError` on bad input or a test set without anomalous regions.
    """
    maps, masks = _check_inputs(maps, masks)
    if aupro_mode not in AUPRO_MODES:
        raise MetricsError(f"aupro_mode must be one of {AUPRO_MODES}, got {aupro_mode!r}")
    limit = _check_limit(fpr_limit)
    image_labels = masks.reshape(masks.shape[0], -1).any(axis=1) if labels is None else \
        _check_binary(labels, "image labels")
    if image_labels.shape != (maps.shape[0],):
        raise MetricsError(f"shape mismatch: {maps.shape[0]} maps but image labels {image_labels.shape}")
    if scores is None:
        scores = _top_k_means(maps, top_k)
    elif np.shape(scores) != (maps.shape[0],) or not np.isfinite(scores).all():
        raise MetricsError(f"image scores must be {maps.shape[0]} finite values, got shape {np.shape(scores)}")
    px = _sort_pixels(maps, masks)
    th = _thresholds(px.neg, px.pos)
    aupro_fn = _aupro_mvtec if aupro_mode == "mvtec" else _aupro_destseg
    aupro, pro_fpr, pro_tpr = aupro_fn(px, th, limit)
    iap_value, iap90 = _iap(px)
    image = image_level(scores, image_labels, curves=curves)
    result: dict[str, Any] = {
        "image_auroc": image["image_auroc"],
        "image_ap": image["image_ap"],
        "pixel_auroc": _auroc(th),
        "pixel_ap": _average_precision(th),
        "aupro": aupro,
        "aupro_mode": aupro_mode,
        "aupro_fpr_limit": limit,
        "iap": iap_value,
        "iap90": iap90,
        "top_k": top_k,
        "n_images": int(maps.shape[0]),
        "n_anomalous_images": int(image_labels.sum()),
        "n_regions": px.n_regions,
    }
    if curves:
        roc_fpr, roc_tpr = _roc_vertices(th)
        recall, precision = _pr_vertices(th)
        result["curves"] = {
            **image["curves"],
            "pixel_roc": _thin({"fpr": roc_fpr, "tpr": roc_tpr}),
            "pixel_pr": _thin({"recall": recall, "precision": precision}),
            "pro": _thin({"fpr": pro_fpr, "pro": pro_tpr}),
        }
    return result
