"""MVTec-layout scanning, validation errors that name the file, manifests and root discovery."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest

from pfadseg.data.categories import MVTEC_CATEGORIES, MVTEC_TOTALS, MVTEC_TRAIN_COUNTS
from pfadseg.data.layout import (
    LayoutError,
    TestItem,
    build_manifest,
    check_mvtec_counts,
    find_dataset_root,
    find_texture_root,
    scan_category,
    scan_textures,
    texture_manifest,
)


@pytest.fixture
def root(tiny_mvtec) -> Path:
    return tiny_mvtec(["bottle", "grid"])


def _first_defect(root: Path, category: str) -> TestItem:
    return next(item for item in scan_category(root, category).test if item.label)


def test_scan_category_finds_sorted_files_and_masks(root: Path) -> None:
    files = scan_category(root, "bottle")
    assert files.category == "bottle"
    assert files.train == [root / "bottle/train/good" / f"{i:03d}.png" for i in range(3)]
    assert len(files.test) == 6
    assert [item.image for item in files.test] == sorted(item.image for item in files.test)
    defects = files.defect_types
    assert len(defects) == 2 and "good" not in defects
    for item in files.test:
        assert item.label == (item.defect != "good")
        assert item.image.parent.name == item.defect
        if item.label:
            assert item.mask == root / "bottle/ground_truth" / item.defect / f"{item.image.stem}_mask.png"
        else:
            assert item.mask is None


def test_image_suffixes_are_case_insensitive_and_others_ignored(root: Path) -> None:
    train = root / "bottle/train/good"
    shutil.copy(train / "000.png", train / "100.PNG")
    (train / "notes.txt").write_text("not an image")
    (train / ".hidden.png").write_bytes(b"")
    names = [p.name for p in scan_category(root, "bottle").train]
    assert names == ["000.png", "001.png", "002.png", "100.PNG"]


def test_missing_category_and_train_folders_are_named(root: Path) -> None:
    with pytest.raises(LayoutError, match=str(root / "cable")):
        scan_category(root, "cable")
    shutil.rmtree(root / "bottle/train/good")
    with pytest.raises(LayoutError, match=str(root / "bottle/train/good")):
        scan_category(root, "bottle")
    (root / "bottle/train/good").mkdir()
    with pytest.raises(LayoutError, match="no training images"):
        scan_category(root, "bottle")


def test_missing_test_folder_is_named(root: Path) -> None:
    shutil.rmtree(root / "grid/test")
    with pytest.raises(LayoutError, match=str(root / "grid/test")):
        scan_category(root, "grid")


def test_missing_mask_names_image_and_expected_mask(root: Path) -> None:
    item = _first_defect(root, "bottle")
    item.mask.unlink()
    with pytest.raises(LayoutError) as info:
        scan_category(root, "bottle")
    assert str(item.image) in str(info.value) and str(item.mask) in str(info.value)
    relaxed = scan_category(root, "bottle", masks_required=False)
    assert next(t for t in relaxed.test if t.image == item.image).mask is None


def test_orphan_mask_is_named(root: Path) -> None:
    item = _first_defect(root, "bottle")
    orphan = item.mask.with_name("999_mask.png")
    shutil.copy(item.mask, orphan)
    with pytest.raises(LayoutError, match=f"{orphan}: orphan mask"):
        scan_category(root, "bottle")


def test_manifest_counts_and_totals(root: Path) -> None:
    manifest = build_manifest(root, ["bottle", "grid"])
    assert manifest["categories"]["grid"] == {
        "train": 3, "test": 6, "test_good": 2, "test_defective": 4, "masks": 4, "n_defect_types": 2,
        "defect_types": scan_category(root, "grid").defect_types,
    }
    assert manifest["totals"] == {"train": 6, "test": 12, "test_good": 4, "test_defective": 8, "masks": 8}


def _official_manifest() -> dict:
    per_cat = {cat: {"train": MVTEC_TRAIN_COUNTS[cat]} for cat in MVTEC_CATEGORIES}
    return {"categories": per_cat, "totals": {**MVTEC_TOTALS, "masks": MVTEC_TOTALS["test_defective"]}}


def test_check_mvtec_counts() -> None:
    check_mvtec_counts(_official_manifest())
    broken = copy.deepcopy(_official_manifest())
    broken["categories"]["bottle"]["train"] = 208
    broken["totals"]["train"] = 3628
    pattern = r"bottle train 208 \(expected 209\).*total train 3628 \(expected 3629\)"
    with pytest.raises(LayoutError, match=pattern):
        check_mvtec_counts(broken)
    subset = {"categories": {"bottle": {"train": 209}}, "totals": {"train": 209, "test": 83}}
    check_mvtec_counts(subset)  # totals are only compared with all 15 categories


def test_find_dataset_root_with_and_without_top_folder(tmp_path: Path, root: Path) -> None:
    assert find_dataset_root(root, ["bottle", "grid"]) == root
    nested = tmp_path / "extracted" / "mvtec_anomaly_detection"
    shutil.copytree(root, nested)
    (tmp_path / "extracted" / "readme.txt").write_text("x")
    assert find_dataset_root(tmp_path / "extracted", ["grid", "bottle"]) == nested
    with pytest.raises(LayoutError, match=r"lacks \['cable'\]"):
        find_dataset_root(tmp_path / "extracted", ["bottle", "cable"])


def test_texture_root_discovery_and_scan(tmp_path: Path) -> None:
    images = tmp_path / "dtd" / "images"
    for cls, n in (("banded", 2), ("dotted", 1)):
        (images / cls).mkdir(parents=True)
        for i in range(n):
            (images / cls / f"{cls}_{i + 1:04d}.jpg").write_bytes(b"x")
    (images / "empty").mkdir()
    (tmp_path / "dtd" / "labels").mkdir()
    assert find_texture_root(tmp_path) == images
    assert {k: len(v) for k, v in scan_textures(images).items()} == {"banded": 2, "dotted": 1}
    assert texture_manifest(images) == {"classes": 2, "images": 3}
    with pytest.raises(LayoutError, match="no DTD-layout"):
        find_texture_root(tmp_path / "dtd" / "labels")
    with pytest.raises(LayoutError, match="no texture images"):
        scan_textures(images / "empty")


def test_real_sample_layout(shared_data: Path) -> None:
    files = scan_category(shared_data / "mvtec-sample", "hazelnut")
    assert len(files.train) == 28
    assert sum(not t.label for t in files.test) == 6
    assert sum(t.defect == "colour" for t in files.test) == 17
    assert all(t.mask is not None and t.mask.is_file() for t in files.test if t.label)
    textures = scan_textures(find_texture_root(shared_data / "dtd-sample"))
    assert len(textures) >= 1 and all(p.suffix == ".jpg" for files in textures.values() for p in files)
