"""acquire_images refuses what would silently go wrong later: a data.root that is no folder, and a mask of another
size than its image (which evaluation would squash-resize and score)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from pfadseg.data.download import sha256_file
from pfadseg.data.layout import LayoutError, scan_category
from pfadseg.paths import Layout
from pfadseg.pipeline.acquire_images import ACQUIRE_IMAGES, acquire_images
from tests.data.conftest import tar_folder, tiny_synthetic


def _with_wrong_mask(root: Path) -> tuple[Path, Path]:
    """A tiny 64 x 64 MVTec-layout set at ``root`` whose first defect mask is replaced by a 48 x 80 one."""
    tiny_synthetic(root, ["bottle"], size=64)
    item = next(item for item in scan_category(root, "bottle").test if item.mask is not None)
    Image.new("L", (48, 80)).save(item.mask)
    return item.image, item.mask


def _mask_error(image: Path, mask: Path) -> str:
    return (f"{re.escape(str(mask))}: mask is 48 x 80 px but its image {re.escape(str(image))} is 64 x 64 px "
            r"\(width x height, upright\); a mask is never resized to fit its image: save it at 64 x 64 px")


@pytest.mark.parametrize(("make", "problem"), [
    (lambda path: path.write_text("not a dataset"), "is a file"),
    (lambda path: None, "does not exist"),
])
def test_data_root_that_is_no_folder_is_named(tmp_path: Path, tiny_config, make, problem: str) -> None:
    root = tmp_path / "a_file.txt"
    make(root)
    cfg = tiny_config("data.source=folder", f"data.root={root}", "data.categories=[x]")
    layout = Layout(tmp_path / "project")
    with pytest.raises(LayoutError) as info:
        ACQUIRE_IMAGES.invoke(cfg, layout, progress=False)
    message = str(info.value)
    assert message.startswith(f"data.root: {root} {problem}; point data.root to the folder of your dataset")
    assert "<category>/train/good" in message and "category folder not found" not in message
    assert not layout.images.exists()


def test_relative_data_root_names_the_folder_it_is_relative_to(tmp_path: Path, tiny_config, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config("data.source=folder", "data.root=mine", "data.categories=[x]")
    with pytest.raises(LayoutError, match=re.escape(f"data.root: mine (relative to {tmp_path}) does not exist")):
        acquire_images(cfg, Layout(tmp_path / "project"), progress=False)


def test_folder_with_a_mask_of_another_size_is_refused_before_copying(tmp_path: Path, tiny_config) -> None:
    image, mask = _with_wrong_mask(tmp_path / "mine")
    cfg = tiny_config("data.source=folder", f"data.root={tmp_path / 'mine'}", "data.categories=[bottle]")
    layout = Layout(tmp_path / "project")
    with pytest.raises(LayoutError, match=_mask_error(image, mask)):  # the user's own files are named
        acquire_images(cfg, layout, progress=False)
    assert not layout.images.exists() and not layout.images_manifest.exists()


def test_mvtec_archive_with_a_mask_of_another_size_is_refused(tmp_path: Path, tiny_config) -> None:
    _with_wrong_mask(tmp_path / "mvtec")
    archive = tar_folder(tmp_path / "mvtec.tar.gz", tmp_path / "mvtec", "mvtec_anomaly_detection")
    layout = Layout(tmp_path / "project")
    with pytest.raises(LayoutError, match=r"bottle/ground_truth/\w+/\w+_mask\.png: mask is 48 x 80 px but its "
                                          r"image \S+/bottle/test/\w+/\w+\.png is 64 x 64 px"):
        acquire_images(tiny_config("data.categories=[bottle]"), layout, archive=archive,
                       sha256=sha256_file(archive), progress=False)
    assert not layout.images.exists()
