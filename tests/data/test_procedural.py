"""The offline procedural dataset (MVTec layout) and DTD-layout textures, and their acquire stages."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from pfadseg.config import ProceduralTexturesConfig, SyntheticDataConfig
from pfadseg.data.categories import GRAYSCALE_CATEGORIES, MVTEC_CATEGORIES
from pfadseg.data.images import load_test_set
from pfadseg.data.layout import build_manifest, scan_category, scan_textures
from pfadseg.data.procedural import scenes
from pfadseg.data.procedural.scenes import (
    AREA_RANGE,
    DEFECT_KINDS,
    MASK_THRESHOLD,
    add_defect,
    make_synthetic_mvtec,
    render_normal,
)
from pfadseg.data.procedural.textures import make_procedural_textures
from pfadseg.paths import Layout
from pfadseg.pipeline.acquire_images import acquire_images
from pfadseg.pipeline.acquire_textures import acquire_textures
from pfadseg.seeding import numpy_rng
from tests.data.conftest import tiny_synthetic

CATS = ["bottle", "carpet", "screw"]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same tiny dataset twice with seed 0 and once with seed 1."""
    base = tmp_path_factory.mktemp("synthetic")
    seeds = {"a": 0, "b": 0, "c": 1}
    return {name: tiny_synthetic(base / name, CATS, seed=seed) for name, seed in seeds.items()}


def test_layout_is_complete_and_readable(synthetic: dict[str, Path]) -> None:
    root = synthetic["a"]
    assert sorted(p.name for p in root.iterdir()) == CATS
    manifest = build_manifest(root, CATS)
    assert manifest["totals"] == {"train": 9, "test": 18, "test_good": 6, "test_defective": 12, "masks": 12}
    for cat in CATS:
        files = scan_category(root, cat)
        assert all(d in DEFECT_KINDS for d in files.defect_types) and len(files.defect_types) == 2
        test_set = load_test_set(files, 32)
        np.testing.assert_array_equal(test_set.labels, test_set.folder_labels)
        for item in files.test:
            if item.mask is not None:
                mask = Image.open(item.mask)
                assert mask.mode == "L" and mask.size == (32, 32)
                assert set(np.unique(np.asarray(mask)).tolist()) == {0, 255}


def test_grayscale_categories_are_single_channel(synthetic: dict[str, Path]) -> None:
    for cat in CATS:
        for path in (synthetic["a"] / cat).rglob("test/*/*.png"):
            assert Image.open(path).mode == ("L" if cat in GRAYSCALE_CATEGORIES else "RGB")


def test_deterministic_per_seed(synthetic: dict[str, Path]) -> None:
    a, b, c = (_tree(synthetic[k]) for k in "abc")
    assert a == b
    assert a.keys() != c.keys() or any(a[k] != c[k] for k in a)
    train_a, train_c = a["bottle/train/good/000.png"], c["bottle/train/good/000.png"]
    assert train_a != train_c


def test_more_training_images_leave_the_test_set_unchanged(tmp_path: Path) -> None:
    small = SyntheticDataConfig(image_size=32, n_train=1, n_test_good=2, n_test_per_defect=1,
                                n_defect_types=3, seed=4)
    big = dataclasses.replace(small, n_train=3)
    make_synthetic_mvtec(tmp_path / "s", ["pill"], small)
    make_synthetic_mvtec(tmp_path / "b", ["pill"], big)
    test_small = {k: v for k, v in _tree(tmp_path / "s").items() if "train" not in k}
    test_big = {k: v for k, v in _tree(tmp_path / "b").items() if "train" not in k}
    assert test_small == test_big


@pytest.mark.parametrize("category", MVTEC_CATEGORIES)
def test_every_defect_kind_has_an_exact_mask(category: str) -> None:
    rng = numpy_rng(7, "test", category)
    for kind in DEFECT_KINDS:
        normal = render_normal(category, rng, 64)
        assert normal.image.dtype == np.uint8
        assert normal.image.shape == (64, 64, 1 if category in GRAYSCALE_CATEGORIES else 3)
        image, mask = add_defect(normal, kind, rng)
        diff = np.abs(image.astype(int) - normal.image).max(axis=2)
        assert mask.any() and AREA_RANGE[0] <= mask.mean() <= AREA_RANGE[1], (kind, mask.mean())
        assert (diff[~mask] == 0).all()  # untouched outside the mask
        assert (diff[mask] >= MASK_THRESHOLD).all()  # visibly changed everywhere inside it


