"""``predict`` on users' files (mixed formats and sizes, a corrupt one, same-named files in different folders),
``load_predictor`` from a run folder or a seg.pt, thresholds (the ADPS range too), collision-free names, and the
predict benchmark."""

from __future__ import annotations

import csv
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pfadseg.arch.destseg import Variant
from pfadseg.artifacts import ArtifactError
from pfadseg.bench.predict import bench_predict
from pfadseg.data.images import load_image
from pfadseg.evaluate import infer_maps
from pfadseg.metrics import image_scores
from pfadseg.predict import (
    CSV_FIELDS,
    CSV_NAME,
    PredictError,
    Predictor,
    collect_inputs,
    load_predictor,
    model_input,
    read_rgb,
)
from tests.predict.conftest import TrainedRun


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _outputs(*keys: str) -> set[str]:
    return {f"{key}_{kind}.png" for key in keys for kind in ("heatmap", "overlay", "mask")}


def _user_folder(trained_run: TrainedRun, root: Path) -> dict[str, tuple[int, int]]:
    """Good and defective test images (same names in two folders), grayscale, RGBA, JPEG, another size, and a
    truncated PNG; returns ``{relative path: (width, height)}`` of the readable ones."""
    test = trained_run.test_images
    defect = next(p for p in sorted(test.iterdir()) if p.name != "good")
    (root / "good").mkdir(parents=True)
    (root / "defect").mkdir()
    shutil.copy(test / "good" / "000.png", root / "good" / "000.png")
    shutil.copy(test / "good" / "001.png", root / "good" / "001.png")
    shutil.copy(defect / "000.png", root / "defect" / "000.png")
    rgb = np.asarray(Image.open(test / "good" / "002.png").convert("RGB"))
    Image.fromarray(rgb).convert("L").save(root / "gray.png")
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, dtype=np.uint8)])
    Image.fromarray(rgba, "RGBA").save(root / "rgba.png")
    Image.fromarray(rgb).save(root / "photo.jpg", quality=90)
    Image.fromarray(rgb).resize((100, 70)).save(root / "defect" / "wide.png")
    Image.fromarray(rgb).save(root / "broken.png")
    data = (root / "broken.png").read_bytes()
    (root / "broken.png").write_bytes(data[: len(data) // 2])
    (root / "notes.txt").write_text("not an image")
    size = rgb.shape[1], rgb.shape[0]
    return {"good/000.png": size, "good/001.png": size, "defect/000.png": size, "gray.png": size,
            "rgba.png": size, "photo.jpg": size, "defect/wide.png": (100, 70)}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_predict_on_a_mixed_folder(trained_run: TrainedRun, predictor: Predictor, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    sizes = _user_folder(trained_run, inputs)
    out = tmp_path / "out"
    report = predictor.predict([inputs], out, batch_size=3, progress=False)

    assert report.n_ok == len(sizes)
    assert [(p.name, "cannot read image" in reason) for p, reason in report.failed] == [("broken.png", True)]
    keys = [name.rsplit(".", 1)[0] for name in sizes]
    assert _files(out) == _outputs(*keys) | {CSV_NAME}, "outputs of readable images only; no temporary files"

    rows = {Path(r["path"]).relative_to(inputs.resolve()).as_posix(): r for r in _read_csv(out / CSV_NAME)}
    assert set(rows) == {*sizes, "broken.png"} and list(rows["broken.png"]) == list(CSV_FIELDS)
    assert rows["broken.png"]["status"] == "failed" and "cannot read image" in rows["broken.png"]["error"]
    for name, size in sizes.items():
        row = rows[name]
        key = name.rsplit(".", 1)[0]
        assert row["status"] == "ok" and (int(row["width"]), int(row["height"])) == size
        assert row["label"] == ("anomalous" if float(row["score"]) >= predictor.image_threshold else "normal")
        assert float(row["threshold"]) == pytest.approx(predictor.image_threshold, abs=1e-6)
        assert row["heatmap"] == f"{key}_heatmap.png" and row["mask"] == f"{key}_mask.png"
        for kind, mode in (("heatmap", "RGB"), ("overlay", "RGB"), ("mask", "L")):
            with Image.open(out / f"{key}_{kind}.png") as im:
                assert im.size == size and im.mode == mode, f"{key}_{kind}: original resolution"
        mask = np.asarray(Image.open(out / f"{key}_mask.png"))
        assert set(np.unique(mask)) <= {0, 255}

    # the same model path as the evaluation: load_image + infer_maps + image_scores give the same scores
    files = [inputs / "good" / "000.png", inputs / "defect" / "000.png", inputs / "defect" / "wide.png"]
    size = predictor.image_size
    maps = infer_maps(predictor.detector, np.stack([load_image(f, size) for f in files]), batch_size=4,
                      device=predictor.device, amp=False)
    expected = image_scores(maps.seg, predictor.top_k)
    got = [float(rows[f.relative_to(inputs).as_posix()]["score"]) for f in files]
    np.testing.assert_allclose(got, expected, atol=1e-5)

    first = (out / CSV_NAME).read_text()
    again = predictor.predict([inputs], out, batch_size=2, progress=False)
    assert again.n_ok == report.n_ok and len(again.failed) == 1
    assert _files(out) == _outputs(*keys) | {CSV_NAME}, "a second run overwrites, leaving nothing else"
    assert (out / CSV_NAME).read_text() == first, "batch size does not change the results"


def test_a_file_that_turns_unreadable_loses_its_old_outputs(predictor: Predictor, trained_run: TrainedRun,
                                                            tmp_path: Path) -> None:
    image = tmp_path / "in" / "part.png"
    image.parent.mkdir()
    shutil.copy(trained_run.test_images / "good" / "000.png", image)
    out = tmp_path / "out"
    assert predictor.predict([image], out, progress=False).n_ok == 1
    assert _files(out) == _outputs("part") | {CSV_NAME}
    image.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    report = predictor.predict([image], out, progress=False)
    assert report.n_ok == 0 and report.failed[0][0] == image.resolve()
    assert _files(out) == {CSV_NAME}
    assert _read_csv(out / CSV_NAME)[0]["status"] == "failed"


def test_predict_reads_oriented_16bit_and_too_small_images(predictor: Predictor, trained_run: TrainedRun,
                                                            tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    gray = np.asarray(Image.open(trained_run.test_images / "good" / "000.png").convert("L"))
    Image.fromarray(gray).save(inputs / "eight.png")
    Image.fromarray(gray.astype(np.uint16) * 256 + 128).save(inputs / "sixteen.png")  # >> 8: the 8-bit image
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    Image.fromarray(gray[:40]).save(inputs / "rotated.jpg", exif=exif)  # stored 64 x 40, shown 40 x 64
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(inputs / "dot.png")
    report = predictor.predict([inputs], tmp_path / "out", batch_size=4, progress=False)

    assert [(p.name, reason) for p, reason in report.failed] == [
        ("dot.png", f"{inputs / 'dot.png'}: image is 1 x 1 px; its smaller side must be at least 32 px (too small "
                    "to train on or score; use the full-size image)")]
    results = {p.path.name: p for p in report.predictions if p.status == "ok"}
    assert set(results) == {"eight.png", "sixteen.png", "rotated.jpg"}, "one bad file does not stop the others"
    assert results["sixteen.png"].score == pytest.approx(results["eight.png"].score, abs=1e-6)
    overlay16, overlay8 = (np.asarray(Image.open(results[name].outputs["overlay"]), dtype=int)
                           for name in ("sixteen.png", "eight.png"))
    assert np.abs(overlay16 - overlay8).max() <= 1, "the 16-bit image is read as its 8-bit version, not white"
    assert (results["rotated.jpg"].width, results["rotated.jpg"].height) == (40, 64)
    with Image.open(results["rotated.jpg"].outputs["mask"]) as im:
        assert im.size == (40, 64)


def test_output_names_never_collide(tmp_path: Path) -> None:
    for rel in ("a/x.png", "a/x.jpg", "a/x_png.bmp", "b/x.png", "b/sub/x.tif", "c.PNG", "a/X.PNG"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "a" / "readme.md").write_text("skip me")
    out = tmp_path / "a" / "results"  # earlier outputs inside an input folder are not inputs
    out.mkdir()
    (out / "x_heatmap.png").write_bytes(b"")
    items = collect_inputs([tmp_path / "a", tmp_path / "b", tmp_path / "c.PNG", tmp_path / "a" / "x.png"], out)
    keys = {item.path.relative_to(tmp_path).as_posix(): item.key for item in items}
    assert set(keys) == {"a/x.png", "a/x.jpg", "a/x_png.bmp", "b/x.png", "b/sub/x.tif", "c.PNG", "a/X.PNG"}
    assert keys["b/x.png"] == "b/x" and keys["b/sub/x.tif"] == "b/sub/x" and keys["c.PNG"] == "c"
    assert keys["a/x.png"] == "a/x_png" and keys["a/x.jpg"] == "a/x_jpg"
    assert len({k.lower() for k in keys.values()}) == len(keys), "unique, also on case-insensitive disks"
    with pytest.raises(FileNotFoundError, match="nope"):
        collect_inputs([tmp_path / "nope"])


def test_reading_matches_the_evaluation(trained_run: TrainedRun, tmp_path: Path) -> None:
    path = trained_run.test_images / "good" / "000.png"
    assert np.array_equal(model_input(read_rgb(path), 64), load_image(path, 64))


def test_load_predictor_from_a_folder_or_a_seg_file(trained_run: TrainedRun, predictor: Predictor) -> None:
    calibration = trained_run.calibration
    assert predictor.threshold_source == "calibration"
    assert predictor.image_threshold == calibration["image_threshold"]
    assert predictor.pixel_threshold == calibration["pixel_threshold"]
    from_file = load_predictor(trained_run.calibrated_dir / "seg.pt", device="cpu", threshold=0.25)
    assert from_file.threshold_source == "argument" and from_file.image_threshold == 0.25
    assert from_file.pixel_threshold == calibration["pixel_threshold"], "the pixel threshold stays calibrated"
    same, other = from_file.detector.state_dict(), predictor.detector.state_dict()
    assert same.keys() == other.keys() and all(torch.equal(same[k], other[k]) for k in same)
    assert from_file.config == predictor.config == trained_run.cfg


def test_load_predictor_needs_a_threshold_without_calibration(trained_run: TrainedRun) -> None:
    with pytest.raises(PredictError, match="--threshold"):
        load_predictor(trained_run.model_dir, device="cpu")
    explicit = load_predictor(trained_run.model_dir, device="cpu", threshold=0.4)
    assert (explicit.image_threshold, explicit.pixel_threshold, explicit.threshold_source) == (0.4, 0.4, "argument")
    bare = load_predictor(trained_run.model_dir, device="cpu", require_threshold=False)
    assert bare.image_threshold is None
    with pytest.raises(PredictError, match="--threshold"):
        bare.predict([], Path("unused"))


def test_load_predictor_errors(trained_run: TrainedRun, tmp_path: Path) -> None:
    shutil.copy(trained_run.model_dir / "seg.pt", tmp_path / "seg.pt")
    with pytest.raises(ArtifactError, match=r"student\.pt"):
        load_predictor(tmp_path / "seg.pt", device="cpu", threshold=0.5)
    with pytest.raises(ArtifactError, match="no such model"):
        load_predictor(tmp_path / "missing", device="cpu", threshold=0.5)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    for name in ("student.pt", "seg.pt"):  # a student file where seg.pt belongs
        shutil.copy(trained_run.model_dir / "student.pt", foreign / name)
    with pytest.raises(ArtifactError, match=r"expected a pfadseg\.seg/1 file"):
        load_predictor(foreign, device="cpu", threshold=0.5)


def test_bench_predict_smoke(trained_run: TrainedRun, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench's code path; both rows on the baseline networks to keep it quick (they are tested elsewhere)."""
    baseline = Variant(False, False, False)
    monkeypatch.setattr("pfadseg.bench.predict.BENCH_VARIANTS", {"destseg": baseline, "pfadseg": baseline})
    lines: list[str] = []
    result = bench_predict(trained_run.cfg, image_size=32, device="cpu", batch_sizes=(1,), repeats=1,
                           echo=lines.append)
    assert [(r["variant"], r["batch_size"], r["precision"]) for r in result["rows"]] == [
        ("destseg", 1, "fp32"), ("pfadseg", 1, "fp32")]
    assert all(r["images_per_s"] > 0 for r in result["rows"])
    assert any("images/s" in line for line in lines)
    with pytest.raises(ValueError, match="CUDA"):
        bench_predict(trained_run.cfg, image_size=32, device="cpu", amp_modes=("bf16",))


def test_an_adps_run_is_calibrated_and_predicts_with_its_score_rule(trained_run: TrainedRun, tmp_path: Path) -> None:
    from pfadseg.export import export_predictor, verify_onnx
    from pfadseg.metrics import smoothed_max_scores
    from pfadseg.paths import Layout
    from pfadseg.pipeline.adps import TRAIN_ADPS
    from pfadseg.pipeline.calibrate import CALIBRATE
    from tests.predict.conftest import CATEGORY, tiny_run_config

    cfg = tiny_run_config("model.arch=adps", "model.adps.k=2", "train.adps.epochs=1", "train.adps.milestones=[]",
                          "train.adps.batch_size=2", "calibrate.n_samples=4")
    (tmp_path / "data").symlink_to(trained_run.root / "data")  # the same dataset and bank
    layout = Layout(tmp_path)
    TRAIN_ADPS.invoke(cfg, layout, CATEGORY, 0, progress=False)
    CALIBRATE.invoke(cfg, layout, CATEGORY, 0)
    adps = load_predictor(layout.run_dir("models", CATEGORY, 0), device="cpu")
    assert adps.threshold_source == "calibration" and adps.score.sigma == cfg.model.adps.score_sigma
    for option, value in (("threshold", 1.01), ("pixel_threshold", -0.5)):  # a softmax probability, smoothed
        with pytest.raises(PredictError, match=r"outside \[0, 1\], the range of adps anomaly scores"):
            load_predictor(layout.run_dir("models", CATEGORY, 0), device="cpu", **{option: value})
    assert adps.calibration["image_score"] == "max of the Gaussian-smoothed map (sigma 4)"

    files = sorted(trained_run.test_images.rglob("*.png"))[-3:]
    report = adps.predict(files, tmp_path / "out", progress=False)
    assert len(files) == 3 and report.n_ok == 3
    with (tmp_path / "out" / CSV_NAME).open() as fh:
        got = [float(row["score"]) for row in csv.DictReader(fh)]
    maps = infer_maps(adps.detector, np.stack([load_image(f, adps.image_size) for f in files]), batch_size=4,
                      device=adps.device, amp=False)
    np.testing.assert_allclose(got, smoothed_max_scores(maps.seg, 4.0), atol=1e-5)
    if importlib.util.find_spec("onnxruntime") is not None:  # the optional extra: ADPS exports as the others do
        export_predictor(adps, tmp_path / "adps.onnx")
        assert max(verify_onnx(tmp_path / "adps.onnx", adps.detector, image_size=adps.image_size).values()) < 1e-4
