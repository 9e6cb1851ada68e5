"""The precomputed, category-independent synthetic-anomaly bank (DeSTSeg's data/data_utils.py masks): build, load.

DeSTSeg draws a fresh Perlin mask and decodes a fresh DTD image for each of the ~112,000 samples a category
sees in training (~30 ms of CPU each). The ``bank`` stage instead computes ``bank.n_masks`` masks and
``bank.n_textures`` resized textures once; :mod:`pfadseg.synth.composer` then draws from them on the training
device. Why a few thousand entries suffice: every mask draw also takes one of the 8 flips/90-degree rotations
and a uniform cyclic offset (S^2 of them), so 4,096 masks give 4,096 x 8 x 65,536 ~ 2.1e9 distinct maps at
256 px for the ~112,000 draws of a category (3,000 + 4,000 steps x 16): each base mask comes back ~27 times,
each time turned and shifted differently, and only ~3 exact (mask, transform) repeats are expected (birthday
bound n^2 / 2N). A texture is seen only through its mask, at a random place and opacity over a random image,
so each of the 1,024 textures (~110 draws; DeSTSeg's 5,640 DTD images get ~20) shows another patch each time.

Layout of a bank directory: ``masks.npy`` (uint8, N x S x S/8, ``np.packbits`` along the last axis),
``textures.npy`` (uint8, M x S x S x 3) and ``bank.json`` (params, provenance, fingerprint, statistics).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pfadseg.config import Config, select_params
from pfadseg.data.images import load_image
from pfadseg.data.layout import scan_textures
from pfadseg.errors import PfadsegError
from pfadseg.fsio import atomic_dir, read_json, write_json
from pfadseg.seeding import numpy_rng, torch_generator
from pfadseg.synth.perlin import perlin_masks_with_exponents
from pfadseg.synth.texture_ops import augment_textures

log = logging.getLogger(__name__)

FORMAT = "pfadseg-anomaly-bank/1"
MASKS_FILE = "masks.npy"
TEXTURES_FILE = "textures.npy"
META_FILE = "bank.json"
REBUILD = "re-run `pfadseg bank` (or `dvc repro bank`)"

# The params that determine the bank's contents (stored in bank.json and checked on load). The opacity range
# is applied by the composer at training time and is deliberately not part of the bank.
BANK_PARAMS: tuple[str, ...] = (
    "seed", "data.image_size", "bank.n_masks", "bank.n_textures", "bank.perlin_min_exponent",
    "bank.perlin_max_exponent", "bank.perlin_threshold", "bank.rotation_degrees", "bank.texture_augment",
)
_MASK_BLOCK = 256  # masks per generation step (progress granularity; part of the deterministic draw order)
_TEXTURE_BLOCK = 64  # textures per augmentation step (likewise part of the draw order)


class BankError(PfadsegError, ValueError):
    """A bank directory that is missing, corrupt or built with other params; the message names file or key."""


def bank_params(cfg: Config) -> dict[str, Any]:
    """The values of :data:`BANK_PARAMS` in ``cfg``, by dotted key."""
    return select_params(cfg, BANK_PARAMS)


def list_textures(root: Path) -> list[Path]:
    """All texture files of ``<root>/<class>/*.jpg`` (DTD's ``images/`` layout, as DeSTSeg globs it), sorted."""
    return [path for files in scan_textures(root).values() for path in files]


def texture_selection(n_sources: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """n source indices: consecutive random permutations of all sources (none repeats before all are used)."""
    rounds = math.ceil(n / n_sources)
    return np.concatenate([rng.permutation(n_sources) for _ in range(rounds)])[:n]


# ---------------------------------------------------------------------------------------------- building


def _augment_textures_inplace(textures: np.ndarray, generator: torch.Generator, progress: bool) -> None:
    """DRAEM's texture augmentation of uint8 M x S x S x 3 textures on the CPU (DeSTSeg uses none)."""
    for lo in tqdm(range(0, len(textures), _TEXTURE_BLOCK), desc="bank texture augment", unit="block",
                   disable=not progress):
        block = torch.from_numpy(textures[lo : lo + _TEXTURE_BLOCK]).permute(0, 3, 1, 2)
        textures[lo : lo + _TEXTURE_BLOCK] = augment_textures(block, generator).permute(0, 2, 3, 1).byte().numpy()


def array_sha256(array: np.ndarray) -> str:
    """sha256 of an array's raw bytes (C order)."""
    return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()


def bank_fingerprint(masks: np.ndarray, textures: np.ndarray) -> str:
    """One sha256 over the packed masks and the textures, as stored in ``bank.json``."""
    return hashlib.sha256((array_sha256(masks) + array_sha256(textures)).encode()).hexdigest()


def mask_statistics(coverage: np.ndarray, exponent_sum: np.ndarray) -> dict[str, Any]:
    """Coverage statistics of a set of masks, comparable between banks and with DeSTSeg's per-sample masks."""
    return {
        "mean_coverage": float(coverage.mean()),
        "empty_share": float((coverage == 0).mean()),
        "coverage_percentiles": {str(q): float(np.percentile(coverage, q)) for q in (10, 50, 90, 99)},
        "empty_share_by_exponent_sum": {
            str(s): float((coverage[exponent_sum == s] == 0).mean()) for s in np.unique(exponent_sum).tolist()
        },
    }


def build_bank(cfg: Config, texture_root: Path, out_dir: Path, *, progress: bool = True) -> dict[str, Any]:
    """Build ``masks.npy``, ``textures.npy`` and ``bank.json`` in ``out_dir`` atomically; return the stats with the
    build's timings. The files hold no timing: the same params give the same bytes, so every stage downstream keeps
    its DVC run-cache key on any machine."""
    start = time.perf_counter()
    size, n_masks, n_textures = cfg.data.image_size, cfg.bank.n_masks, cfg.bank.n_textures
    sources = list_textures(Path(texture_root))

    mask_rng = numpy_rng(cfg.seed, "bank", "masks")
    packed = np.empty((n_masks, size, size // 8), dtype=np.uint8)
    coverage = np.empty(n_masks)
    exponent_sum = np.empty(n_masks, dtype=np.int64)
    for lo in tqdm(range(0, n_masks, _MASK_BLOCK), desc="bank masks", unit="block", disable=not progress):
        hi = min(lo + _MASK_BLOCK, n_masks)
        masks, tx, ty = perlin_masks_with_exponents(hi - lo, size, cfg.bank, mask_rng)
        packed[lo:hi] = np.packbits(masks, axis=-1)
        coverage[lo:hi] = masks.mean(axis=(1, 2))
        exponent_sum[lo:hi] = tx + ty
    mask_seconds = time.perf_counter() - start

    texture_rng = numpy_rng(cfg.seed, "bank", "textures")
    chosen = texture_selection(len(sources), n_textures, texture_rng)
    textures = np.empty((n_textures, size, size, 3), dtype=np.uint8)
    decoded: dict[int, np.ndarray] = {}
    for i, src in enumerate(tqdm(chosen.tolist(), desc="bank textures", unit="img", disable=not progress)):
        if src not in decoded:
            decoded[src] = load_image(sources[src], size)
        textures[i] = decoded[src]
    if cfg.bank.texture_augment:
        _augment_textures_inplace(textures, torch_generator(cfg.seed, "bank", "textures"), progress)

    seconds = time.perf_counter() - start
    stats = mask_statistics(coverage, exponent_sum)
    meta = {
        "format": FORMAT,
        "params": bank_params(cfg),
        "image_size": size,
        "seed": cfg.seed,
        "texture_root": str(texture_root),
        "n_source_textures": len(sources),
        "n_distinct_sources_used": len(decoded),
        "files": {
            MASKS_FILE: {"shape": list(packed.shape), "dtype": "uint8", "layout": "np.packbits, last axis"},
            TEXTURES_FILE: {"shape": list(textures.shape), "dtype": "uint8", "layout": "M x S x S x RGB"},
        },
        "fingerprint": bank_fingerprint(packed, textures),
        "stats": stats,
        "repeats": (
            "each mask draw also takes one of 8 flips/90-degree rotations and one of S^2 cyclic offsets "
            f"({n_masks} x 8 x {size * size} mask variants against ~112,000 draws per category); a texture "
            "is seen only through its mask, so each draw shows another patch of it"
        ),
    }
    with atomic_dir(out_dir) as tmp:
        np.save(tmp / MASKS_FILE, packed)
        np.save(tmp / TEXTURES_FILE, textures)
        write_json(tmp / META_FILE, meta)
    log.info("bank: %d masks, %d textures (%d sources) at %d px in %.1f s; %.1f %% empty, mean coverage "
             "%.2f %%",
             n_masks, n_textures, len(sources), size, seconds, 100 * stats["empty_share"],
             100 * stats["mean_coverage"])
    return {**stats, "build_seconds": seconds, "mask_seconds_per_1000": 1000 * mask_seconds / n_masks}


# ----------------------------------------------------------------------------------------------- loading


def _load_array(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise BankError(f"{path}: unreadable or truncated .npy ({exc}); {REBUILD}") from None
    if array.dtype != np.uint8 or array.shape != shape:
        raise BankError(f"{path}: expected uint8 {shape}, found {array.dtype} {array.shape}; {REBUILD}")
    return array


def _bit_shifts(device: torch.device) -> torch.Tensor:
    return torch.arange(7, -1, -1, dtype=torch.uint8, device=device)  # np.packbits: big-endian bit order


@functools.cache
def _unpack_table(device: torch.device) -> torch.Tensor:
    """uint8 256 x 8: the bits of every byte value, built once per device (a per-batch lookup table)."""
    return torch.arange(256, device=device).to(torch.uint8)[:, None].bitwise_right_shift(
        _bit_shifts(device)).bitwise_and_(1)


def unpack_masks(packed: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Unpack ``np.packbits`` rows on any device: uint8 ... x S x S/8 -> uint8 {0, 1} ... x S x S.

    A lookup of each byte's 8 bits in a 256 x 8 table: one gather instead of a broadcast shift and mask.
    ``out``, if given, is a uint8 tensor of the unpacked shape to write into.
    """
    table = _unpack_table(packed.device)
    shape = (*packed.shape[:-1], packed.shape[-1] * 8)
    rows = out.view(-1, 8) if out is not None else None
    return torch.index_select(table, 0, packed.flatten().int(), out=rows).view(shape)


def pack_masks(bits: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`unpack_masks`: uint8 {0, 1} ... x S x S -> ``np.packbits`` rows ... x S x S/8."""
    shifts = _bit_shifts(bits.device)
    return bits.unflatten(-1, (-1, 8)).bitwise_left_shift(shifts).sum(-1, dtype=torch.uint8)


def transpose_packed_masks(packed: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """The transposes of bit-packed masks K x S x S/8, still packed (in chunks of ``chunk`` masks)."""
    return torch.cat([pack_masks(unpack_masks(part).transpose(-1, -2)) for part in packed.split(chunk)])


@dataclass(frozen=True)
class AnomalyBank:
    """A loaded bank: memory-mapped packed masks and textures plus ``bank.json``."""

    root: Path
    masks: np.ndarray
    textures: np.ndarray
    meta: dict[str, Any]

    @property
    def image_size(self) -> int:
        return int(self.textures.shape[1])

    @classmethod
    def load(cls, root: Path | str, cfg: Config, *, verify: bool = True) -> AnomalyBank:
        """Open a bank for ``cfg``; errors name the missing/corrupt file or the param that differs.

        ``verify`` also recomputes the content fingerprint (one read of both arrays).
        """
        root = Path(root)
        for name in (META_FILE, MASKS_FILE, TEXTURES_FILE):
            if not (root / name).is_file():
                raise BankError(f"{root / name}: missing; {REBUILD}")
        meta_path = root / META_FILE
        try:
            meta = read_json(meta_path)
        except ValueError as exc:
            raise BankError(f"{exc}; {REBUILD}") from None
        if not (isinstance(meta, dict) and meta.get("format") == FORMAT
                and isinstance(meta.get("params"), dict)):
            raise BankError(f"{meta_path}: not a {FORMAT} description; {REBUILD}")
        for key, value in bank_params(cfg).items():
            stored = meta["params"].get(key)
            if stored != value:
                raise BankError(f"{meta_path}: the bank was built with {key}={stored!r} but params.yaml has "
                                f"{key}={value!r}; {REBUILD}")
        size = cfg.data.image_size
        masks = _load_array(root / MASKS_FILE, (cfg.bank.n_masks, size, size // 8))
        textures = _load_array(root / TEXTURES_FILE, (cfg.bank.n_textures, size, size, 3))
        if verify and bank_fingerprint(masks, textures) != meta.get("fingerprint"):
            raise BankError(f"{root}: {MASKS_FILE}/{TEXTURES_FILE} do not match the fingerprint in "
                            f"{META_FILE} (corrupt or edited); {REBUILD}")
        return cls(root=root, masks=masks, textures=textures, meta=meta)

    def masks_tensor(self, device: torch.device | str) -> torch.Tensor:
        """All masks, still bit-packed, on ``device``: uint8 N x S x S/8 (see :func:`unpack_masks`)."""
        return torch.from_numpy(np.array(self.masks)).to(device)

    def textures_tensor(self, device: torch.device | str) -> torch.Tensor:
        """All textures on ``device``: uint8 M x 3 x S x S."""
        return torch.from_numpy(np.ascontiguousarray(self.textures.transpose(0, 3, 1, 2))).to(device)
