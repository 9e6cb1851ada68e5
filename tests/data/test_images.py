"""Image and mask reading per the DeSTSeg protocol (1.2, 1.5), test sets and tensors."""

from __future__ import annotations

import io
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from pfadseg.data.images import (
    MAX_IMAGE_PIXELS,
    ImageReadError,
    load_image,
    load_images,
    load_mask,
    load_test_set,
    load_train_set,
    normalize,
    open_image,
    read_rgb,
    to_tensor,
)
from pfadseg.data.layout import CategoryFiles, LayoutError, TestItem, scan_category


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


# ------------------------------------------------------------------- 8-bit unchanged, high bit depths, EXIF, size


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "JPEG"])
def test_8bit_images_read_exactly_as_pil_convert_rgb_and_bilinear_resize(tmp_path: Path, mode: str) -> None:
    rgb = Image.fromarray(_gradient(70, 100))
    image = {"L": rgb.convert("L"), "RGBA": rgb.convert("RGBA"), "P": rgb.quantize(32)}.get(mode, rgb)
    path = _save(tmp_path / ("a.jpg" if mode == "JPEG" else "a.png"), image)
    expected = np.asarray(Image.open(path).convert("RGB").resize((64, 64), Image.BILINEAR))  # the reading before
    np.testing.assert_array_equal(load_image(path, 64), expected)


def _ramp16(h: int = 64, w: int = 64) -> np.ndarray:
    """0 .. 65535 across the image, low bytes non-zero (so ``>> 8`` and ``/ 257`` differ)."""
    return (np.arange(h * w, dtype=np.uint32) * 65535 // (h * w - 1)).astype(np.uint16).reshape(h, w)


def _png16(path: Path, values: np.ndarray) -> Path:
    """A 16-bit-per-channel PNG (gray, RGB or RGBA), written by hand: Pillow cannot write 48/64-bit PNG."""
    h, w = values.shape[:2]
    color_type = {1: 0, 3: 2, 4: 6}[1 if values.ndim == 2 else values.shape[2]]
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in values)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("kind", ["png", "png-by-hand", "tiff-big-endian", "pgm"])
def test_16bit_grayscale_is_scaled_to_8bit_not_clipped(tmp_path: Path, kind: str) -> None:
    ramp = _ramp16()
    if kind == "png-by-hand":
        path = _png16(tmp_path / "g.png", ramp)
    else:
        image = Image.fromarray(ramp)
        if kind == "tiff-big-endian":
            image = Image.frombytes("I;16B", image.size, ramp.astype(">u2").tobytes())
        path = _save(tmp_path / f"g.{kind.split('-')[0]}", image)
    assert Image.open(path).mode in ("I;16", "I;16B", "I")  # what Pillow opens 16-bit files as
    out = load_image(path, 64)
    expected = (ramp >> 8).astype(np.uint8)  # the 8-bit ramp: value >> 8
    np.testing.assert_array_equal(out, np.repeat(expected[..., None], 3, axis=2))


def test_16bit_rgb_and_rgba_are_scaled_like_16bit_gray(tmp_path: Path) -> None:
    ramp = _ramp16()
    rgb = np.dstack([ramp, ramp[::-1], ramp.T])
    expected = (rgb >> 8).astype(np.uint8)
    np.testing.assert_array_equal(load_image(_png16(tmp_path / "rgb.png", rgb), 64), expected)
    rgba = np.dstack([rgb, np.full(ramp.shape, 65535, np.uint16)])
    np.testing.assert_array_equal(load_image(_png16(tmp_path / "rgba.png", rgba), 64), expected)


def test_float_and_32bit_images_have_a_documented_scale(tmp_path: Path) -> None:
    floats = np.linspace(0.0, 1.0, 64 * 64, dtype=np.float32).reshape(64, 64)
    out = load_image(_save(tmp_path / "f.tif", Image.fromarray(floats)), 64)
    np.testing.assert_array_equal(out[..., 0], np.rint(floats * 255).astype(np.uint8))
    for name, values, message in [
        ("f2.tif", floats * 300, r"float image with values 0 to 300; only floats in \[0, 1\]"),
        ("nan.tif", np.where(floats > 0.5, np.nan, floats).astype(np.float32), "NaN or inf"),
        ("i32.tif", _ramp16().astype(np.int32) * 4 - 1000, "outside the 16-bit range"),
    ]:
        path = _save(tmp_path / name, Image.fromarray(values))
        with pytest.raises(ImageReadError, match=str(path) + ".*" + message):
            load_image(path, 64)


def test_16bit_masks_binarise_at_half_their_range(tmp_path: Path) -> None:
    mask = np.zeros((64, 64), np.uint16)
    mask[8:24, 8:24] = 65535
    mask[40:56, 40:56] = 20000  # below half of the 16-bit range: background, as 78 is in an 8-bit mask
    out = load_mask(_save(tmp_path / "m.png", Image.fromarray(mask)), 32)
    expected = np.zeros((32, 32), bool)
    expected[4:12, 4:12] = True
    np.testing.assert_array_equal(out, expected)
    eight_bit = (mask >> 8).astype(np.uint8)
    np.testing.assert_array_equal(out, load_mask(_save(tmp_path / "m8.png", Image.fromarray(eight_bit)), 32))

    low = _save(tmp_path / "low.png", Image.fromarray((mask > 0).astype(np.uint16) * 255))  # 0/255 in 16 bit
    with pytest.raises(ImageReadError, match=str(low) + ".*save masks as 0/255 \\(8-bit\\) or 0/65535"):
        load_mask(low, 32)


