"""The on-device batch composer against DeSTSeg's data/mvtec_dataset.py and the per-sample reference path."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from pfadseg.config import AugmentConfig, BankConfig, Config
from pfadseg.data.images import IMAGENET_MEAN, IMAGENET_STD
from pfadseg.synth.bank import AnomalyBank
from pfadseg.synth.composer import (
    AugmentGroup,
    BatchComposer,
    blend,
    compose_sample_reference,
    make_composer,
    rotate_images,
)
from pfadseg.synth.perlin import perlin_masks, rotation_grid, rotation_theta
from tests.synth.conftest import composer_inputs

S = 64
MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def denormalize(x: torch.Tensor) -> torch.Tensor:
    return x * STD + MEAN


@pytest.fixture
def cfg(tiny_config: Callable[..., Config]) -> Config:
    return tiny_config()


def composer(
    cfg: Config,
    group: AugmentGroup,
    *,
    images: np.ndarray | None = None,
    masks: np.ndarray | None = None,
    textures: np.ndarray | None = None,
    seed: int = 0,
    augment: AugmentConfig | None = None,
    device: str = "cpu",
) -> BatchComposer:
    """A CPU composer over given (or random) uint8 N x S x S x 3 images/textures and bool K x S x S masks."""
    inputs = composer_inputs(cfg, S, images=images, masks=masks, textures=textures, device=device)
    return BatchComposer(*inputs, group, cfg.bank, augment or cfg.train.augment,
                         torch.Generator(device=device).manual_seed(seed))


def test_blend_formula_on_hand_made_tensors() -> None:
    g = torch.Generator().manual_seed(0)
    image, texture = torch.rand(4, 3, 8, 8, generator=g), torch.rand(4, 3, 8, 8, generator=g)
    mask = (torch.rand(4, 1, 8, 8, generator=g) > 0.5).float()
    beta = torch.tensor([0.2001, 0.5, 0.9, 1.0]).view(4, 1, 1, 1)
    expected = image * (1 - mask) + beta * texture * mask + (1 - beta) * image * mask
    out = blend(image, texture, mask, beta)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    outside = mask.expand_as(image) == 0
    assert torch.equal(out[outside], image[outside])
    assert torch.equal(out[:, :, :, :][beta.expand(4, 3, 8, 8).eq(1) & ~outside],
                       texture[beta.expand(4, 3, 8, 8).eq(1) & ~outside])


def test_batch_layout_and_pixels_outside_the_mask(cfg: Config) -> None:
    batch = composer(cfg, "rotate").sample(8)
    assert batch["img_aug"].shape == batch["img_origin"].shape == (8, 3, S, S)
    assert batch["mask"].shape == (8, 1, S, S)
    assert all(v.dtype == torch.float32 for v in batch.values())
    assert set(batch["mask"].unique().tolist()) <= {0.0, 1.0} and batch["mask"].sum() > 0
    outside = batch["mask"].expand(-1, 3, -1, -1) == 0
    assert torch.equal(batch["img_aug"][outside], batch["img_origin"][outside])
    assert (batch["img_aug"] != batch["img_origin"]).any()


def test_blend_in_the_composer_with_one_texture(cfg: Config) -> None:
    # Constant image 50 and constant texture 200, no rotation: inside the mask aug = beta*200 + (1-beta)*50
    # (in [0, 1] units), so each sample's beta is recoverable, constant over its mask and in (0.2, 1].
    images = np.full((1, S, S, 3), 50, dtype=np.uint8)
    textures = np.full((1, S, S, 3), 200, dtype=np.uint8)
    masks = np.zeros((1, S, S), dtype=bool)
    masks[0, 10:30, 5:50] = True
    batch = composer(cfg, "none", images=images, masks=masks, textures=textures).sample(32)
    aug, origin, mask = denormalize(batch["img_aug"]), denormalize(batch["img_origin"]), batch["mask"]
    torch.testing.assert_close(origin, torch.full_like(origin, 50 / 255), atol=1e-5, rtol=0)
    assert torch.equal(mask.sum(dim=(1, 2, 3)), torch.full((32,), 20.0 * 45))  # flips/rolls keep the area
    beta = (aug - 50 / 255) / (150 / 255)
    inside = mask.expand_as(aug).bool()
    for b in range(32):
        values = beta[b][inside[b]]
        assert values.max() - values.min() < 1e-4
        assert 0.2 < values.mean() <= 1.0 + 1e-4
    assert torch.equal(aug[~inside], origin[~inside])
    betas = torch.stack([beta[b][inside[b]].mean() for b in range(32)])
    assert betas.std() > 0.1  # drawn per sample


def test_same_seed_same_batches(cfg: Config) -> None:
    a = composer(cfg, "rotate", seed=5)
    b = composer(cfg, "rotate", seed=5)
    c = composer(cfg, "rotate", seed=6)
    for _ in range(2):
        x, y, z = a.sample(4), b.sample(4), c.sample(4)
        assert all(torch.equal(x[k], y[k]) for k in x)
        assert not torch.equal(x["img_aug"], z["img_aug"])


def test_group_none_leaves_images_unchanged(cfg: Config) -> None:
    images = np.random.default_rng(1).integers(0, 256, size=(3, S, S, 3), dtype=np.uint8)
    origin = denormalize(composer(cfg, "none", images=images).sample(12)["img_origin"]) * 255
    pool = torch.from_numpy(images.transpose(0, 3, 1, 2)).float()
    for sample in origin:
        assert min((sample - im).abs().max().item() for im in pool) < 0.01  # of 255


def test_quarter_turns_are_exact_permutations() -> None:
    image = torch.rand(4, 3, S, S, generator=torch.Generator().manual_seed(0))
    turns = torch.tensor([0, 1, 2, 3])
    out = rotate_images(image, torch.zeros(4), 0.5, turns)
    for k in range(4):
        torch.testing.assert_close(out[k], torch.rot90(image[k], k, dims=(-2, -1)), atol=1e-5, rtol=0)
        as_uint8 = (image[k].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        pil = Image.fromarray(as_uint8).rotate(90 * k)
        np.testing.assert_allclose(out[k].permute(1, 2, 0).numpy() * 255, np.asarray(pil), atol=0.51)


def test_rotate_group_with_no_slight_angle_permutes(cfg: Config) -> None:
    images = np.random.default_rng(2).integers(0, 256, size=(2, S, S, 3), dtype=np.uint8)
    augment = dataclasses.replace(cfg.train.augment, slight_degrees=0.0)
    batch = composer(cfg, "rotate", images=images, augment=augment).sample(16)
    origin = denormalize(batch["img_origin"]) * 255
    pool = torch.from_numpy(images.transpose(0, 3, 1, 2)).float()
    candidates = [torch.rot90(im, k, dims=(-2, -1)) for im in pool for k in range(4)]
    seen = set()
    for sample in origin:
        errors = [(sample - c).abs().max().item() for c in candidates]
        assert min(errors) < 0.01  # of 255
        seen.add(int(np.argmin(errors)) % 4)
    assert len(seen) > 1


def test_slight_rotation_fills_corners_with_114() -> None:
    for degrees in (5.0, -5.0):
        out = rotate_images(torch.zeros(1, 3, S, S), torch.tensor([degrees]), 114 / 255)
        assert (out[0, :, [0, 0, -1, -1], [0, -1, 0, -1]] == pytest.approx(114 / 255, abs=1e-6))
        assert out[0, :, 8:-8, 8:-8].abs().max() < 1e-6


def test_rotation_matches_pil() -> None:
    rng = np.random.default_rng(3)
    coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((S, S), Image.Resampling.BICUBIC))
    pil = np.asarray(Image.fromarray(image).rotate(30, resample=Image.Resampling.BILINEAR,
                                                   fillcolor=(114, 114, 114)), dtype=np.float64)
    x = torch.from_numpy(image.transpose(2, 0, 1).copy()).float()[None] / 255
    ours = rotate_images(x, torch.tensor([30.0]), 114 / 255)[0].permute(1, 2, 0).numpy() * 255
    assert np.abs(ours - pil)[4:-4, 4:-4].mean() < 1.0  # same direction and centre (PIL rounds to uint8)


def test_rotation_grid_equals_affine_grid() -> None:
    theta = rotation_theta(torch.tensor([0.0, 17.0, -88.0]), torch.tensor([0, 1, 3]))
    expected = torch.nn.functional.affine_grid(theta, [3, 1, S, S], align_corners=False)
    torch.testing.assert_close(rotation_grid(theta, S), expected, atol=1e-6, rtol=0)


def test_slight_group_fills_with_114(cfg: Config) -> None:
    images = np.zeros((2, S, S, 3), dtype=np.uint8)
    origin = denormalize(composer(cfg, "slight", images=images).sample(32)["img_origin"])
    corners = origin[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert corners.min() > -1e-6 and corners.max() <= 114 / 255 + 1e-6
    assert (corners.amax(dim=(1, 2)) > 0.1).float().mean() > 0.5
    torch.testing.assert_close(origin[:, :, 16:48, 16:48], torch.zeros(32, 3, 32, 32), atol=1e-6, rtol=0)


def _coverage(masks: np.ndarray) -> np.ndarray:
    return masks.reshape(len(masks), -1).mean(axis=1)


def test_mask_distribution_matches_the_reference(cfg: Config) -> None:
    # Two-sample tests, composer vs DeSTSeg-style per-sample synthesis at 64 px. The composer's draws come
    # from a finite bank (400 masks), so its effective sample size is the bank size. Empty shares: within
    # 4 SE of their difference, sqrt(p(1-p)(1/n1 + 1/n2)); coverage: Kolmogorov-Smirnov, p > 0.001.
    bank_masks = perlin_masks(400, S, cfg.bank, np.random.default_rng(8))
    comp = composer(cfg, "rotate", masks=bank_masks, seed=3)
    drawn = torch.cat([comp.sample(200)["mask"] for _ in range(4)]).squeeze(1).numpy()
    rng = np.random.default_rng(9)
    image = rng.integers(0, 256, size=(S, S, 3), dtype=np.uint8)
    texture = rng.integers(0, 256, size=(S, S, 3), dtype=np.uint8)
    ref = np.stack([compose_sample_reference(image, texture, rng, cfg.bank, "rotate", cfg.train.augment)[2][0]
                    for _ in range(500)])
    n1, n2 = len(bank_masks), len(ref)
    e1, e2 = (_coverage(drawn) == 0).mean(), (_coverage(ref) == 0).mean()
    p = (e1 * n1 + e2 * n2) / (n1 + n2)
    assert abs(e1 - e2) <= 4 * math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2)), (e1, e2)
    assert stats.ks_2samp(_coverage(drawn), _coverage(ref)).pvalue > 1e-3


def _d4_variants(mask: np.ndarray) -> list[np.ndarray]:
    """The 8 flips/90-degree turns of a square mask."""
    turns = [np.rot90(mask, k) for k in range(4)]
    return turns + [np.fliplr(t) for t in turns]


def test_masks_are_flipped_turned_and_rolled_bank_masks(cfg: Config) -> None:
    # One asymmetric random mask in the bank: every draw must be exactly one of its 8 flips/turns rolled by
    # some cyclic offset, and over many draws all 8 appear (the transposed half comes from the transposed
    # copy of the bank).
    size = 16
    bank_mask = np.random.default_rng(5).random((size, size)) < 0.3
    variants = _d4_variants(bank_mask)
    assert len({v.tobytes() for v in variants}) == 8
    images, masks_packed, textures = composer_inputs(cfg, size, masks=bank_mask[None])
    comp = BatchComposer(images, masks_packed, textures, "none", cfg.bank, cfg.train.augment,
                         torch.Generator().manual_seed(0))
    seen = set()
    for drawn in comp.sample(160)["mask"][:, 0].numpy().astype(bool):
        matches = [k for k, v in enumerate(variants) for dy in range(size) for dx in range(size)
                   if np.array_equal(np.roll(v, (dy, dx), axis=(0, 1)), drawn)]
        assert matches, "a drawn mask is no flip/turn/roll of the bank mask"
        seen.update(matches)
    assert seen == set(range(8))


@pytest.mark.parametrize("group", ["none", "slight", "rotate"])
def test_reuse_overwrites_the_earlier_batch(cfg: Config, group: AugmentGroup) -> None:
    fresh, reusing = composer(cfg, group, seed=4), composer(cfg, group, seed=4)
    earlier = reusing.sample(6)
    kept = {key: tensor.clone() for key, tensor in earlier.items()}
    fresh.sample(6)
    expected, batch = fresh.sample(6), reusing.sample(6, reuse=earlier)
    assert all(torch.equal(batch[key], expected[key]) for key in expected)
    assert batch["img_aug"] is earlier["img_aug"] and batch["mask"] is earlier["mask"]
    assert not torch.equal(earlier["img_aug"], kept["img_aug"])  # overwritten, as documented
    if group == "none":
        assert batch["img_origin"] is earlier["img_origin"]


def test_reuse_refuses_a_batch_of_another_shape(cfg: Config) -> None:
    comp = composer(cfg, "none")
    with pytest.raises(ValueError, match=r"reuse: expected an earlier batch of 4.*'img_aug'"):
        comp.sample(4, reuse=comp.sample(3))
    with pytest.raises(ValueError, match="'mask'"):
        comp.sample(4, reuse={**comp.sample(4), "mask": torch.empty(4, 3, S, S)})


def test_reference_sample(cfg: Config) -> None:
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, size=(S, S, 3), dtype=np.uint8)
    texture = rng.integers(0, 256, size=(S, S, 3), dtype=np.uint8)
    bank_cfg: BankConfig = dataclasses.replace(cfg.bank, perlin_threshold=0.0)  # large masks
    aug, origin, mask = compose_sample_reference(image, texture, rng, bank_cfg, "none", cfg.train.augment)
    assert aug.shape == origin.shape == (3, S, S) and mask.shape == (1, S, S)
    assert aug.dtype == origin.dtype == mask.dtype == np.float32
    outside = np.broadcast_to(mask == 0, aug.shape)
    np.testing.assert_array_equal(aug[outside], origin[outside])
    mean, std = np.reshape(IMAGENET_MEAN, (3, 1, 1)), np.reshape(IMAGENET_STD, (3, 1, 1))
    expected = (image.transpose(2, 0, 1) / 255 - mean) / std
    np.testing.assert_allclose(origin, expected, atol=1e-5)
    assert mask.sum() > 0 and (aug != origin).any()


def test_make_composer(cfg: Config, built_bank: tuple[Config, Path]) -> None:
    bank_cfg, root = built_bank
    bank = AnomalyBank.load(root, bank_cfg)
    images = np.random.default_rng(0).integers(0, 256, size=(3, S, S, 3), dtype=np.uint8)
    made = make_composer(cfg, "bottle", images, bank, "cpu", torch.Generator().manual_seed(0))
    assert made.group == "rotate" and made.sample(2)["mask"].shape == (2, 1, S, S)
    assert make_composer(cfg, "pill", images, bank, "cpu", torch.Generator()).group == "none"
    assert make_composer(cfg, "wood", images, bank, "cpu", torch.Generator()).group == "slight"
    with pytest.raises(ValueError, match=r"data\.image_size"):
        make_composer(cfg, "bottle", images[:, :32], bank, "cpu", torch.Generator())
    with pytest.raises(ValueError, match="masks_packed"):
        BatchComposer(made.images, made.masks_packed[:, :, :4], made.textures, "none", cfg.bank,
                      cfg.train.augment, torch.Generator())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("group", ["none", "slight", "rotate"])
def test_sample_never_syncs_with_the_host(cfg: Config, group: AugmentGroup) -> None:
    comp = composer(cfg, group, device="cuda")
    comp.sample(4)  # first call may initialise CUDA libraries
    torch.cuda.set_sync_debug_mode("error")
    try:
        batch = comp.sample(4)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert batch["img_aug"].device.type == "cuda"
