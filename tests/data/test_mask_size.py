"""A mask of another size than its image: refused when a dataset is validated (image headers only, sizes taken
upright as EXIF orientation turns them) and by the loader, never squash-resized to fit."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pfadseg.data.images import ImageReadError, load_mask, load_test_set, open_image
from pfadseg.data.layout import LayoutError, build_manifest, scan_category, upright_size

IMAGE_SIZE = (96, 64)  # width x height: not square, so a transposed mask differs


def _save(path: Path, image: Image.Image, orientation: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    image.save(path, exif=exif)
    return path


def _mask(size: tuple[int, int]) -> Image.Image:
    array = np.zeros((size[1], size[0]), np.uint8)
    array[: size[1] // 2, : size[0] // 2] = 255
    return Image.fromarray(array)


def _category(root: Path, mask: Image.Image, orientation: int = 1) -> tuple[Path, Path]:
    """``root/widget`` in MVTec layout: one train, one good and one ``crack`` image of IMAGE_SIZE, and ``mask``."""
    image = Image.new("RGB", IMAGE_SIZE, (120, 130, 140))
    for folder in ("train/good", "test/good", "test/crack"):
        _save(root / "widget" / folder / "000.png", image)
    mask_path = _save(root / "widget/ground_truth/crack/000_mask.png", mask, orientation)
    return root / "widget/test/crack/000.png", mask_path


def _sizes_message(image: Path, mask: Path, image_size: str, mask_size: str) -> str:
    return f"{re.escape(str(mask))}: mask is {mask_size} px but its image {re.escape(str(image))} is {image_size} px"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_upright_size_is_the_loaders_size_from_the_header(tmp_path: Path, orientation: int) -> None:
    path = _save(tmp_path / "o.png", _mask((40, 24)), orientation)
    assert upright_size(path) == open_image(path).size == ((24, 40) if orientation >= 5 else (40, 24))


def test_upright_size_decodes_nothing(tmp_path: Path) -> None:
    whole = _save(tmp_path / "whole.png", Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 96, 3),
                                                                                             np.uint8)))
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[:200])  # the header and the start of the pixels
    assert upright_size(cut) == (96, 64)
    with pytest.raises(ImageReadError):
        open_image(cut)
    (tmp_path / "x.png").write_bytes(b"not an image")
    with pytest.raises(LayoutError, match=re.escape(str(tmp_path / "x.png")) + ": cannot read image header"):
        upright_size(tmp_path / "x.png")


def test_validation_refuses_a_mask_of_another_size(tmp_path: Path) -> None:
    image, mask = _category(tmp_path, _mask((48, 80)))
    scan_category(tmp_path, "widget")  # the layout itself is fine
    with pytest.raises(LayoutError, match=_sizes_message(image, mask, "96 x 64", "48 x 80")) as info:
        build_manifest(tmp_path, ["widget"])
    assert "save it at 96 x 64 px" in str(info.value)


def test_validation_takes_sizes_upright(tmp_path: Path) -> None:
    _category(tmp_path / "rotated", _mask((64, 96)), orientation=6)  # stored portrait, upright landscape
    assert build_manifest(tmp_path / "rotated", ["widget"])["totals"]["masks"] == 1
    image, mask = _category(tmp_path / "plain", _mask((64, 96)))  # the same mask, no orientation: transposed
    with pytest.raises(LayoutError, match=_sizes_message(image, mask, "96 x 64", "64 x 96")):
        build_manifest(tmp_path / "plain", ["widget"])


def test_validation_counts_every_mismatch(tmp_path: Path) -> None:
    _category(tmp_path, _mask((48, 80)))
    for name in ("001", "002"):
        _save(tmp_path / f"widget/test/crack/{name}.png", Image.new("RGB", IMAGE_SIZE))
        _save(tmp_path / f"widget/ground_truth/crack/{name}_mask.png", _mask((50, 50) if name == "001" else IMAGE_SIZE))
    with pytest.raises(LayoutError, match=r"\(2 masks of widget differ from their image\)"):
        build_manifest(tmp_path, ["widget"])


def test_the_loader_refuses_a_mask_of_another_size(tmp_path: Path) -> None:
    image, mask = _category(tmp_path, _mask((48, 80)))
    message = _sizes_message(image, mask, "96 x 64", "48 x 80")
    with pytest.raises(ImageReadError, match=message):
        load_mask(mask, 32, image_file=image)
    with pytest.raises(ImageReadError, match=message):
        load_test_set(scan_category(tmp_path, "widget"), 32)
    assert load_mask(mask, 32).shape == (32, 32)  # on its own, a mask has no size to match


def test_the_loader_takes_sizes_upright(tmp_path: Path) -> None:
    image, mask = _category(tmp_path, _mask((64, 96)), orientation=6)
    test_set = load_test_set(scan_category(tmp_path, "widget"), 32)
    np.testing.assert_array_equal(test_set.masks[0], load_mask(mask, 32, image_file=image))
    assert test_set.labels.tolist() == [True, False]