def _oriented(path: Path, array: np.ndarray, orientation: int = 6, **kwargs: object) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(path, Image.fromarray(array), exif=exif, **kwargs)


def test_exif_orientation_is_applied_to_images_and_masks(tmp_path: Path) -> None:
    array = _gradient(40, 96)  # landscape as stored; orientation 6: shown rotated 90 degrees clockwise
    upright = np.rot90(array, k=-1)
    png = _oriented(tmp_path / "o.png", array)
    np.testing.assert_array_equal(load_image(png, 96), np.asarray(Image.fromarray(upright).resize((96, 96),
                                                                                                  Image.BILINEAR)))
    jpeg = _oriented(tmp_path / "o.jpg", array, quality=95)
    with Image.open(jpeg) as im:
        assert im.size == (96, 40)
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB").resize((64, 64), Image.BILINEAR))
    out = load_image(jpeg, 64)
    np.testing.assert_array_equal(out, expected)
    stored = np.asarray(Image.open(jpeg).convert("RGB").resize((64, 64), Image.BILINEAR))
    assert np.abs(out.astype(int) - stored).mean() > 10  # not the stored orientation

    mask = np.zeros((40, 96), np.uint8)
    mask[:, :48] = 255  # the left half as stored: the top half once upright
    out_mask = load_mask(_oriented(tmp_path / "o_mask.png", mask), 32)
    assert out_mask[:16].all() and not out_mask[16:].any()


@pytest.mark.parametrize("size", [(1, 1), (31, 200), (200, 31)])
def test_images_below_the_minimum_side_are_rejected_naming_the_file(tmp_path: Path, size: tuple[int, int]) -> None:
    path = _save(tmp_path / "tiny.png", Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)))
    with pytest.raises(ImageReadError, match=str(path) + f".*{size[0]} x {size[1]} px.*at least 32 px"):
        load_image(path, 64)
    assert load_image(_save(tmp_path / "ok.png", Image.fromarray(np.zeros((32, 200, 3), np.uint8))), 64).shape == (
        64, 64, 3)


def _claimed_png(path: Path, width: int, height: int) -> Path:
    """An 8-bit grayscale PNG whose header claims ``width`` x ``height`` px, cut off within its first row."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(width + 1)))
    path.write_bytes(data[:-6])
    return path


def test_images_over_the_pixel_limit_are_refused_from_their_header(tmp_path: Path,
                                                                   recwarn: pytest.WarningsRecorder) -> None:
    assert MAX_IMAGE_PIXELS > 12000 * 12000  # a 12000 x 12000 scan is read
    huge = _claimed_png(tmp_path / "huge.png", 20000, 20000)  # 400 M px, only a header: nothing is decoded
    with pytest.raises(ImageReadError, match=re.escape(f"{huge}: image is 20000 x 20000 = 400,000,000 px, more than "
                                                       f"the limit of {MAX_IMAGE_PIXELS:,} px") + ".*--max-pixels"):
        read_rgb(huge)
    small = _save(tmp_path / "a.png", Image.fromarray(_gradient(40, 60)))
    with pytest.raises(ImageReadError, match="40 = 2,400 px, more than the limit of 2,399 px"):
        read_rgb(small, max_pixels=2399)
    assert read_rgb(small, max_pixels=2400).size == (60, 40), "the limit itself is allowed"
    assert not recwarn.list


def test_our_limit_replaces_pillows_decompression_bomb_check(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    """Pillow warns (raw) above 89 M px and raises above twice that; the project's limit decides instead, silently."""
    big = _claimed_png(tmp_path / "big.png", 10000, 10000)  # 100 M px, within our default limit
    with pytest.raises(ImageReadError, match=re.escape(f"{big}: cannot read image (image file is truncated")):
        open_image(big)
    huge = _claimed_png(tmp_path / "huge.png", 20000, 20000)  # 400 M px, allowed by a raised limit
    with pytest.raises(ImageReadError, match=re.escape(f"{huge}: cannot read image (image file is truncated")):
        open_image(huge, max_pixels=400_000_000)
    assert not [w for w in recwarn.list if issubclass(w.category, Image.DecompressionBombWarning)]


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
        paths.append(_save(tmp_path / f"{i}.png", Image.fromarray(np.full((40, 50, 3), i * 30, np.uint8))))
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


def test_the_train_set_reads_only_train_good(tmp_path: Path) -> None:
    """Training and calibration load train/good alone: a category without test split or masks still trains."""
    good = tmp_path / "widget" / "train" / "good"
    good.mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (48, 40), (40 * i, 0, 0)).save(good / f"{i:03d}.png")
    images = load_train_set(tmp_path, "widget", 8)
    assert images.shape == (2, 8, 8, 3) and images.dtype == np.uint8
    with pytest.raises(LayoutError, match="test folder not found"):
        scan_category(tmp_path, "widget")