def test_global_statistics_do_not_give_defects_away() -> None:
    scores, labels = [], []
    for category in MVTEC_CATEGORIES:
        rng = numpy_rng(3, "auroc", category)
        means, cat_labels = [], []
        for i in range(16):
            normal = render_normal(category, rng, 48)
            image = normal.image if i % 2 == 0 else add_defect(normal, DEFECT_KINDS[i // 2 % 6], rng)[0]
            means.append(image.mean())
            cat_labels.append(i % 2 == 1)
        ranks = np.argsort(np.argsort(means)) / (len(means) - 1)  # per-category ranks, pooled below
        scores += ranks.tolist()
        labels += cat_labels
    assert roc_auc_score(labels, np.zeros(len(labels))) == 0.5
    auc = roc_auc_score(labels, scores)
    assert abs(auc - 0.5) < 0.15, auc  # about 0.49 here; globally darker defects (x0.95) give 0.27


def test_defect_kind_must_be_known() -> None:
    normal = render_normal("tile", numpy_rng(0), 32)
    with pytest.raises(ValueError, match="unknown defect kind"):
        add_defect(normal, "dent", numpy_rng(0))


def test_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    cfg = SyntheticDataConfig(image_size=32, n_train=2, n_test_good=1, n_test_per_defect=1, n_defect_types=1,
                              seed=0)
    monkeypatch.setattr(scenes, "add_defect", broken)
    with pytest.raises(RuntimeError, match="boom"):
        make_synthetic_mvtec(tmp_path / "root", ["wood"], cfg)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="no procedural look"):
        make_synthetic_mvtec(tmp_path / "root", ["my_part"], cfg)
    assert list(tmp_path.iterdir()) == []


def test_procedural_textures_layout_and_determinism(tmp_path: Path) -> None:
    cfg = ProceduralTexturesConfig(n_classes=12, per_class=2, image_size=32, seed=0)
    summary = make_procedural_textures(tmp_path / "a", cfg)
    assert summary == {"classes": 12, "images": 24, "image_size": 32, "seed": 0}
    classes = scan_textures(tmp_path / "a" / "images")
    assert len(classes) == 12 and {"banded", "chequered", "banded2"} <= set(classes)
    assert [p.name for p in classes["dotted"]] == ["dotted_0001.jpg", "dotted_0002.jpg"]
    image = Image.open(classes["dotted"][0])
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (32, 32))
    make_procedural_textures(tmp_path / "b", cfg)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    make_procedural_textures(tmp_path / "c", dataclasses.replace(cfg, seed=1))
    assert _tree(tmp_path / "a") != _tree(tmp_path / "c")
    arrays = [np.asarray(Image.open(files[0]), dtype=np.float32) for files in classes.values()]
    assert min(np.abs(a - b).mean() for i, a in enumerate(arrays) for b in arrays[i + 1 :]) > 5  # distinct


def test_acquire_synthetic_and_procedural(tmp_path: Path, tiny_config) -> None:
    cfg = tiny_config("data.source=synthetic", "data.textures=procedural")
    layout = Layout(tmp_path / "project")
    assert acquire_images(cfg, layout) == layout.images
    manifest = json.loads(layout.images_manifest.read_text())
    assert (manifest["source"], manifest["seed"], manifest["image_size"]) == ("synthetic", 0, 64)
    assert sorted(manifest["categories"]) == ["bottle", "carpet"]
    assert manifest["totals"]["train"] == 16 and manifest["totals"]["test_defective"] == 8
    first = _tree(layout.images)
    acquire_images(cfg, layout)  # idempotent
    assert _tree(layout.images) == first

    assert acquire_textures(cfg, layout) == layout.textures
    counts = {k: len(v) for k, v in scan_textures(layout.textures).items()}
    assert counts == {"banded": 3, "chequered": 3}
    textures = json.loads(layout.textures_manifest.read_text())
    assert (textures["source"], textures["classes"], textures["images"]) == ("procedural", 2, 6)
    assert (textures["seed"], textures["image_size"]) == (0, 64)
    assert sorted(p.name for p in layout.images.parent.iterdir()) == [
        "images", "images_manifest.json", "textures", "textures_manifest.json"]  # no temp left


def test_acquire_folder_copies_without_touching_the_source(tmp_path: Path, tiny_config) -> None:
    root = tiny_synthetic(tmp_path / "mine", ["bottle", "carpet"])
    before = _tree(root)
    cfg = tiny_config("data.source=folder", f"data.root={root}")
    layout = Layout(tmp_path / "project")
    assert acquire_images(cfg, layout) == layout.images
    assert _tree(root) == before and _tree(layout.images) == before
    assert json.loads(layout.images_manifest.read_text())["totals"]["test"] == 12
    cfg = tiny_config("data.source=folder", f"data.root={tmp_path / 'absent'}")
    with pytest.raises(ValueError, match=f"data.root: {tmp_path / 'absent'} does not exist"):
        acquire_images(cfg, Layout(tmp_path))
