"""The training tests' project folder: the tiny offline dataset, textures and bank, as the DVC stages leave them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pfadseg.config import Config
from pfadseg.paths import Layout
from pfadseg.pipeline.acquire_images import acquire_images
from pfadseg.pipeline.acquire_textures import acquire_textures
from pfadseg.pipeline.bank import run_bank

OFFLINE = ("data.source=synthetic", "data.textures=procedural", "model.teacher_weights=random")


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_config: Callable[..., Config]) -> Path:
    """The current folder, holding what acquire_images, acquire_textures and bank write for the tiny settings."""
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(*OFFLINE)
    acquire_images(cfg, Layout(), progress=False)
    acquire_textures(cfg, Layout(), progress=False)
    run_bank(cfg, Layout(), progress=False)
    return tmp_path
