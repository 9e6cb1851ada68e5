"""pfadseg.metrics (DeSTSeg's eval.py and model/metrics.py, MVTec's pro_curve_util.py): exact against scikit-learn and
slow references, hand-computed toy cases, quirks, errors and integer counting."""

from __future__ import annotations

import logging
from bisect import bisect_left

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from pfadseg import metrics
from pfadseg.metrics import (
    MetricsError,
    aupro_destseg,
    aupro_mvtec,
    evaluate_maps,
    iap,
    image_level,
    image_scores,
    pixel_ap,
    pixel_auroc,
)
from tests.metrics import reference

SCORES = ("image_auroc", "pixel_auroc", "pixel_ap", "aupro", "iap", "iap90")


def random_case(seed: int, n: int = 2, h: int = 8, w: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Small maps with box defects (one always at a corner) and, for most seeds, many tied scores."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        for _ in range(rng.integers(0, 3)):
            y, x = rng.integers(0, h), rng.integers(0, w)
            a, b = rng.integers(1, 3, 2)
            masks[i, max(0, y - a) : y + a, max(0, x - b) : x + b] = True
    masks[0, 0, 0] = True
    levels = int(rng.choice([3, 5, 8, 1000]))
    lift = masks * rng.integers(0, levels // 2 + 1, masks.shape)
    maps = (rng.integers(0, levels, masks.shape) + lift) / levels
    return maps.astype(np.float32), masks


def toy_iap_case() -> tuple[np.ndarray, np.ndarray]:
    """Two 4x4 images: a 2x2 corner block and a border pixel; a 3-pixel diagonal (8-connected: one)."""
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, :2, :2] = masks[0, 2, 3] = True
    masks[1, [0, 1, 2], [0, 1, 2]] = True
    maps = np.full((2, 4, 4), 0.1)
    maps[0, :2, :2] = [[0.9, 0.8], [0.7, 0.6]]
    maps[0, 1, 3], maps[0, 2, 2], maps[0, 2, 3] = 0.2, 0.3, 0.5
    maps[1, [0, 1, 2], [0, 1, 2]] = [0.4, 0.7, 0.5]
    maps[1, 3, 3] = 0.6
    return maps, masks


# ------------------------------------------------------------------------------- against scikit-learn


@pytest.mark.parametrize("seed", range(8))
def test_pixel_auroc_and_ap_equal_sklearn_with_ties(seed: int) -> None:
    maps, masks = random_case(seed, n=3, h=16, w=16)
    assert pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-9)
    expected_ap = average_precision_score(masks.ravel(), maps.ravel())
    assert pixel_ap(maps, masks) == pytest.approx(expected_ap, abs=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_image_auroc_equals_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, 40).astype(np.float64)  # many ties
    labels = rng.random(40) < 0.6
    assert image_level(scores, labels)["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_evaluate_maps_image_auroc_uses_top_k_mean(seed: int) -> None:
    maps, masks = random_case(seed, n=12, h=8, w=8)
    top_k = 5
    scores = np.sort(maps.reshape(12, -1), axis=1)[:, ::-1][:, :top_k].mean(axis=1)
    labels = masks.reshape(12, -1).any(axis=1)
    result = evaluate_maps(maps, masks, top_k=top_k)
    assert result["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    assert result["pixel_ap"] == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()), abs=1e-9)


def test_image_scores_are_the_mean_of_the_top_k_pixels() -> None:
    maps = np.zeros((2, 2, 3), dtype=np.float32)
    maps[0] = [[5, 1, 3], [2, 4, 0]]
    maps[1] = [[7, 7, 7], [7, 0, 0]]
    np.testing.assert_array_equal(image_scores(maps, 3), [4.0, 7.0])
    np.testing.assert_array_equal(image_scores(maps, 6), [2.5, 28 / 6])
    assert image_scores(maps, 3).dtype == np.float64


def test_explicit_labels_replace_mask_labels() -> None:
    maps, masks = random_case(3, n=10)
    labels = masks.reshape(10, -1).any(axis=1)
    labels[[1, 4]] = ~labels[[1, 4]]
    scores = image_scores(maps, 4)
    result = evaluate_maps(maps, masks, top_k=4, labels=labels)
    assert result["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    assert result["n_anomalous_images"] == int(labels.sum())


# ------------------------------------------------------------------------------------------------ IAP


def test_iap_hand_computed_two_images_border_tie_and_diagonal() -> None:
    # instances: corner block [.9 .8 .7 .6] -> .7, border pixel -> .5, diagonal [.7 .5 .4] -> .5.
    # thresholds .5 .5 .7 (a tie, kept twice): precision 7/8 7/8 1 (one background .6 >= .5), IAP = 11/12;
    # ascending recall 1/3 2/3 1 -> IAP@90 at recall 1 -> 7/8. 4-connectivity (5 instances) or labelling
    # across images (block and diagonal share pixel (0, 0)) would give other values.
    maps, masks = toy_iap_case()
    assert iap(maps, masks) == pytest.approx((11 / 12, 7 / 8), abs=1e-15)
    assert reference.iap(maps, masks) == pytest.approx((11 / 12, 7 / 8), abs=1e-15)


def test_iap_running_max_and_k3_iap90_by_hand() -> None:
    # three single-pixel instances .2 .6 .9 in a row, background .5 .1 .8 between them:
    # s=.2: 3 hits / 5 predicted, s=.6: 2/3, s=.9: 1/1 -> IAP = (.6 + 2/3 + 1) / 3;
    # ascending recall 1/3 2/3 1 -> bisect_left(.9) = 2 -> the precision at s=.2: .6.
    maps = np.array([[[0.2, 0.5, 0.6, 0.1, 0.9, 0.8]]])
    masks = np.array([[[1, 0, 1, 0, 1, 0]]], dtype=bool)
    assert iap(maps, masks) == pytest.approx(((0.6 + 2 / 3 + 1) / 3, 0.6), abs=1e-15)
    # background .95 instead of .5: raw precision .6, 2/4, 1/2 -> running max .6 .6 .6 (not (.6+.5+.5)/3)
    maps[0, 0, 1] = 0.95
    assert iap(maps, masks) == pytest.approx((0.6, 0.6), abs=1e-15)


def test_iap_counts_background_as_true_positive_when_threshold_is_not_positive() -> None:
    # instance A (.5, 0.0) -> score 0.0, instance B (.3) -> .3; background -.5 .2 -.3.
    # s=0: sum(pred*gt >= 0) = 3 anomalous + 3 background (0 >= 0) = 6 over 4 predicted -> 1.5 (!); s=.3: 1.
    maps = np.array([[[0.0, -0.5, 0.3], [0.5, 0.2, -0.3]]])
    masks = np.array([[[1, 0, 1], [1, 0, 0]]], dtype=bool)
    assert iap(maps, masks) == pytest.approx((1.5, 1.5), abs=1e-15)
    assert reference.iap(maps, masks) == pytest.approx((1.5, 1.5), abs=1e-15)
    maps[0, 0, 0] = 1e-9  # the same instance with a positive score: no background counted -> 3/4 and 1
    assert iap(maps, masks)[0] == pytest.approx((0.75 + 1) / 2, abs=1e-12)


@pytest.mark.parametrize("seed", range(25))
def test_iap_equals_the_slow_reference(seed: int) -> None:
    maps, masks = random_case(seed, n=3)
    maps = maps - np.float32(0.25) * (seed % 2)  # odd seeds have scores <= 0 (the background quirk)
    assert iap(maps, masks) == pytest.approx(reference.iap(maps, masks), abs=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3, 9, 10, 11, 19, 20, 29, 30, 49, 50, 101])
def test_iap90_index_is_bisect_left_on_float_recalls(k: int) -> None:
    # k separate instances scored 1..k, a background pixel i + .5 after instance i: at s_i = i + 1 there are
    # k - i hits and k - i - 1 background pixels, so the precision (k - i) / (2 (k - i) - 1) rises with i.
    maps = np.zeros((1, 1, 2 * k))
    maps[0, 0, 0::2] = np.arange(1, k + 1)
    maps[0, 0, 1::2] = np.arange(k) + 0.5
    masks = np.zeros_like(maps, dtype=bool)
    masks[0, 0, 0::2] = True
    precision = [(k - i) / (2 * (k - i) - 1) for i in range(k)]
    recall = [1 - i / k for i in range(k)]
    at = bisect_left(recall[::-1], 0.9)
    assert k - 1 - at == k - int(np.ceil(0.9 * k))  # closed form of DeSTSeg's bisect: i = K - ceil(0.9 K)
    assert iap(maps, masks) == pytest.approx((sum(precision) / k, precision[::-1][at]), abs=1e-15)


# ---------------------------------------------------------------------------------------- AUPRO mvtec


def test_aupro_mvtec_hand_computed_with_tied_scores() -> None:
    # regions R1 = (.9, .5) and R2 = (.1); OK pixels .5 .5 .2 .1 .1. The tie .5 (R1 and two OK pixels) is
    # one point: (0, 0) (0, .25) (.4, .5) (.6, .5) (1, 1). At .3 on the segment (0,.25)-(.4,.5): .4375;
    # area .3 * (.25 + .4375) / 2 = .103125 -> /.3 = .34375. Splitting the tie would add (0, .5): .4375.
    maps = np.array([[[0.9, 0.5, 0.5, 0.1], [0.5, 0.2, 0.1, 0.1]]])
    masks = np.array([[[1, 0, 0, 1], [1, 0, 0, 0]]], dtype=bool)
    assert aupro_mvtec(maps, masks) == pytest.approx(0.34375, abs=1e-15)
    assert reference.aupro_mvtec(maps, masks) == pytest.approx(0.34375, abs=1e-15)


def test_aupro_mvtec_when_the_curve_jumps_past_the_limit_to_the_end() -> None:
    # R1 = .9, R2 = .7; OK pixels .8 0 0 0. Points (0,0) (0,.5) (.25,.5) (.25,1) and then all OK pixels tie
    # at 0, so the next point is (1, 1) (MVTec appends (1,1) again): interpolate between (.25,1) and (1,1).
    # Area .25 * .5 + .05 * 1 = .175 -> /.3 = 7/12.
    maps = np.array([[[0.9, 0.8, 0.0], [0.0, 0.0, 0.7]]])
    masks = np.array([[[1, 0, 0], [0, 0, 1]]], dtype=bool)
    assert aupro_mvtec(maps, masks) == pytest.approx(7 / 12, abs=1e-15)
    assert aupro_mvtec(maps, masks, fpr_limit=0.25) == pytest.approx(0.125 / 0.25, abs=1e-15)
    assert aupro_mvtec(maps, masks, fpr_limit=1.0) == pytest.approx(0.125 + 0.75, abs=1e-15)


def test_aupro_mvtec_of_random_maps_is_about_0_15() -> None:
    # the MVTec toy property: with random scores PRO ~ FPR, so the area up to .3 is ~ .5 * .3^2 / .3
    rng = np.random.default_rng(1338)
    masks = np.zeros((40, 64, 64), dtype=bool)
    for i, (y, x) in enumerate(rng.integers(0, 54, (40, 2))):
        masks[i, y : y + 10, x : x + 10] = True
    maps = rng.random(masks.shape).astype(np.float32)
    assert aupro_mvtec(maps, masks) == pytest.approx(0.15, abs=0.01)


@pytest.mark.parametrize("seed", range(25))
@pytest.mark.parametrize("limit", [0.3, 0.1, 1 / 3, 1.0])
def test_aupro_mvtec_equals_the_per_threshold_reference(seed: int, limit: float) -> None:
    maps, masks = random_case(seed)
    expected = reference.aupro_mvtec(maps, masks, limit)
    assert aupro_mvtec(maps, masks, limit) == pytest.approx(expected, abs=1e-9)


# -------------------------------------------------------------------------------------- AUPRO destseg


def test_aupro_destseg_hand_computed_single_region() -> None:
    # one region (.9), background .8 .1 .3 .2: 3 global points with FPR <= .3 -> resample onto x = 0, 1, 2.
    # Region curve fpr 0 0 .25 .5, tpr 0 1 1 1 at x = 0 2/3 4/3 2; the last sample (x = 1.4667) lands at
    # FPR .3. Samples: (0,0) (.125,1) (.3,1): area .0625 + .175 -> /.3 = 19/24 (MVTec: 1.0).
    maps = np.array([[[0.9, 0.8, 0.1, 0.3, 0.2]]])
    masks = np.array([[[1, 0, 0, 0, 0]]], dtype=bool)
    assert aupro_destseg(maps, masks) == pytest.approx(19 / 24, rel=1e-6)
    assert aupro_mvtec(maps, masks) == pytest.approx(1.0, abs=1e-12)


def test_aupro_destseg_inflates_when_a_region_curve_jumps_past_the_limit() -> None:
    # region A (.9 .8 .7 .6 .55) and region B (.1); background .5 .5 and eight 0. Region B's ROC goes
    # (0,0) (.2,0) (.2,1) (1,1): it has no point between .2 and 1, so index-resampling onto the 8 global
    # points puts two of its samples at FPR 11/35 and 23/35 before its last one at .3. The averaged curve
    # reaches FPR 3/7 > .3; area 3281/9800, divided by the last FPR .3 -> 3281/2940 > 1 (anomalib #1651,
    # #2442). MVTec: (0,.5) .. (.2,.5) (.2,1): (.1 + .1) / .3 = 2/3.
    maps = np.array([[[0.9, 0.8, 0.7, 0.6, 0.55, 0.5, 0.1, 0.5] + [0.0] * 8]])
    masks = np.array([[[1, 1, 1, 1, 1, 0, 1, 0] + [0] * 8]], dtype=bool)
    assert aupro_destseg(maps, masks) == pytest.approx(3281 / 2940, rel=1e-6)
    assert aupro_mvtec(maps, masks) == pytest.approx(2 / 3, abs=1e-15)
    assert aupro_destseg(maps, masks) > 1 > aupro_mvtec(maps, masks)


def test_aupro_destseg_of_a_perfect_binary_map_is_one_half() -> None:
    # all background ties at 0 (> 30 % of it): anomalib's edge branch keeps the point (1, 1) and resamples
    # (0,0) (0,1) (1,1) onto 2 global points -> (0,0) (1,1): area .5 / last FPR 1 = .5, where MVTec gives 1.
    masks = np.zeros((3, 8, 8), dtype=bool)
    masks[1, 2:4, 2:5] = masks[2, 5:, 5:] = masks[2, 0, 0] = True
    maps = masks.astype(np.float32)
    assert aupro_destseg(maps, masks) == pytest.approx(0.5, rel=1e-6)
    assert aupro_mvtec(maps, masks) == pytest.approx(1.0, abs=1e-12)


def test_aupro_destseg_edge_branch_with_an_unsorted_index_list() -> None:
    # 40 % of the background ties at the top score 1.0; region scores above it (1.5, 2.0) and between it
    # and the rest (.5): anomalib appends an earlier index to the kept ones and interpolates on an
    # unsorted grid (torch.searchsorted's binary search decides) -- same as the list reference.
    maps = np.zeros((1, 4, 10))
    maps[0, 0, :] = 1.0
    maps[0, 1, :6] = 1.0
    masks = np.zeros_like(maps, dtype=bool)
    masks[0, 3, [0, 1]] = True
    maps[0, 3, [0, 1]] = [1.5, 0.5]
    masks[0, 3, 5] = True
    maps[0, 3, 5] = 2.0
    expected = reference.aupro_destseg(maps, masks)
    assert aupro_destseg(maps, masks) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("limit", [0.3, 0.1])
def test_aupro_destseg_equals_the_list_reference(seed: int, limit: float) -> None:
    maps, masks = random_case(seed, n=2, h=7, w=7)
    try:
        expected = reference.aupro_destseg(maps, masks, limit)
    except ZeroDivisionError:  # no global ROC point inside the limit: undefined (we say NaN and warn)
        assert np.isnan(aupro_destseg(maps, masks, limit))
        return
    # the reference keeps anomalib's eps in every slope; ours only where it matters (zero-width steps)
    assert aupro_destseg(maps, masks, limit) == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_lower_bound_is_the_binary_search_of_bisect_left_on_unsorted_arrays() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        arr = rng.integers(0, 10, rng.integers(1, 12)).astype(np.float64)
        keys = rng.integers(-1, 11, 20).astype(np.float64)
        expected = [bisect_left(arr.tolist(), k) for k in keys]
        np.testing.assert_array_equal(metrics._lower_bound(arr, keys), expected)


# ----------------------------------------------------------------------------------- perfect / inverted


def perfect_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    masks = np.zeros((6, 16, 16), dtype=bool)
    masks[2, 3:8, 3:8] = masks[3, 0:4, 12:] = masks[3, 10:, :3] = True
    masks[4, 15, 15] = masks[5, 6:9, 1:14] = True
    noise = np.random.default_rng(0).random(masks.shape)
    return masks + 0.01 * noise, masks, masks.reshape(6, -1).any(axis=1)


@pytest.mark.parametrize("mode", ["mvtec", "destseg"])
def test_perfect_maps_score_one(mode: str) -> None:
    maps, masks, _ = perfect_case()
    result = evaluate_maps(maps, masks, top_k=10, aupro_mode=mode)
    for key in SCORES:
        close = 0.02 if (mode, key) == ("destseg", "aupro") else 1e-12  # index resampling blurs the corner
        assert result[key] == pytest.approx(1.0, abs=close), key


def test_inverted_maps_score_the_derived_lows() -> None:
    maps, masks, labels = perfect_case()
    inverted = 2 - maps  # anomalous pixels in (.99, 1], background in (1.99, 2], all distinct
    result = evaluate_maps(inverted, masks, top_k=10)
    pos, neg = np.sort(inverted[masks])[::-1], inverted[~masks]
    n_pos, n_neg = pos.size, neg.size
    # AP: all background first (precision 0 at recall 0), then the j-th positive at precision j / (N + j)
    expected_ap = sum(j / (n_neg + j) for j in range(1, n_pos + 1)) / n_pos
    # IAP: precision c/(N+c) falls as the threshold rises, so the running max is the lowest threshold's
    lowest = min(np.sort(inverted[i][r])[::-1][int(0.5 * r.sum())] for i, r in reference.regions(masks))
    c0 = int((pos >= lowest).sum())
    assert result["pixel_auroc"] == 0.0
    assert result["pixel_ap"] == pytest.approx(expected_ap, abs=1e-12)
    assert result["aupro"] == 0.0
    assert (result["iap"], result["iap90"]) == pytest.approx((c0 / (n_neg + c0),) * 2, abs=1e-12)
    assert image_level(-image_scores(maps, 10), labels)["image_auroc"] == 0.0


# ---------------------------------------------------------------------------------------- entry point


def test_evaluate_maps_reports_every_metric_and_curves() -> None:
    maps, masks = random_case(5, n=10, h=16, w=16)
    result = evaluate_maps(maps, masks, top_k=8, aupro_mode="mvtec", fpr_limit=0.3, curves=True)
    assert result["aupro_mode"] == "mvtec" and result["top_k"] == 8 and result["n_images"] == 10
    assert result["aupro"] == pytest.approx(aupro_mvtec(maps, masks), abs=1e-15)
    assert (result["iap"], result["iap90"]) == iap(maps, masks)
    curves = result["curves"]
    assert set(curves) == {"image_roc", "image_pr", "pixel_roc", "pixel_pr", "pro"}
    for curve in curves.values():
        lengths = {len(column) for column in curve.values()}
        assert len(lengths) == 1 and 2 <= lengths.pop() <= metrics.CURVE_POINTS
        assert all(type(v) is float for column in curve.values() for v in column)
    roc = curves["pixel_roc"]
    assert (roc["fpr"][0], roc["tpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(result["pixel_auroc"], abs=0.02)
    pro = curves["pro"]
    assert pro["fpr"][-1] == 0.3
    assert np.trapezoid(pro["pro"], pro["fpr"]) / 0.3 == pytest.approx(result["aupro"], abs=0.02)
    image = curves["image_roc"]
    assert np.trapezoid(image["tpr"], image["fpr"]) == pytest.approx(result["image_auroc"], abs=1e-12)
    labels, scores = masks.any(axis=(1, 2)), image_scores(maps, 8)
    assert result["image_ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    image_pr = curves["image_pr"]
    recall_steps = np.diff(np.concatenate(([0.0], image_pr["recall"])))
    assert float(np.sum(recall_steps * np.array(image_pr["precision"]))) == pytest.approx(result["image_ap"], abs=1e-12)


def test_destseg_mode_is_reported_and_differs_only_in_aupro() -> None:
    maps, masks = random_case(7, n=6, h=12, w=12)
    mvtec = evaluate_maps(maps, masks, top_k=5)
    destseg = evaluate_maps(maps, masks, top_k=5, aupro_mode="destseg", curves=True)
    assert destseg["aupro_mode"] == "destseg"
    assert destseg["aupro"] == pytest.approx(aupro_destseg(maps, masks), abs=1e-15)
    assert {k: v for k, v in destseg.items() if k not in ("aupro", "aupro_mode", "curves")} == \
        {k: v for k, v in mvtec.items() if k not in ("aupro", "aupro_mode")}


def test_only_anomalous_images_give_nan_image_auroc_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    maps, masks = random_case(2, n=3)
    masks[:, 0, 0] = True  # every image anomalous
    with caplog.at_level(logging.WARNING, logger="pfadseg.metrics"):
        result = evaluate_maps(maps, masks, top_k=3, curves=True)
    assert np.isnan(result["image_auroc"]) and "only anomalous images" in caplog.text
    assert result["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-9)
    assert result["curves"]["image_roc"] == {"fpr": [], "tpr": []}
    assert result["curves"]["image_pr"] == {"recall": [], "precision": []} and np.isnan(result["image_ap"])
    assert np.isnan(image_level(np.ones(4), np.zeros(4, dtype=bool))["image_auroc"])


# ------------------------------------------------------------------------------------------ errors


def test_a_test_set_without_anomalous_regions_is_refused_clearly() -> None:
    maps = np.random.default_rng(0).random((4, 16, 16))
    masks = np.zeros((4, 16, 16), dtype=bool)
    for fn in (evaluate_maps, pixel_auroc, pixel_ap, aupro_mvtec, aupro_destseg, iap):
        with pytest.raises(MetricsError, match="no anomalous region"):
            fn(maps, masks)


def test_non_finite_maps_name_the_image() -> None:
    maps, masks = random_case(0, n=4)
    maps[2, 3, 3] = np.nan
    with pytest.raises(MetricsError, match="image 2 contains NaN or inf"):
        evaluate_maps(maps, masks)
    maps[2, 3, 3], maps[3, 0, 0] = 0.5, -np.inf
    with pytest.raises(MetricsError, match="image 3"):
        pixel_auroc(maps, masks)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"masks": np.zeros((2, 8, 9), dtype=bool)}, "shape mismatch"),
        ({"maps": np.zeros((8, 8))}, "N x H x W"),
        ({"masks": np.full((2, 8, 8), 2)}, "boolean"),
        ({"aupro_mode": "pixel"}, "aupro_mode"),
        ({"fpr_limit": 0.0}, "fpr_limit"),
        ({"top_k": 65}, "top_k"),
        ({"labels": np.ones(3, dtype=bool)}, "image labels"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict, message: str) -> None:
    maps, masks = random_case(0)
    arguments = {"maps": maps, "masks": masks, **kwargs}
    with pytest.raises(MetricsError, match=message):
        evaluate_maps(arguments.pop("maps"), arguments.pop("masks"), **arguments)


def test_an_all_anomalous_test_set_is_refused() -> None:
    with pytest.raises(MetricsError, match="no normal pixel"):
        pixel_auroc(np.ones((1, 2, 2)), np.ones((1, 2, 2), dtype=bool))


# ------------------------------------------------------------------------------ integer counting


def test_counts_stay_exact_beyond_float32_integers() -> None:
    n = 2**24 + 3
    assert np.cumsum(np.ones(n, dtype=np.float32))[-1] != n  # what a float32 running count would give
    counts = metrics._count_at_least(np.zeros(n, dtype=np.float32), np.array([0.0, 1.0], dtype=np.float32))
    assert counts.dtype == np.int64 and counts.tolist() == [n, 0]


def test_metrics_over_more_than_2_pow_24_pixels_are_exact() -> None:
    masks = np.zeros((257, 256, 256), dtype=bool)  # 16.8 M pixels
    masks[0, :10, :10] = True
    maps = np.zeros(masks.shape, dtype=np.float32)
    maps[masks] = 1.0
    n_pos, n_neg = 100, masks.size - 100
    n_tied = 2**24 + 1  # background pixels tied with the anomalies at 1.0 (an odd count above 2^24)
    maps.reshape(-1)[: n_tied + n_pos] = 1.0  # the first n_tied + 100 pixels hold all 100 anomalous ones
    result = evaluate_maps(maps, masks, top_k=1)
    assert result["pixel_ap"] == pytest.approx(n_pos / (n_pos + n_tied), rel=1e-13)
    assert result["pixel_auroc"] == pytest.approx((n_neg - n_tied + 0.5 * n_tied) / n_neg, rel=1e-13)
    assert result["iap"] == pytest.approx(n_pos / (n_pos + n_tied), rel=1e-13)
    # PRO: (0,0) -> (n_tied/N, 1); at FPR .3 the PRO is .3 N / n_tied
    assert result["aupro"] == pytest.approx(0.5 * 0.3 * n_neg / n_tied, rel=1e-13)


def test_smoothed_max_scores_match_scipy_and_feed_evaluate_maps() -> None:
    from scipy import ndimage

    from pfadseg.metrics import smoothed_max_scores

    rng = np.random.default_rng(3)
    maps = rng.random((4, 32, 32)).astype(np.float32)
    maps[1, 5, 5] = 50.0  # a single hot pixel is spread by the smoothing: max of the smoothed map is far lower
    expected = [ndimage.gaussian_filter(m.astype(np.float64), sigma=4).max() for m in maps]
    scores = smoothed_max_scores(maps, 4.0)
    np.testing.assert_allclose(scores, expected, rtol=1e-12)
    assert scores[1] < 50.0 / 10 and smoothed_max_scores(maps, 0.0)[1] == 50.0
    masks = np.zeros(maps.shape, dtype=bool)
    masks[1, 4:7, 4:7] = True
    result = evaluate_maps(maps, masks, scores=scores)
    assert result["image_auroc"] == 1.0  # image 1 has the highest smoothed max
    with pytest.raises(MetricsError, match="image scores must be 4 finite values"):
        evaluate_maps(maps, masks, scores=scores[:3])
