"""`pfadseg bench metrics`: all metrics of one category vs a straightforward per-threshold implementation.

The straightforward side is what evaluation code commonly does (cf. DeSTSeg's model/metrics.py): scikit-learn for
AUROC and AP over all pixels, a 200-threshold loop for the MVTec AUPRO, DeSTSeg's per-instance loop for IAP
and one scikit-learn ROC per region for the destseg AUPRO. Both run in the same process on the same data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from pfadseg.metrics import evaluate_maps

NAIVE_PRO_THRESHOLDS = 200
NAIVE_DESTSEG_REGIONS = 3  # the per-region ROC loop is timed on this many regions and scaled to all


def synthetic_category(n_images: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random test set like an MVTec category: a quarter normal, the rest with 1-3 elliptic defects; float32
    sigmoid maps of smoothed noise plus a blurred mask, with a random offset per image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    masks = np.zeros((n_images, size, size), dtype=bool)
    for i in range(n_images // 4, n_images):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(0, size, 2)
            ry, rx = rng.uniform(0.02, 0.12, 2) * size
            angle = rng.uniform(0, np.pi)
            u = (yy - cy) * np.cos(angle) + (xx - cx) * np.sin(angle)
            v = -(yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle)
            masks[i] |= (u / ry) ** 2 + (v / rx) ** 2 <= 1
    noise = ndimage.gaussian_filter(rng.standard_normal(masks.shape).astype(np.float32), sigma=(0, 2, 2))
    signal = ndimage.gaussian_filter(masks.astype(np.float32), sigma=(0, 3, 3))
    logits = 8.0 * signal + 2.0 * noise / noise.std() - 6.0 + rng.normal(0, 0.75, (n_images, 1, 1))
    return (1 / (1 + np.exp(-logits))).astype(np.float32), masks


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    began = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - began


def naive_metrics(maps: np.ndarray, masks: np.ndarray, *, top_k: int, fpr_limit: float) -> dict[str, float]:
    """Straightforward metrics: sklearn over all pixels, per-threshold AUPRO loop, per-instance IAP loop."""
    n = maps.shape[0]
    scores = np.sort(maps.reshape(n, -1), axis=1)[:, ::-1][:, :top_k].mean(axis=1)
    labels = masks.reshape(n, -1).any(axis=1)
    flat, gt = maps.ravel(), masks.ravel()
    structure = np.ones((3, 3), dtype=bool)
    regions = np.zeros(maps.shape, dtype=np.int64)
    offset = 0
    for i in range(n):
        lab, k = ndimage.label(masks[i], structure)
        regions[i] = np.where(lab > 0, lab + offset, 0)
        offset += k
    region_flat = regions.ravel()
    sizes = np.bincount(region_flat, minlength=offset + 1)[1:]
    n_ok = int((~gt).sum())
    fprs, pros = [0.0], [0.0]
    for threshold in np.linspace(flat.max(), flat.min(), NAIVE_PRO_THRESHOLDS):
        predicted = flat >= threshold
        fprs.append(float((predicted & ~gt).sum()) / n_ok)
        pros.append(float(np.mean(np.bincount(region_flat[predicted], minlength=offset + 1)[1:] / sizes)))
    fpr, pro = np.array([*fprs, 1.0]), np.array([*pros, 1.0])
    keep = fpr <= fpr_limit
    end = np.interp(fpr_limit, fpr, pro)
    aupro = float(np.trapezoid(np.append(pro[keep], end), np.append(fpr[keep], fpr_limit))) / fpr_limit
    instance = []
    for r in range(1, offset + 1):
        values = np.sort(flat[region_flat == r])[::-1]
        instance.append(values[int(0.5 * values.size)])
    instance.sort()
    precision = [float(np.sum(flat * gt >= s) / np.sum(flat >= s)) for s in instance]
    precision = list(np.maximum.accumulate(precision))
    recall = [1 - i / len(instance) for i in range(len(instance))]
    return {
        "image_auroc": float(roc_auc_score(labels, scores)),
        "pixel_auroc": float(roc_auc_score(gt, flat)),
        "pixel_ap": float(average_precision_score(gt, flat)),
        "aupro": aupro,
        "iap": sum(precision) / len(instance),
        "iap90": precision[::-1][int(np.searchsorted(recall[::-1], 0.9))],
    }


def naive_destseg_region_time(maps: np.ndarray, masks: np.ndarray) -> tuple[float, int]:
    """Seconds per region of the straightforward destseg AUPRO: its exact ROC over background U region only
    (the resampling comes on top, so this is a lower bound)."""
    per_image = np.pad(np.ones((1, 3, 3), dtype=bool), ((1, 1), (0, 0), (0, 0)))  # 8-connected, per image
    regions, n_regions = ndimage.label(masks, structure=per_image)
    flat, region_flat = maps.ravel(), regions.ravel()
    background = region_flat == 0
    timed = min(NAIVE_DESTSEG_REGIONS, n_regions)
    began = time.perf_counter()
    for r in range(1, timed + 1):
        inside = region_flat == r
        union = background | inside
        roc_curve(inside[union], flat[union], drop_intermediate=False)
    return (time.perf_counter() - began) / timed, n_regions


def bench_metrics(*, n_images: int = 160, size: int = 256, seed: int = 0) -> dict[str, Any]:
    """Time ``evaluate_maps`` (mvtec and destseg AUPRO) beside a straightforward implementation; print it."""
    maps, masks = synthetic_category(n_images, size, seed)
    warm = slice(max(n_images // 4 - 2, 0), n_images // 4 + 2)  # normal and anomalous images
    evaluate_maps(maps[warm], masks[warm], top_k=1)  # warm-up (imports, page faults)
    ours, t_ours = _timed(lambda: evaluate_maps(maps, masks, top_k=100, aupro_mode="mvtec", fpr_limit=0.3))
    ours_d, t_ours_d = _timed(lambda: evaluate_maps(maps, masks, top_k=100, aupro_mode="destseg",
                                                    fpr_limit=0.3))
    naive, t_naive = _timed(lambda: naive_metrics(maps, masks, top_k=100, fpr_limit=0.3))
    per_region, n_regions = naive_destseg_region_time(maps, masks)
    t_naive_d = per_region * n_regions
    result = {
        "n_images": n_images, "size": size, "pixels": int(maps.size), "n_regions": n_regions,
        "ours_mvtec_s": t_ours, "naive_mvtec_s": t_naive, "speedup_mvtec": t_naive / t_ours,
        "ours_destseg_s": t_ours_d, "naive_destseg_aupro_s": t_naive_d,
        "speedup_destseg_aupro": t_naive_d / max(t_ours_d - t_ours, 1e-9),
        "ours": ours, "ours_destseg_aupro": ours_d["aupro"], "naive": naive,
    }
    print(f"metrics of one category: {n_images} maps {size}x{size} ({maps.size / 1e6:.1f} M pixels, "
          f"{n_regions} GT regions)")
    print(f"  ours, AUPRO mvtec  : {t_ours:8.2f} s   all metrics")
    print(f"  straightforward    : {t_naive:8.2f} s   sklearn AUROC/AP + {NAIVE_PRO_THRESHOLDS}-threshold "
          f"AUPRO + per-instance IAP  -> speed-up x{t_naive / t_ours:.1f}")
    print(f"  ours, AUPRO destseg: {t_ours_d:8.2f} s   all metrics (AUPRO alone ~{t_ours_d - t_ours:.2f} s)")
    print(f"  straightforward    : {t_naive_d:8.2f} s   destseg AUPRO alone, >= one sklearn ROC per region "
          f"({per_region:.2f} s x {n_regions}, timed on {min(NAIVE_DESTSEG_REGIONS, n_regions)})"
          f"  -> speed-up x{result['speedup_destseg_aupro']:.1f}")
    for key in ("image_auroc", "pixel_auroc", "pixel_ap", "aupro", "iap", "iap90"):
        print(f"  {key:12s} ours {ours[key]:.6f}   straightforward {naive[key]:.6f}")
    print(f"  aupro (destseg mode) {ours_d['aupro']:.6f}")
    return result
