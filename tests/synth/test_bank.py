"""The anomaly bank: build, load, verification and errors (pfadseg.synth.bank)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from pfadseg.config import Config
from pfadseg.data.images import load_image
from pfadseg.paths import Layout
from pfadseg.pipeline.bank import run_bank
from pfadseg.synth.bank import (
    BANK_PARAMS,
    AnomalyBank,
    BankError,
    build_bank,
    list_textures,
    pack_masks,
    texture_selection,
    transpose_packed_masks,
    unpack_masks,
)


def test_pack_unpack_and_transpose_packed_masks() -> None:
    masks = np.random.default_rng(2).random((5, 16, 16)) < 0.5
    packed = torch.from_numpy(np.packbits(masks, axis=-1))
    np.testing.assert_array_equal(unpack_masks(packed).numpy(), masks)
    assert torch.equal(pack_masks(unpack_masks(packed)), packed)
    out = torch.empty(5, 16, 16, dtype=torch.uint8)
    assert unpack_masks(packed, out=out).data_ptr() == out.data_ptr()
    np.testing.assert_array_equal(unpack_masks(transpose_packed_masks(packed, chunk=2)).numpy(),
                                  masks.transpose(0, 2, 1))


def test_round_trip(built_bank: tuple[Config, Path], texture_dir: Path) -> None:
    cfg, root = built_bank
    assert sorted(p.name for p in root.iterdir()) == ["bank.json", "masks.npy", "textures.npy"]
    bank = AnomalyBank.load(root, cfg)
    np.testing.assert_array_equal(bank.masks, np.load(root / "masks.npy"))
    assert bank.masks.shape == (64, 64, 8) and bank.masks.dtype == np.uint8
    assert bank.textures.shape == (8, 64, 64, 3) and bank.textures.dtype == np.uint8
    assert bank.image_size == 64
    # Torch unpacking on the device matches np.unpackbits; textures are the squash-resized sources.
    np.testing.assert_array_equal(unpack_masks(bank.masks_tensor("cpu")).numpy(),
                                  np.unpackbits(bank.masks, axis=-1))
    textures = bank.textures_tensor("cpu")
    assert textures.shape == (8, 3, 64, 64) and textures.dtype == torch.uint8
    np.testing.assert_array_equal(textures.permute(0, 2, 3, 1).numpy(), bank.textures)
    sources = [load_image(p, 64) for p in list_textures(texture_dir)]
    matched = [next(i for i, s in enumerate(sources) if np.array_equal(s, t)) for t in bank.textures]
    assert sorted(set(matched[:6])) == list(range(6))  # all 6 sources are used before any repeats


def test_metadata_and_stats(built_bank: tuple[Config, Path], texture_dir: Path) -> None:
    cfg, root = built_bank
    meta = json.loads((root / "bank.json").read_text())
    assert set(meta["params"]) == set(BANK_PARAMS)
    assert meta["params"]["bank.n_masks"] == 64 and meta["params"]["data.image_size"] == 64
    assert meta["image_size"] == 64 and meta["seed"] == cfg.seed and meta["n_source_textures"] == 6
    assert len(meta["fingerprint"]) == 64
    st = meta["stats"]
    assert 0.01 < st["mean_coverage"] < 0.1 and 0.0 <= st["empty_share"] < 0.3
    pct = [st["coverage_percentiles"][q] for q in ("10", "50", "90", "99")]
    assert pct == sorted(pct) and pct[-1] <= 1.0
    assert "build_seconds" not in st, "no timing in the output: its hash is a key of every stage downstream"
    masks = np.unpackbits(np.load(root / "masks.npy"), axis=-1)
    assert st["mean_coverage"] == pytest.approx(masks.mean())
    assert st["empty_share"] == pytest.approx((~masks.any(axis=(1, 2))).mean())
    assert set(st["empty_share_by_exponent_sum"]) <= {str(s) for s in range(11)}


def test_build_is_deterministic(tiny_config: Callable[..., Config], texture_dir: Path,
                                tmp_path: Path) -> None:
    cfg = tiny_config("bank.n_masks=16", "bank.n_textures=4")
    stats = build_bank(cfg, texture_dir, tmp_path / "a", progress=False)
    build_bank(cfg, texture_dir, tmp_path / "b", progress=False)
    assert stats["build_seconds"] > 0 and stats["mask_seconds_per_1000"] > 0
    for name in ("bank.json", "masks.npy", "textures.npy"):  # byte for byte: DVC's hash of the output
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    build_bank(tiny_config("bank.n_masks=16", "bank.n_textures=4", "seed=1"), texture_dir, tmp_path / "c",
               progress=False)
    fingerprints = [json.loads((tmp_path / d / "bank.json").read_text())["fingerprint"] for d in "abc"]
    assert fingerprints[0] == fingerprints[1] != fingerprints[2]


def test_truncated_masks_file_is_named(built_bank: tuple[Config, Path]) -> None:
    cfg, root = built_bank
    data = (root / "masks.npy").read_bytes()
    (root / "masks.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(BankError, match=r"masks\.npy: unreadable or truncated"):
        AnomalyBank.load(root, cfg)


def test_bad_json_is_named(built_bank: tuple[Config, Path]) -> None:
    cfg, root = built_bank
    (root / "bank.json").write_text("{ not json")
    with pytest.raises(BankError, match=r"bank\.json: not valid JSON.*pfadseg bank"):
        AnomalyBank.load(root, cfg)


def test_missing_file_is_named(built_bank: tuple[Config, Path]) -> None:
    cfg, root = built_bank
    (root / "textures.npy").unlink()
    with pytest.raises(BankError, match=r"textures\.npy: missing; re-run `pfadseg bank` \(or `dvc repro"):
        AnomalyBank.load(root, cfg)


def test_edited_content_fails_the_fingerprint(built_bank: tuple[Config, Path]) -> None:
    cfg, root = built_bank
    data = bytearray((root / "textures.npy").read_bytes())
    data[-1] ^= 0xFF
    (root / "textures.npy").write_bytes(bytes(data))
    with pytest.raises(BankError, match="fingerprint"):
        AnomalyBank.load(root, cfg)
    assert AnomalyBank.load(root, cfg, verify=False).textures.shape == (8, 64, 64, 3)


@pytest.mark.parametrize(("override", "key"), [
    ("bank.n_masks=32", "bank.n_masks"),
    ("data.image_size=96", "data.image_size"),
    ("seed=3", "seed"),
    ("bank.perlin_threshold=0.4", "bank.perlin_threshold"),
])
def test_param_mismatch_names_the_key(built_bank: tuple[Config, Path], tiny_config: Callable[..., Config],
                                      override: str, key: str) -> None:
    _, root = built_bank
    with pytest.raises(BankError, match=rf"built with {key}=.*params\.yaml has {key}=.*dvc repro bank"):
        AnomalyBank.load(root, tiny_config(override))


def test_opacity_is_not_part_of_the_bank(built_bank: tuple[Config, Path],
                                         tiny_config: Callable[..., Config]) -> None:
    _, root = built_bank
    assert AnomalyBank.load(root, tiny_config("bank.opacity_min=0.15")).masks.shape == (64, 64, 8)


def test_wrong_shape_is_named(built_bank: tuple[Config, Path]) -> None:
    cfg, root = built_bank
    np.save(root / "masks.npy", np.zeros((64, 64, 4), dtype=np.uint8))
    with pytest.raises(BankError, match=r"masks\.npy: expected uint8 \(64, 64, 8\)"):
        AnomalyBank.load(root, cfg)


def test_texture_selection_cycles_through_all_sources() -> None:
    picks = texture_selection(5, 12, np.random.default_rng(0))
    assert sorted(picks[:5]) == sorted(picks[5:10]) == list(range(5))
    assert len(set(picks[10:])) == 2


def test_missing_texture_folder(tiny_config: Callable[..., Config], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="texture folder not found"):
        build_bank(tiny_config(), tmp_path / "nowhere", tmp_path / "bank", progress=False)
    assert not (tmp_path / "bank").exists()


def test_texture_augment(tiny_config: Callable[..., Config], texture_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config("bank.texture_augment=true", "bank.n_masks=8")
    plain = tiny_config("bank.n_masks=8")
    for name, c in (("aug", cfg), ("aug2", cfg), ("plain", plain)):
        build_bank(c, texture_dir, tmp_path / name, progress=False)
    augmented = AnomalyBank.load(tmp_path / "aug", cfg).textures
    # The torch ops (pfadseg.synth.texture_ops) seeded from the texture seed: deterministic, every texture changed.
    np.testing.assert_array_equal(augmented, AnomalyBank.load(tmp_path / "aug2", cfg).textures)
    assert augmented.dtype == np.uint8 and augmented.shape == (8, 64, 64, 3)
    assert (augmented != AnomalyBank.load(tmp_path / "plain", plain).textures).any(axis=(1, 2, 3)).all()
    with pytest.raises(BankError, match=r"bank\.texture_augment"):
        AnomalyBank.load(tmp_path / "aug", plain)


def test_run_bank_writes_the_layout(tiny_config: Callable[..., Config], texture_dir: Path,
                                    tmp_path: Path) -> None:
    cfg = tiny_config("bank.n_masks=8", "bank.n_textures=2")
    layout = Layout(tmp_path)
    shutil.copytree(texture_dir, layout.textures)
    run_bank(cfg, layout, progress=False)
    assert AnomalyBank.load(layout.bank, cfg).textures.shape == (2, 64, 64, 3)
    run_bank(cfg, layout, progress=False)  # rebuilding replaces the folder
    assert sorted(p.name for p in layout.bank.parent.iterdir()) == ["bank", "raw"]


@pytest.mark.realdata
def test_dtd_sample(shared_data: Path, tiny_config: Callable[..., Config], tmp_path: Path) -> None:
    root = shared_data / "dtd-sample" / "images"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    cfg = tiny_config("bank.n_masks=8", "bank.n_textures=12")
    stats = build_bank(cfg, root, tmp_path / "bank", progress=False)
    bank = AnomalyBank.load(tmp_path / "bank", cfg)
    assert bank.meta["n_source_textures"] == len(list_textures(root)) > 0
    assert bank.textures.std() > 5 and 0 <= stats["empty_share"] <= 1
