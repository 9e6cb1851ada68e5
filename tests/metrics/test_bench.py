"""pfadseg.bench.metrics on a tiny category: both sides run and agree where they compute the same thing."""

from __future__ import annotations

import pytest

from pfadseg.bench.metrics import bench_metrics


def test_bench_metrics_times_both_sides_and_they_agree(capsys: pytest.CaptureFixture[str]) -> None:
    result = bench_metrics(n_images=12, size=32, seed=1)
    out = capsys.readouterr().out
    assert "speed-up" in out and "AUPRO destseg" in out
    assert result["pixels"] == 12 * 32 * 32 and result["n_regions"] > 0
    for key in ("ours_mvtec_s", "naive_mvtec_s", "ours_destseg_s", "naive_destseg_aupro_s"):
        assert result[key] > 0, key
    ours, naive = result["ours"], result["naive"]
    for key in ("pixel_auroc", "pixel_ap"):  # exact on both sides
        assert ours[key] == pytest.approx(naive[key], abs=1e-9), key
    for key in ("image_auroc", "iap", "iap90"):  # float32 top-k means and float32 products on the naive side
        assert ours[key] == pytest.approx(naive[key], abs=1e-6), key
    assert ours["aupro"] == pytest.approx(naive["aupro"], abs=0.02)  # 200 thresholds only approximate it
