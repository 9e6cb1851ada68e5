"""Image and mask reading per the DeSTSeg protocol (1.2, 1.5), test sets and tensors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pfadseg.data.images import (
    ImageReadError,
    load_image,
    load_images,
    load_mask,
    load_test_set,
    normalize,
    to_tensor,
)
from pfadseg.data.layout import CategoryFiles, TestItem, scan_category


def _save(path: Path, image: Image.Image, **kwargs: object) -> Path:
    image.save(path, **kwargs)
    return path


def _gradient(h: int = 40, w: int = 60) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 4 % 256, y * 6 % 256, (x + y) * 2 % 256], axis=2).astype(np.uint8)


def test_rgb_image_is_squash_resized_with_pil_bilinear(tmp_path: Path) -> None:
    array = _gradient()
    path = _save(tmp_path / "a.png", Image.fromarray(array))
    out = load_image(path, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    expected = np.asarray(Image.fromarray(array).resize((32, 32), Image.BILINEAR))
    np.testing.assert_array_equal(out, expected)
    assert not np.array_equal(out, np.asarray(Image.fromarray(array).resize((32, 32), Image.NEAREST)))


def test_grayscale_rgba_and_palette_become_rgb(tmp_path: Path) -> None:
    gray = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)
    out = load_image(_save(tmp_path / "g.png", Image.fromarray(gray, "L")), 64)
    assert out.shape == (64, 64, 3)
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=2))

    rgba = np.dstack([_gradient(64, 64), np.full((64, 64), 7, np.uint8)])
    out = load_image(_save(tmp_path / "a.png", Image.fromarray(rgba, "RGBA")), 64)
    np.testing.assert_array_equal(out, rgba[..., :3])  # alpha dropped, colour kept

    palette = Image.fromarray(_gradient(64, 64)).quantize(16)
    out = load_image(_save(tmp_path / "p.png", palette), 64)
    np.testing.assert_array_equal(out, np.asarray(palette.convert("RGB")))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_images_are_detected(tmp_path: Path, fmt: str) -> None:
    buffer = io.BytesIO()
    Image.fromarray(_gradient(128, 128)).save(buffer, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageReadError, match=str(path)):
        load_image(path, 32)


def test_unreadable_and_missing_files_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match=str(tmp_path / "x.png")):
        load_image(tmp_path / "x.png", 32)
    with pytest.raises(ImageReadError, match=str(tmp_path / "absent_mask.png")):
        load_mask(tmp_path / "absent_mask.png", 32)


def _block_mask(tmp_path: Path, offset: int) -> Path:
    mask = np.zeros((512, 512), np.uint8)
    mask[offset : offset + 4, offset : offset + 4] = 255
    return _save(tmp_path / f"m{offset}.png", Image.fromarray(mask))


def test_mask_resize_aligned_block(tmp_path: Path) -> None:
    # 512 -> 256 antialiased bilinear: taps (1/8, 3/8, 3/8, 1/8); an even-aligned 4x4 block gives 0.875^2 on
    # a 2x2 core (kept) and 0.875 * 0.125 around it (dropped).
    out = load_mask(_block_mask(tmp_path, 100), 256)
    assert out.dtype == bool and out.shape == (256, 256)
    expected = np.zeros((256, 256), bool)
    expected[50:52, 50:52] = True
    np.testing.assert_array_equal(out, expected)


def test_mask_resize_threshold_is_inclusive_at_half(tmp_path: Path) -> None:
    # An odd-aligned block gives the profile (0.5, 1, 0.5) per axis: the centre is 1, its four neighbours
    # exactly 0.5 (kept: >= 0.5) and the corners 0.25 (dropped).
    out = load_mask(_block_mask(tmp_path, 101), 256)
    ys, xs = np.nonzero(out)
    pixels = sorted(zip(ys.tolist(), xs.tolist(), strict=True))
    assert pixels == [(50, 51), (51, 50), (51, 51), (51, 52), (52, 51)]


def test_tiny_defect_vanishes_and_the_mask_label_wins(tmp_path: Path) -> None:
    image = _save(tmp_path / "000.png", Image.fromarray(_gradient(64, 64)))
    mask = np.zeros((64, 64), np.uint8)
    mask[10, 10] = 255  # one pixel at 64 -> at most 1/4 coverage at 32
    mask_path = _save(tmp_path / "000_mask.png", Image.fromarray(mask))
    files = CategoryFiles("toy", [image], [TestItem(image, mask_path, "cut"), TestItem(image, None, "good")])
    test_set = load_test_set(files, 32)
    assert test_set.folder_labels.tolist() == [True, False]
    assert test_set.labels.tolist() == [False, False]
    assert not test_set.masks.any()


def test_load_images_keeps_order(tmp_path: Path) -> None:
    paths = []
    for i in range(7):
        paths.append(_save(tmp_path / f"{i}.png", Image.fromarray(np.full((20, 30, 3), i * 30, np.uint8))))
    out = load_images(paths[::-1], 16, workers=3)
    assert out.shape == (7, 16, 16, 3) and out.dtype == np.uint8
    assert out[:, 0, 0, 0].tolist() == [i * 30 for i in range(7)][::-1]
    assert load_images([], 16).shape == (0, 16, 16, 3)


def test_load_test_set_on_synthetic_category(tiny_mvtec) -> None:
    root = tiny_mvtec(["screw"])
    files = scan_category(root, "screw")
    test_set = load_test_set(files, 32)
    n = len(files.test)
    assert test_set.images.shape == (n, 32, 32, 3) and test_set.images.dtype == np.uint8
    assert test_set.masks.shape == (n, 32, 32) and test_set.masks.dtype == bool
    assert test_set.paths == [item.image for item in files.test]
    assert test_set.defects == [item.defect for item in files.test]
    good = np.array([d == "good" for d in test_set.defects])
    assert not test_set.masks[good].any()
    np.testing.assert_array_equal(test_set.labels, test_set.masks.any(axis=(1, 2)))
    np.testing.assert_array_equal(test_set.folder_labels, ~good)
    assert test_set.labels[~good].all()  # synthetic defects survive the resize at their own size
    gray = test_set.images[0]
    np.testing.assert_array_equal(gray[..., 0], gray[..., 1])  # grayscale category replicated to 3 channels


def test_to_tensor_and_normalize() -> None:
    images = np.zeros((2, 4, 5, 3), np.uint8)
    images[1, 2, 3] = (255, 51, 0)
    tensor = to_tensor(images)
    assert tensor.shape == (2, 3, 4, 5) and tensor.dtype == torch.float32 and tensor.is_contiguous()
    assert tensor[1, :, 2, 3].tolist() == pytest.approx([1.0, 0.2, 0.0])
    assert float(tensor.sum()) == pytest.approx(1.2)
    normed = normalize(tensor)
    assert normed[0, 0, 0, 0].item() == pytest.approx(-0.485 / 0.229)
    with pytest.raises(ValueError, match="uint8 B x H x W x 3"):
        to_tensor(images[0])
    with pytest.raises(ValueError, match="uint8 B x H x W x 3"):
        to_tensor(images.astype(np.float32))


def test_real_hazelnut_sample(shared_data: Path) -> None:
    files = scan_category(shared_data / "mvtec-sample", "hazelnut")
    train = load_images(files.train[:4], 256)
    assert train.shape == (4, 256, 256, 3)
    test_set = load_test_set(files, 256)
    assert len(test_set.paths) == 23
    assert int(test_set.folder_labels.sum()) == 17
    np.testing.assert_array_equal(test_set.labels, test_set.folder_labels)  # defects survive 512 -> 256
    assert 0 < test_set.masks.mean() < 0.2
