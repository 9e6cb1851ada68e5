"""KolektorSDD2: conversion of a tiny archive in the official layout to MVTec layout, and its acquisition."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pfadseg.cli import app
from pfadseg.config import Config
from pfadseg.data.download import ArchiveError, UnpinnedChecksumError, safe_extract, sha256_file
from pfadseg.data.images import load_mask
from pfadseg.data.ksdd2 import convert_ksdd2
from pfadseg.data.layout import LayoutError, scan_category
from pfadseg.paths import Layout
from pfadseg.pipeline.acquire_images import acquire_images
from tests.conftest import REPO
from tests.data.conftest import ARCHIVE_LIMITS, FileServer

W, H = 32, 80  # KolektorSDD2 images are portrait, about 230 x 630
TRAIN = {"10000": False, "10001": True, "10002": False, "10003": False, "10004": True, "10005": False}
TEST = {"20000": False, "20001": False, "20002": False, "20003": True, "20004": True}
ONE_VALUED = "20003"  # its mask is stored as 0/1, as some copies do
COUNTS = {"train_good": 4, "train_defective_skipped": 2, "test_good": 3, "test_defective": 2}
DEFECT = (slice(10, 30), slice(4, 12))  # rows, columns of every defect


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _members(top: str) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    members: dict[str, bytes] = {}
    for split, samples in (("train", TRAIN), ("test", TEST)):
        for stem, defective in samples.items():
            mask = np.zeros((H, W), dtype=np.uint8)
            if defective:
                mask[DEFECT] = 1 if stem == ONE_VALUED else 255
            members[f"{top}{split}/{stem}.png"] = _png(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
            members[f"{top}{split}/{stem}_GT.png"] = _png(mask)
    return members


@pytest.fixture
def ksdd2_zip(tmp_path: Path) -> Callable[..., Path]:
    """``ksdd2_zip(top=..., drop=..., replace=...)``: a tiny KolektorSDD2.zip in the official layout."""

    def _make(top: str = "KolektorSDD2/", drop: tuple[str, ...] = (), replace: dict[str, bytes] | None = None,
              name: str = "KolektorSDD2.zip") -> Path:
        members = {**_members(top), **(replace or {})}
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as zf:
            for member, data in members.items():
                if member not in drop:
                    zf.writestr(member, data)
        return path

    return _make


def _ksdd2_config(tiny_config: Callable[..., Config], *overrides: str) -> Config:
    return tiny_config("data.source=ksdd2", "data.categories=[ksdd2]", *overrides)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _no_leftovers(root: Path) -> bool:
    """No dataset (half or whole) at ``root`` and no temporary folder beside it."""
    return not root.exists() and not any(p.name.startswith(".") for p in root.parent.glob("*"))


# ------------------------------------------------------------------------------------------ conversion


@pytest.mark.parametrize("top", ["KolektorSDD2/", ""])
def test_conversion_gives_the_mvtec_layout(tmp_path: Path, ksdd2_zip, top: str, caplog) -> None:
    safe_extract(ksdd2_zip(top=top), tmp_path / "extracted", ARCHIVE_LIMITS)
    with caplog.at_level(logging.WARNING):
        counts = convert_ksdd2(tmp_path / "extracted", tmp_path / "out")
    assert counts == COUNTS
    assert "differs from the official KolektorSDD2 counts" in caplog.text  # a partial copy

    cat = tmp_path / "out" / "ksdd2"
    assert _names(cat) == ["ground_truth", "test", "train"]
    assert _names(cat / "train" / "good") == [f"{s}.png" for s, bad in TRAIN.items() if not bad]
    assert _names(cat / "test" / "good") == ["20000.png", "20001.png", "20002.png"]
    assert _names(cat / "test" / "defect") == ["20003.png", "20004.png"]
    assert _names(cat / "ground_truth" / "defect") == ["20003_mask.png", "20004_mask.png"]
    extracted = tmp_path / "extracted" / top
    assert (cat / "test" / "defect" / "20003.png").read_bytes() == (extracted / "test" / "20003.png").read_bytes()

    expected = np.zeros((H, W), dtype=np.uint8)
    expected[DEFECT] = 255
    for stem in ("20003", "20004"):  # binary 0/255 at native size, whether stored as 0/1 or 0/255
        mask = Image.open(cat / "ground_truth" / "defect" / f"{stem}_mask.png")
        assert mask.mode == "L" and mask.size == (W, H)
        np.testing.assert_array_equal(np.asarray(mask), expected)
    assert load_mask(cat / "ground_truth" / "defect" / f"{ONE_VALUED}_mask.png", 32).any()

    files = scan_category(tmp_path / "out", "ksdd2")
    assert (len(files.train), len(files.test), files.defect_types) == (4, 5, ["defect"])


@pytest.mark.parametrize(("drop", "replace", "message"), [
    (("KolektorSDD2/test/20001_GT.png",), {}, r"20001\.png: image without its ground-truth mask"),
    (("KolektorSDD2/train/10002.png",), {}, r"10002_GT\.png: orphan mask"),
    ((), {"KolektorSDD2/test/20004_GT.png": _png(np.zeros((H, W + 1), np.uint8))},
     r"20004_GT\.png: mask is 33 x 80 px but its image .*20004\.png is 32 x 80 px"),
    ((), {"KolektorSDD2/train/10000.png": b"not a png"}, r"10000\.png: cannot read image"),
])
def test_conversion_errors_name_the_file(tmp_path: Path, ksdd2_zip, drop, replace, message: str) -> None:
    safe_extract(ksdd2_zip(drop=drop, replace=replace), tmp_path / "extracted", ARCHIVE_LIMITS)
    with pytest.raises(LayoutError, match=message):
        convert_ksdd2(tmp_path / "extracted", tmp_path / "out")


def test_conversion_needs_train_and_test_folders(tmp_path: Path) -> None:
    (tmp_path / "extracted" / "KolektorSDD2" / "train").mkdir(parents=True)
    with pytest.raises(LayoutError, match="no folder holds the KolektorSDD2 train/ and test/ folders"):
        convert_ksdd2(tmp_path / "extracted", tmp_path / "out")


# ------------------------------------------------------------------------------------------- acquire


def test_acquire_ksdd2_over_http(tmp_path: Path, file_server: FileServer, ksdd2_zip, tiny_config) -> None:
    url, sha = file_server.serve("kolektorsdd2", ksdd2_zip().read_bytes())  # the official URL has no file name
    cfg = _ksdd2_config(tiny_config, f"data.ksdd2.url={url}", f"data.ksdd2.sha256={sha}")
    layout = Layout(tmp_path / "project")
    root = layout.images
    assert acquire_images(cfg, layout, progress=False) == root
    assert sorted(p.name for p in root.iterdir()) == ["ksdd2"]
    manifest = json.loads(layout.images_manifest.read_text())
    assert (manifest["source"], manifest["url"], manifest["file"], manifest["sha256"]) == (
        "ksdd2", url, "KolektorSDD2.zip", sha)
    assert manifest["conversion"] == COUNTS
    assert manifest["totals"] == {"train": 4, "test": 5, "test_good": 3, "test_defective": 2, "masks": 2}
    assert manifest["categories"]["ksdd2"]["defect_types"] == ["defect"]
    assert sha256_file(layout.archives / "KolektorSDD2.zip") == sha

    acquire_images(cfg, layout, progress=False)  # idempotent: the verified archive is reused
    assert len(file_server.requests) == 1
    assert [p.name for p in root.parent.iterdir() if p.name.startswith(".")] == []


def test_unpinned_sha256_prints_it_and_keeps_the_archive(tmp_path: Path, file_server: FileServer, ksdd2_zip,
                                                         tiny_config) -> None:
    url, sha = file_server.serve("kolektorsdd2", ksdd2_zip().read_bytes())
    cfg = _ksdd2_config(tiny_config, f"data.ksdd2.url={url}", "data.ksdd2.sha256=null")
    layout = Layout(tmp_path / "project")
    with pytest.raises(UnpinnedChecksumError) as info:
        acquire_images(cfg, layout, progress=False)
    assert sha in str(info.value) and "data.ksdd2.sha256" in str(info.value)
    assert sha256_file(layout.archives / "KolektorSDD2.zip") == sha  # kept, not deleted
    assert _no_leftovers(layout.images)

    acquire_images(cfg, layout, sha256=sha, progress=False)  # pinned: no second download
    assert len(file_server.requests) == 1
    assert scan_category(layout.images, "ksdd2").defect_types == ["defect"]


def test_corrupt_zip_or_missing_mask_leaves_no_dataset(tmp_path: Path, ksdd2_zip, tiny_config) -> None:
    cfg = _ksdd2_config(tiny_config)
    layout = Layout(tmp_path / "project")
    data = ksdd2_zip().read_bytes()
    (tmp_path / "cut.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match="corrupted or truncated"):
        acquire_images(cfg, layout, archive=tmp_path / "cut.zip", sha256=sha256_file(tmp_path / "cut.zip"),
                       progress=False)
    assert _no_leftovers(layout.images)

    missing = ksdd2_zip(drop=("KolektorSDD2/test/20004_GT.png",), name="missing.zip")
    with pytest.raises(LayoutError, match="without its ground-truth mask"):
        acquire_images(cfg, layout, archive=missing, sha256=sha256_file(missing), progress=False)
    assert _no_leftovers(layout.images)


def test_cli_download_ksdd2_with_archive(tmp_path: Path, ksdd2_zip, monkeypatch) -> None:
    archive = ksdd2_zip(name="kolektorsdd2")  # as `wget https://go.vicos.si/kolektorsdd2` saves it: no suffix
    sha = sha256_file(archive)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    command = ["download", "ksdd2", "--archive", str(archive), "--params", str(REPO / "params.yaml")]
    result = runner.invoke(app, command)  # params.yaml pins no sha256 for KolektorSDD2
    assert result.exit_code == 1
    assert sha in result.output and "data.ksdd2.sha256" in result.output
    result = runner.invoke(app, [*command, "--sha256", sha])
    assert result.exit_code == 0, result.output
    assert len(scan_category(tmp_path / "data" / "raw" / "images", "ksdd2").train) == 4
