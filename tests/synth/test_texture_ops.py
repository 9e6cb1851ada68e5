"""DRAEM's texture augmentations as batched torch ops (pfadseg.synth.texture_ops; DRAEM's data_loader.py)."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from pfadseg.synth.texture_ops import (
    TEXTURE_OPS,
    add_to_hue_and_saturation,
    apply_ops,
    augment_textures,
    autocontrast,
    choose_ops,
    enhance_sharpness,
    equalize,
    gamma_contrast,
    invert,
    multiply_and_add_to_brightness,
    posterize,
    rotate,
    solarize,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_images(b: int = 4, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (b, 3, size, size), generator=gen(seed)).float()


def chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float()


def hwc(x: torch.Tensor) -> np.ndarray:
    return x.round()[0].permute(1, 2, 0).numpy().astype(int)


def pixels(*rgb: tuple[float, float, float]) -> torch.Tensor:
    """1 x 3 x 1 x n image of the given RGB pixels."""
    return torch.tensor(rgb, dtype=torch.float32).T.reshape(1, 3, 1, len(rgb))


@pytest.mark.parametrize("name", list(TEXTURE_OPS))
def test_op_keeps_shape_range_and_is_deterministic(name: str) -> None:
    op, x = TEXTURE_OPS[name], random_images()
    out = op.transform(x, *op.sample(len(x), gen(3)))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 255
    torch.testing.assert_close(out, op.transform(x, *op.sample(len(x), gen(3))), rtol=0, atol=0)
    if name not in ("invert", "equalize"):  # the others draw parameters; same input, other draws, other output
        assert not torch.equal(out, op.transform(x, *op.sample(len(x), gen(4)))), name


def test_params_are_per_sample() -> None:
    x = random_images(b=1).expand(8, -1, -1, -1)
    for name in ("gamma", "brightness", "rotate"):
        op = TEXTURE_OPS[name]
        out = op.transform(x, *op.sample(8, gen()))
        assert len({tuple(o.flatten()[:64].tolist()) for o in out}) == 8, name


def test_gamma_by_hand() -> None:
    x = pixels((64, 64, 64), (255, 0, 255))
    out = gamma_contrast(x, torch.tensor([[0.5, 1.0, 2.0]]))
    # 255 (64/255)^0.5 = sqrt(64 * 255) = 127.75; 64; 64^2 / 255 = 16.06
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([127.749755, 64.0, 16.062745]))
    torch.testing.assert_close(out[0, :, 0, 1], torch.tensor([255.0, 0.0, 255.0]))


def test_brightness_by_hand() -> None:
    # Luma of (200, 100, 50) = 0.299*200 + 0.587*100 + 0.114*50 = 124.2; chroma is kept, so RGB move together.
    x = pixels((100, 100, 100), (200, 100, 50), (250, 250, 250))
    mul, add = torch.tensor([1.1]), torch.tensor([10.0])
    mul_first = multiply_and_add_to_brightness(x, mul, add, torch.tensor([False]))[0, :, 0]
    add_first = multiply_and_add_to_brightness(x, mul, add, torch.tensor([True]))[0, :, 0]
    torch.testing.assert_close(mul_first[:, 0], torch.full((3,), 120.0))  # 100 * 1.1 + 10
    torch.testing.assert_close(add_first[:, 0], torch.full((3,), 121.0))  # (100 + 10) * 1.1
    torch.testing.assert_close(mul_first[:, 1], torch.tensor([200.0, 100.0, 50.0]) + 22.42)  # Y 124.2 -> 146.62
    torch.testing.assert_close(mul_first[:, 2], torch.full((3,), 255.0))  # clipped
    plain = multiply_and_add_to_brightness(x, torch.tensor([1.0]), torch.tensor([-20.0]), torch.tensor([False]))
    torch.testing.assert_close(plain[0, :, 0, 1], torch.tensor([180.0, 80.0, 30.0]))


def test_solarize_by_hand() -> None:
    x = pixels((99, 100, 200))
    assert solarize(x, torch.tensor([100.0])).flatten().tolist() == [99.0, 155.0, 55.0]
    assert torch.equal(solarize(x, torch.tensor([256.0])), x)  # "not applied" (p = 0.5) is threshold 256
    op = TEXTURE_OPS["solarize"]
    (threshold,) = op.sample(2000, gen())
    applied = threshold <= 255
    assert 0.45 < applied.float().mean() < 0.55  # p = 0.5 (sd 0.011)
    assert threshold[applied].min() >= 32 and threshold[applied].max() <= 127
    assert torch.equal(threshold[applied], threshold[applied].floor())


def test_posterize_by_hand() -> None:
    x = pixels((31, 32, 255), (100, 127, 128))
    # Channel by channel: R (31, 100), G (32, 127), B (255, 128).
    assert posterize(x, torch.tensor([3])).flatten().tolist() == [0, 96, 32, 96, 224, 128]  # steps of 32
    assert posterize(x, torch.tensor([1])).flatten().tolist() == [0, 0, 0, 0, 128, 128]
    assert torch.equal(posterize(x, torch.tensor([8])), x)
    (bits,) = TEXTURE_OPS["posterize"].sample(1000, gen())
    assert set(bits.tolist()) == set(range(1, 9))


def test_invert_by_hand() -> None:
    assert invert(pixels((0, 10, 255))).flatten().tolist() == [255.0, 245.0, 0.0]


def test_autocontrast_by_hand() -> None:
    # One channel of 20 pixels: a 0, a 255 and 100..117; 5 % of 20 cuts exactly one pixel at each end.
    values = torch.tensor([0.0, 255.0, *range(100, 118)])
    x = values.view(1, 1, 4, 5).expand(1, 3, 4, 5)
    plain = autocontrast(x, torch.tensor([0]))
    assert torch.equal(plain, x)  # already spans 0..255
    cut = autocontrast(x, torch.tensor([5]))[0, 0].flatten()
    # lo = 100, hi = 117: v -> floor((v - 100) * 255 / 17), clipped
    assert cut[:2].tolist() == [0.0, 255.0]
    assert cut[2:].tolist() == [(v - 100) * 255 // 17 for v in range(100, 118)]
    flat = torch.full((1, 3, 4, 5), 77.0)
    assert torch.equal(autocontrast(flat, torch.tensor([10])), flat)  # a single level stays


def test_equalize_by_hand() -> None:
    # Two levels, half each (512 pixels): step = (512 - 256) // 255 = 1, so 10 -> 0 and 20 -> 256 -> 255.
    x = torch.cat([torch.full((1, 3, 16, 16), 10.0), torch.full((1, 3, 16, 16), 20.0)], dim=3)
    out = equalize(x)
    assert out[..., :16].unique().tolist() == [0.0] and out[..., 16:].unique().tolist() == [255.0]
    flat = torch.full((1, 3, 8, 8), 33.0)
    assert torch.equal(equalize(flat), flat)


def _skewed_image(seed: int = 0, shape: tuple[int, int] = (24, 20)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.gamma(2.0, 20.0, size=(*shape, 3)), 0, 255).astype(np.uint8)


def test_equalize_matches_pil_and_flattens() -> None:
    image = _skewed_image()
    out = hwc(equalize(chw(image)))
    assert np.abs(out - np.asarray(ImageOps.equalize(Image.fromarray(image)))).max() <= 1
    # With many pixels per level (PIL's step is floored), the share of pixels below level v is about v / 255.
    image = _skewed_image(shape=(64, 64))
    out = hwc(equalize(chw(image)))
    assert np.abs(out - np.asarray(ImageOps.equalize(Image.fromarray(image)))).max() <= 1
    for c in range(3):
        for level in (64, 128, 192):
            assert abs((out[..., c] < level).mean() - level / 255) < 0.1


@pytest.mark.parametrize("cutoff", [0, 5, 20])
def test_autocontrast_matches_pil(cutoff: int) -> None:
    image = _skewed_image(1)
    out = hwc(autocontrast(chw(image), torch.tensor([cutoff])))
    assert np.abs(out - np.asarray(ImageOps.autocontrast(Image.fromarray(image), cutoff=cutoff))).max() <= 1


@pytest.mark.parametrize("factor", [0.0, 0.6, 1.7])
def test_sharpness_matches_pil(factor: float) -> None:
    image = _skewed_image(2)
    out = hwc(enhance_sharpness(chw(image), torch.tensor([factor])))
    assert np.abs(out - np.asarray(ImageEnhance.Sharpness(Image.fromarray(image)).enhance(factor))).max() <= 1


def test_hue_and_saturation_match_colorsys() -> None:
    image = _skewed_image(3)[:6, :6]
    out = add_to_hue_and_saturation(chw(image), torch.tensor([50]), torch.tensor([-20]))[0].permute(1, 2, 0)
    # imgaug: hue 50 -> trunc(50 * 180 / 255) = 35 OpenCV steps = 70 degrees; saturation -20 of 255.
    expected = np.array([[colorsys.hsv_to_rgb((h + 70 / 360) % 1, min(max(s - 20 / 255, 0), 1), v)
                          for h, s, v in (colorsys.rgb_to_hsv(*(p / 255)) for p in row)] for row in image]) * 255
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-3)
    identity = add_to_hue_and_saturation(chw(image), torch.tensor([0]), torch.tensor([0]))
    np.testing.assert_allclose(identity.numpy(), chw(image).numpy(), atol=1e-3)


def test_rotate_quarter_turn_and_zero_fill() -> None:
    image = _skewed_image(4)[:16, :16]
    quarter = rotate(chw(image), torch.tensor([90.0]))
    np.testing.assert_allclose(hwc(quarter), np.asarray(Image.fromarray(image).rotate(90)), atol=1e-3)
    turned = rotate(torch.full((1, 3, 16, 16), 200.0), torch.tensor([45.0]))
    assert turned[..., 0, 0].max() == 0 and turned[..., 8, 8].min() == 200  # corners filled with 0


def test_choose_ops_draws_distinct_ops_in_random_order() -> None:
    ops = choose_ops(500, gen(), n_ops=3)
    assert ops.shape == (500, 3) and ops.dtype == torch.int64
    assert ops.min() >= 0 and ops.max() < len(TEXTURE_OPS)
    assert all(len(set(row)) == 3 for row in ops.tolist())
    counts = torch.bincount(ops.flatten(), minlength=len(TEXTURE_OPS))
    assert counts.min() > 100  # 150 expected per op
    assert (ops[:, 0] > ops[:, 1]).any() and (ops[:, 0] < ops[:, 1]).any()  # not a fixed order
    with pytest.raises(ValueError, match="n_ops"):
        choose_ops(2, gen(), n_ops=11)


def test_augment_textures_is_choose_then_apply_and_deterministic() -> None:
    textures = random_images(b=8).to(torch.uint8)
    out = augment_textures(textures, gen(7))
    assert out.shape == textures.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 255 and torch.equal(out, out.round())
    assert torch.equal(out, augment_textures(textures, gen(7)))
    assert not torch.equal(out, augment_textures(textures, gen(8)))
    g = gen(7)
    assert torch.equal(out, apply_ops(textures, choose_ops(8, g), g))


def test_apply_ops_applies_exactly_the_chosen_ops_in_order() -> None:
    x = random_images(b=2)
    ops = torch.tensor([[6, 5, 0], [0, 5, 6]])  # invert, posterize, gamma | gamma, posterize, invert
    out = apply_ops(x, ops, gen(5))
    g, transforms, expected = gen(5), list(TEXTURE_OPS.values()), x
    for column in ops.T:
        drawn = [op.sample(2, g) for op in transforms]  # every op draws for the whole batch in every round
        expected = torch.stack([
            transforms[k].transform(expected[i : i + 1], *(p[i : i + 1] for p in drawn[k]))[0]
            for i, k in enumerate(column.tolist())
        ]).round().clamp(0, 255)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_masked_and_subset_paths_agree() -> None:
    textures = random_images(b=12, size=24).to(torch.uint8)
    ops = choose_ops(12, gen(1))
    subset = apply_ops(textures, ops, gen(2), masked=False)
    masked = apply_ops(textures, ops, gen(2), masked=True)
    torch.testing.assert_close(subset, masked, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_augment_textures_on_cuda() -> None:
    textures = random_images(b=16, size=64).to(torch.uint8).cuda()
    out = augment_textures(textures, torch.Generator(device="cuda").manual_seed(0))
    assert out.device.type == "cuda" and out.shape == textures.shape
    assert out.min() >= 0 and out.max() <= 255
    assert torch.equal(out, augment_textures(textures, torch.Generator(device="cuda").manual_seed(0)))
