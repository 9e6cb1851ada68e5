"""The DRAEM-recipe composer for ADPS (pfadseg.synth.draem; DRAEM's data_loader.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from pfadseg.config import Config
from pfadseg.data.images import IMAGENET_MEAN, IMAGENET_STD
from pfadseg.synth import draem
from pfadseg.synth.bank import AnomalyBank, build_bank
from pfadseg.synth.draem import DraemComposer, make_draem_composer
from tests.synth.conftest import composer_inputs

S = 64
MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def normalized(images_uint8: torch.Tensor) -> torch.Tensor:
    return (images_uint8.float() / 255 - MEAN) / STD


ATOL = 1e-4  # float32 rounding of the composer's affine normalisation; one grey level is ~0.017


def chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


def make(
    cfg: Config,
    *,
    images: np.ndarray | None = None,
    masks: np.ndarray | None = None,
    textures: np.ndarray | None = None,
    seed: int = 0,
    **options: float,
) -> DraemComposer:
    """A CPU composer over given (or random) uint8 N x S x S x 3 images/textures and bool K x S x S masks."""
    inputs = composer_inputs(cfg, S, images=images, masks=masks, textures=textures)
    return DraemComposer(*inputs, cfg.bank, cfg.train.augment, torch.Generator().manual_seed(seed),
                         dataclasses.replace(cfg.train.adps, **options))


def square_masks(k: int = 8) -> np.ndarray:
    """Non-empty masks (a 16 x 16 square each), so an empty sampled mask means a clean sample."""
    masks = np.zeros((k, S, S), dtype=bool)
    masks[:, 8:24, 8:24] = True
    return masks


@pytest.fixture
def cfg(tiny_config: Callable[..., Config]) -> Config:
    return tiny_config()


def test_shapes_and_outside_the_mask(cfg: Config) -> None:
    batch = make(cfg).sample(16)
    assert batch["img_aug"].shape == batch["img_origin"].shape == (16, 3, S, S)
    assert batch["mask"].shape == (16, 1, S, S)
    assert all(t.dtype == torch.float32 for t in batch.values())
    assert set(batch["mask"].unique().tolist()) <= {0.0, 1.0}
    outside = batch["mask"].expand(-1, 3, -1, -1) == 0
    assert torch.equal(batch["img_aug"][outside], batch["img_origin"][outside])
    inside = ~outside
    assert inside.any() and not torch.equal(batch["img_aug"][inside], batch["img_origin"][inside])


def test_clean_and_rotated_shares(cfg: Config) -> None:
    # 400 samples at 64 px of one image over non-empty masks: clean ~ Bin(400, 0.5) (sd 0.025) and
    # rotated ~ Bin(400, 0.3) (sd 0.023); tolerance 0.1, four standard deviations.
    image = np.random.default_rng(3).integers(0, 256, size=(1, S, S, 3), dtype=np.uint8)
    composer = make(cfg, images=image, masks=square_masks(), clean_probability=0.5, rotate_probability=0.3)
    batches = [composer.sample(100) for _ in range(4)]
    mask = torch.cat([b["mask"] for b in batches])
    aug, origin = torch.cat([b["img_aug"] for b in batches]), torch.cat([b["img_origin"] for b in batches])
    clean = mask.sum((1, 2, 3)) == 0
    assert abs(clean.float().mean().item() - 0.5) < 0.1
    assert torch.equal(aug[clean], origin[clean])
    assert (aug[~clean] != origin[~clean]).flatten(1).any(1).all()
    unrotated = torch.isclose(origin, normalized(chw(image)), atol=ATOL).flatten(1).all(1)
    assert abs((~unrotated).float().mean().item() - 0.3) < 0.1


def test_no_rotation_gives_the_normalised_inputs(cfg: Config) -> None:
    images = np.random.default_rng(4).integers(0, 256, size=(3, S, S, 3), dtype=np.uint8)
    origin = make(cfg, images=images, rotate_probability=0.0).sample(12)["img_origin"]
    reference = normalized(chw(images))
    for o in origin:
        assert min((o - r).abs().max().item() for r in reference) < ATOL


def test_rotation_fills_black(cfg: Config) -> None:
    image = np.full((1, S, S, 3), 200, dtype=np.uint8)
    origin = make(cfg, images=image, rotate_probability=1.0, rotate_degrees=45.0).sample(32)["img_origin"]
    corner = origin[:, :, 0, 0]  # turned out of the picture by any angle beyond ~2 degrees: black
    black = normalized(torch.zeros(1, 3, 1, 1, dtype=torch.uint8)).flatten()
    assert torch.isclose(corner, black, atol=ATOL).all(1).float().mean() > 0.9
    torch.testing.assert_close(origin[:, :, S // 2, S // 2], normalized(chw(image))[:, :, 0, 0].expand(32, 3),
                               atol=ATOL, rtol=0)


def test_texture_opacity_range(cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    # Black image, white texture left as is, full masks: inside, img_aug = opacity * white, opacity in (0.2, 1].
    monkeypatch.setattr(draem, "augment_textures", lambda textures, generator: textures.float())
    composer = make(cfg, images=np.zeros((1, S, S, 3), np.uint8), textures=np.full((1, S, S, 3), 255, np.uint8),
                    masks=np.ones((2, S, S), dtype=bool), clean_probability=0.0, rotate_probability=0.0)
    aug = composer.sample(400)["img_aug"] * STD + MEAN
    opacity = aug[:, :, S // 2, S // 2]
    assert torch.allclose(opacity, opacity[:, :1], atol=1e-5)  # one opacity per sample
    assert opacity.min() > 0.2 - 1e-5 and opacity.max() <= 1 + 1e-5
    assert opacity.min() < 0.25 and opacity.max() > 0.95  # covers the range (uniform, 400 draws)


def test_textures_are_augmented_per_draw(cfg: Config) -> None:
    # One texture, full masks, opaque enough: the pasted textures differ between draws.
    texture = np.random.default_rng(5).integers(0, 256, size=(1, S, S, 3), dtype=np.uint8)
    composer = make(cfg, images=np.zeros((1, S, S, 3), np.uint8), textures=texture,
                    masks=np.ones((2, S, S), dtype=bool), clean_probability=0.0, rotate_probability=0.0)
    aug = composer.sample(8)["img_aug"]
    assert len({tuple(a.flatten()[:32].tolist()) for a in aug}) == 8


def test_determinism(cfg: Config) -> None:
    a, b, c = (make(cfg, seed=s).sample(8) for s in (5, 5, 6))
    for key in a:
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["img_aug"], c["img_aug"])


def test_make_draem_composer(tiny_config: Callable[..., Config], texture_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config("train.adps.clean_probability=0.25", "train.adps.rotate_probability=0.0",
                      "train.adps.rotate_degrees=30")
    build_bank(cfg, texture_dir, tmp_path / "bank", progress=False)
    bank = AnomalyBank.load(tmp_path / "bank", cfg)
    images = np.random.default_rng(6).integers(0, 256, size=(4, S, S, 3), dtype=np.uint8)
    composer = make_draem_composer(cfg, "bottle", images, bank, "cpu", torch.Generator().manual_seed(0))
    assert (composer.clean_probability, composer.rotate_probability, composer.rotate_degrees) == (0.25, 0.0, 30.0)
    assert composer.sample(4)["img_aug"].shape == (4, 3, S, S)
    with pytest.raises(ValueError, match="training images must be uint8"):  # make_composer's check
        make_draem_composer(cfg, "bottle", images.astype(np.float32), bank, "cpu", torch.Generator())


def test_refuses_a_pre_augmented_bank(tiny_config: Callable[..., Config]) -> None:
    with pytest.raises(ValueError, match="texture_augment"):
        make(tiny_config("bank.texture_augment=true"))
