"""Large images in ``predict``: outputs computed and written band by band equal the whole-image formula, the
streamed PNG, the pixel limit (``max_pixels``), thresholds outside the score range, and the memory benchmark."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pfadseg.bench.predict import bench_predict_memory
from pfadseg.data.images import load_image
from pfadseg.evaluate import infer_maps
from pfadseg.predict import (
    PngWriter,
    PredictError,
    Predictor,
    heatmap_rgb,
    load_predictor,
    output_bands,
    output_paths,
    overlay_rgb,
    upsampled_bands,
    write_outputs,
)
from tests.predict.conftest import TrainedRun


def _whole_image_outputs(image: Image.Image, seg: torch.Tensor, pixel_threshold: float) -> dict[str, np.ndarray]:
    """The formula predict used before bands: the map upsampled whole, then coloured, blended and thresholded."""
    width, height = image.size
    full = F.interpolate(seg, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()
    heat = heatmap_rgb(full)
    return {"heatmap": heat, "overlay": overlay_rgb(np.asarray(image), heat),
            "mask": np.where(full >= pixel_threshold, 255, 0).astype(np.uint8)}


def _assert_outputs(paths: dict[str, Path], expected: dict[str, np.ndarray]) -> None:
    for kind, path in paths.items():
        with Image.open(path) as im:
            assert im.mode == ("L" if kind == "mask" else "RGB"), kind
            np.testing.assert_array_equal(np.asarray(im), expected[kind], err_msg=kind)


@pytest.mark.parametrize("size", [(64, 64), (150, 100), (37, 301)])
def test_outputs_written_band_by_band_equal_the_whole_image_formula(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    size: tuple[int, int]) -> None:
    monkeypatch.setattr("pfadseg.predict.BAND_PIXELS", 1000)  # several bands even for these small images
    width, height = size
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8))
    seg = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    paths = output_paths(tmp_path, "x")
    write_outputs(paths, output_bands(image, seg, 0.5), width, height)
    _assert_outputs(paths, _whole_image_outputs(image, seg, 0.5))


def test_predict_outputs_equal_the_whole_image_formula(predictor: Predictor, trained_run: TrainedRun,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pfadseg.predict.BAND_PIXELS", 1000)
    path = tmp_path / "wide.png"
    Image.open(trained_run.test_images / "good" / "000.png").convert("RGB").resize((150, 100)).save(path)
    report = predictor.predict([path], tmp_path / "out", progress=False)
    maps = infer_maps(predictor.detector, load_image(path, predictor.image_size)[None], batch_size=1,
                      device=predictor.device, amp=False)
    with Image.open(path) as image:
        expected = _whole_image_outputs(image.convert("RGB"), torch.from_numpy(maps.seg)[:, None],
                                        predictor.pixel_threshold)
    _assert_outputs(report.predictions[0].outputs, expected)


def test_a_map_too_large_for_one_call_is_upsampled_band_by_band(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pfadseg.predict.MAP_BLOCK_PIXELS", 0)
    monkeypatch.setattr("pfadseg.predict.BAND_PIXELS", 1000)
    seg = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    for height, width in ((150, 100), (2000, 40), (40, 900)):  # the last one fewer rows than the map
        bands = list(upsampled_bands(seg, height, width))
        assert max(len(band) for band in bands) == max(1, 1000 // width)
        full = F.interpolate(seg, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()
        np.testing.assert_allclose(np.concatenate(bands), full, rtol=0, atol=1e-5)


def test_png_writer_streams_rows_that_pillow_reads_back(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for shape in ((50, 33), (50, 33, 3)):
        array = rng.integers(0, 256, shape, dtype=np.uint8)
        path = tmp_path / f"{len(shape)}.png"
        with path.open("wb") as fh:
            png = PngWriter(fh, 33, 50, channels=1 if len(shape) == 2 else 3)
            for top, bottom in ((0, 1), (1, 17), (17, 50)):
                png.write(array[top:bottom])
            png.close()
        with Image.open(path) as im:
            np.testing.assert_array_equal(np.asarray(im), array)
    with (tmp_path / "short.png").open("wb") as fh:
        png = PngWriter(fh, 33, 50, channels=3)
        png.write(array[:10])
        with pytest.raises(ValueError, match="40 row"):
            png.close()


def test_images_over_max_pixels_are_refused_naming_the_file_and_the_option(
    predictor: Predictor, trained_run: TrainedRun, tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(trained_run.test_images / "good" / "000.png", inputs / "square.png")  # 64 x 64 = 4,096 px
    Image.fromarray(np.zeros((70, 100, 3), np.uint8)).save(inputs / "wide.png")
    report = predictor.predict([inputs], tmp_path / "out", max_pixels=64 * 64, progress=False)
    assert report.n_ok == 1, "the limit itself is allowed"
    [(path, reason)] = report.failed
    assert path.name == "wide.png"
    assert reason.startswith(f"{inputs / 'wide.png'}: image is 100 x 70 = 7,000 px, more than the limit of 4,096 px")
    assert "pfadseg predict --max-pixels N" in reason
    assert not [w for w in recwarn.list if issubclass(w.category, Image.DecompressionBombWarning)]
    with pytest.raises(PredictError, match="--max-pixels must be >= 1, got 0"):
        predictor.predict([inputs], tmp_path / "out", max_pixels=0)


@pytest.mark.parametrize("option", ["threshold", "pixel_threshold"])
@pytest.mark.parametrize("value", [-0.01, 1.5, 5.0, float("nan")])
def test_thresholds_outside_the_score_range_are_refused(trained_run: TrainedRun, option: str, value: float) -> None:
    flag = "--" + option.replace("_", "-")
    message = f"{flag} {value:g} is outside [0, 1], the range of pfadseg anomaly scores"
    with pytest.raises(PredictError, match=re.escape(message)):
        load_predictor(trained_run.calibrated_dir, device="cpu", **{option: value})


def test_thresholds_at_the_ends_of_the_range_are_accepted(trained_run: TrainedRun) -> None:
    ends = load_predictor(trained_run.model_dir, device="cpu", threshold=1.0, pixel_threshold=0.0)
    assert (ends.image_threshold, ends.pixel_threshold) == (1.0, 0.0)


def test_bench_predict_memory_smoke(trained_run: TrainedRun) -> None:
    """Both fresh processes run and report; the figure itself is the benchmark's, not a test's."""
    lines: list[str] = []
    result = bench_predict_memory(trained_run.cfg, size=96, device="cpu", echo=lines.append)
    assert result["peak_rss"] > 0 and result["peak_rss_small"] > 0
    assert result["decoded_uint8_bytes"] == 96 * 96 * 3
    assert any("bytes per pixel" in line for line in lines)
    with pytest.raises(ValueError, match=r"--size must exceed data\.image_size"):
        bench_predict_memory(trained_run.cfg, size=64, device="cpu")
