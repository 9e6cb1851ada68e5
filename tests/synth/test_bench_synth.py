"""The synthesis benchmark's bookkeeping (its speed figures are printed by `pfadseg bench synth`, not tested)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pfadseg.bench.synth import _mix, bench_synth
from pfadseg.config import Config


def test_mix_is_the_rate_of_equal_samples_per_category() -> None:
    rates = {"none": {"r": 100.0}, "slight": {"r": 50.0}, "rotate": {"r": 25.0}}
    # 1 + 1 + 2 categories, N samples each: time N/100 + N/50 + 2N/25 for 4N samples.
    assert _mix(rates, {"none": 1, "slight": 1, "rotate": 2}, "r") == pytest.approx(4 / (0.01 + 0.02 + 0.08))
    assert _mix(rates, {"none": 0, "slight": 0, "rotate": 3}, "r") == pytest.approx(25.0)


def test_bench_synth_reports_every_group_and_the_mix(
    make_config: Callable[..., Config], capsys: pytest.CaptureFixture[str]
) -> None:
    result = bench_synth(make_config(), image_size=64, batch_size=4, device="cpu", n_reference=4, n_batches=4,
                         n_masks=16, n_textures=4)
    assert set(result["groups"]) == {"none", "slight", "rotate", "mvtec_mix"}
    for row in result["groups"].values():
        assert row["speedup"] == pytest.approx(row["composer_samples_per_s"] / row["reference_samples_per_s"])
        assert row["reference_with_decoding_samples_per_s"] > 0
    assert sum(result["group_categories"].values()) == 15
    assert "MVTec mix (5/3/7)" in capsys.readouterr().out


def test_bench_synth_decodes_given_files(
    make_config: Callable[..., Config], texture_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good"
    good.mkdir()
    for i in range(3):
        Image.fromarray(np.full((40, 50, 3), 60 * i, dtype=np.uint8)).save(good / f"{i:03d}.png")
    bench_synth(make_config(), image_size=64, batch_size=4, device="cpu", n_reference=4, n_batches=4, n_masks=16,
                n_textures=4, images_dir=good, textures_dir=texture_dir)
    out = capsys.readouterr().out
    assert f"3 training images ({good})" in out and f"6 textures ({texture_dir})" in out


def test_bench_synth_names_a_folder_without_images(make_config: Callable[..., Config], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}: no images found"):
        bench_synth(make_config(), image_size=64, batch_size=4, device="cpu", n_reference=4, n_batches=4,
                    n_masks=16, n_textures=4, images_dir=tmp_path)
