"""Fixtures for the synthetic-anomaly tests: a tiny DTD-layout texture folder and a tiny built bank."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pfadseg.config import Config
from pfadseg.synth.bank import build_bank
from pfadseg.synth.perlin import perlin_masks


def composer_inputs(
    cfg: Config,
    size: int,
    *,
    images: np.ndarray | None = None,
    masks: np.ndarray | None = None,
    textures: np.ndarray | None = None,
    device: str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Composer tensors (images, packed masks, textures) from given (or random) uint8 N x S x S x 3
    images/textures and bool K x S x S masks."""
    rng = np.random.default_rng(99)
    if images is None:
        images = rng.integers(0, 256, size=(6, size, size, 3), dtype=np.uint8)
    if textures is None:
        textures = rng.integers(0, 256, size=(5, size, size, 3), dtype=np.uint8)
    if masks is None:
        masks = perlin_masks(32, size, cfg.bank, rng)

    def chw(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))).to(device)

    return chw(images), torch.from_numpy(np.packbits(masks, axis=-1)).to(device), chw(textures)


@pytest.fixture(scope="session")
def texture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<root>/<class>/*`` with 6 small random images: jpg, jpeg and png, of different sizes."""
    root = tmp_path_factory.mktemp("textures")
    rng = np.random.default_rng(0)
    for c, suffixes in enumerate([(".jpg", ".png", ".JPEG"), (".jpeg", ".jpg", ".png")]):
        folder = root / f"class{c}"
        folder.mkdir()
        for i, suffix in enumerate(suffixes):
            pixels = rng.integers(0, 256, size=(40 + 10 * i, 56 - 5 * i, 3), dtype=np.uint8)
            fmt = "PNG" if suffix == ".png" else "JPEG"
            Image.fromarray(pixels).save(folder / f"t{i}{suffix}", format=fmt)
    (root / "class0" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def built_bank(tiny_config: Callable[..., Config], texture_dir: Path, tmp_path: Path) -> tuple[Config, Path]:
    """The tiny config (64 px, 64 masks, 8 textures) and a bank built from ``texture_dir``."""
    cfg = tiny_config()
    build_bank(cfg, texture_dir, tmp_path / "bank", progress=False)
    return cfg, tmp_path / "bank"
