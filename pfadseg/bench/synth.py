"""Benchmark: per-sample DeSTSeg-style synthesis vs bank + on-device composer (DeSTSeg's MVTecDataset).

Both paths make the same thing per sample (rotated normal image, Perlin mask, blended texture, ImageNet
normalisation) for each rotation group of DeSTSeg's train.py; they are timed in alternating rounds of one run,
after a warm-up, with torch's thread count left at the machine default, and each path's rate is that of its
best round (load from other processes only ever adds time). One comparison excludes image decoding from both
(the composer gets decoded images once per run; the reference is handed decoded arrays); the other adds what
DeSTSeg's loader also does per sample: decode and resize one training PNG and one texture JPEG (here smooth
synthetic files, which decode faster than real photographs). The "MVTec mix" row weights the groups by their
number of categories (train.augment), i.e. a training run over every category.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pfadseg.config import Config
from pfadseg.data.images import load_image
from pfadseg.data.layout import image_files
from pfadseg.device import resolve_device, synchronize
from pfadseg.errors import MissingFileError
from pfadseg.seeding import numpy_rng, torch_generator
from pfadseg.synth.bank import AnomalyBank, build_bank, list_textures
from pfadseg.synth.composer import AugmentGroup, BatchComposer, compose_sample_reference

_ROUNDS = 4
_MAX_FILES = 32  # of real training images / textures decoded by the reference


def _write_random_images(folder: Path, rng: np.random.Generator, n: int, sizes: tuple[int, int], suffix: str,
                         ) -> list[Path]:
    """n smooth random colour images of random width/height in ``sizes``, saved as ``folder/<i><suffix>``."""
    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        coarse = rng.integers(0, 256, size=(int(rng.integers(4, 32)),) * 2 + (3,), dtype=np.uint8)
        size = (int(rng.integers(*sizes)), int(rng.integers(*sizes)))
        paths.append(folder / f"{i}{suffix}")
        Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC).save(paths[-1])
    return paths



def _group_rates(
    composer: BatchComposer, reference: Callable[[int, bool], None], batch_size: int, n_reference: int,
    n_batches: int,
) -> dict[str, float]:
    """Samples/s of the reference (without and with decoding) and of the composer: best of alternating rounds."""
    n_ref = max(1, n_reference // _ROUNDS)
    n_dec = max(1, n_ref // 2)
    n_batch = max(1, n_batches // _ROUNDS)

    batch = composer.sample(batch_size)

    def composed() -> None:
        nonlocal batch
        for _ in range(n_batch):  # as the training loops call it: each batch written into the last one's tensors
            batch = composer.sample(batch_size, reuse=batch)
        synchronize(composer.device)

    reference(2, True)
    paths: dict[str, tuple[Callable[[], None], int]] = {
        "reference": (lambda: reference(n_ref, False), n_ref),
        "reference_with_decoding": (lambda: reference(n_dec, True), n_dec),
        "composer": (composed, n_batch * batch_size),
    }
    best = {key: float("inf") for key in paths}
    for _ in range(_ROUNDS):  # alternate, so all paths see the same machine load
        for key, (run, _) in paths.items():
            start = time.perf_counter()
            run()
            best[key] = min(best[key], time.perf_counter() - start)
    return {f"{key}_samples_per_s": n / best[key] for key, (_, n) in paths.items()}


def _mix(rates: dict[str, dict[str, float]], weights: dict[str, int], key: str) -> float:
    """Samples/s over a training run of every category (same samples per category), from per-group rates."""
    seconds = sum(weights[g] / rates[g][key] for g in rates if weights[g])
    return sum(weights.values()) / seconds


def bench_synth(
    cfg: Config,
    *,
    image_size: int = 256,
    batch_size: int = 16,
    device: str = "auto",
    n_reference: int = 64,
    n_batches: int = 24,
    n_masks: int = 512,
    n_textures: int = 64,
    images_dir: Path | None = None,
    textures_dir: Path | None = None,
) -> dict[str, Any]:
    """Samples/s of the reference and of the bank + composer path per rotation group and for the MVTec mix.

    ``images_dir`` (e.g. an MVTec ``<category>/train/good``) and ``textures_dir`` (e.g. DTD's ``images``) replace
    the synthetic training PNGs and texture JPEGs by real files: the ones decoded per sample and banked.
    """
    dev = resolve_device(device)
    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, image_size=image_size),
        bank=dataclasses.replace(cfg.bank, n_masks=n_masks, n_textures=n_textures),
    )
    rng = numpy_rng(cfg.seed, "bench", "synth")
    image_note = images_dir or "synthetic PNGs, 700-1024 px"
    texture_note = textures_dir or "synthetic JPEGs, 200-640 px"
    groups: tuple[AugmentGroup, ...] = ("none", "slight", "rotate")
    rates: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="pfadseg-bench-synth-") as tmp:
        if textures_dir is None:
            textures_dir = Path(tmp) / "textures"
            for c in range(4):
                _write_random_images(textures_dir / f"c{c}", rng, 8, (200, 640), ".jpg")
        texture_files = list_textures(textures_dir)[:_MAX_FILES]
        if images_dir is None:
            train_files = _write_random_images(Path(tmp) / "train", rng, 8, (700, 1025), ".png")
        else:
            train_files = image_files(Path(images_dir))[:_MAX_FILES]
        for folder, files, what in ((textures_dir, texture_files, "<class>/<image> texture folders (DTD's images/)"),
                                    (images_dir, train_files, "images")):
            if not files:
                raise MissingFileError(f"{folder}: no {what} found")
        stats = build_bank(cfg, textures_dir, Path(tmp) / "bank", progress=False)
        bank = AnomalyBank.load(Path(tmp) / "bank", cfg)
        images = np.stack([load_image(p, image_size) for p in train_files])
        textures = np.array(bank.textures)
        for group in groups:
            composer = BatchComposer(
                torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(dev), bank.masks_tensor(dev),
                bank.textures_tensor(dev), group, cfg.bank, cfg.train.augment,
                torch_generator(cfg.seed, "bench", "composer", group, device=dev),
            )

            def reference(n: int, decode: bool, group: AugmentGroup = group) -> None:
                for _ in range(n):
                    i, t = int(rng.integers(len(images))), int(rng.integers(len(textures)))
                    image, texture = images[i], textures[t]
                    if decode:
                        image = load_image(train_files[i], image_size)
                        texture = load_image(texture_files[t % len(texture_files)], image_size)
                    out = compose_sample_reference(image, texture, rng, cfg.bank, group, cfg.train.augment)
                    tuple(torch.from_numpy(a) for a in out)

            rates[group] = _group_rates(composer, reference, batch_size, n_reference, n_batches)

    augment = cfg.train.augment
    weights = {"none": len(augment.none), "slight": len(augment.slight), "rotate": len(augment.rotate)}
    keys = ("reference_samples_per_s", "reference_with_decoding_samples_per_s", "composer_samples_per_s")
    rates["mvtec_mix"] = {key: _mix(rates, weights, key) for key in keys}
    for row in rates.values():
        row["speedup"] = row["composer_samples_per_s"] / row["reference_samples_per_s"]
        row["speedup_with_decoding"] = row["composer_samples_per_s"] / row["reference_with_decoding_samples_per_s"]
    result = {
        "image_size": image_size, "batch_size": batch_size, "device": str(dev),
        "torch_threads": torch.get_num_threads(), "groups": rates, "group_categories": weights,
        "bank_build_s": stats["build_seconds"], "bank_masks": n_masks, "bank_textures": n_textures,
        "mask_build_s_per_1000": stats["mask_seconds_per_1000"],
    }
    print(f"bench synth: {image_size} px, batch {batch_size}, device {dev}, torch threads {result['torch_threads']}; "
          "samples/s (speed-up of the composer)")
    print(f"  {'rotation group':<24}{'reference':>12}{'ref + decoding':>16}{'bank + composer':>17}"
          f"{'speed-up':>10}{'w/ decoding':>13}")
    for group, row in rates.items():
        name = (f"MVTec mix ({weights['none']}/{weights['slight']}/{weights['rotate']})" if group == "mvtec_mix"
                else f"{group} ({weights[group]} categories)")
        ref, dec = row["reference_samples_per_s"], row["reference_with_decoding_samples_per_s"]
        print(f"  {name:<24}{ref:>12.1f}{dec:>16.1f}{row['composer_samples_per_s']:>17.1f}"
              f"{row['speedup']:>9.1f}x{row['speedup_with_decoding']:>12.1f}x")
    print("  reference: DeSTSeg-style, one sample at a time (numpy/PIL/scipy) from decoded arrays; 'ref + decoding' "
          "also decodes and resizes a training image and a texture per sample, as DeSTSeg's loader does")
    print(f"  files decoded: {len(train_files)} training images ({image_note}), {len(texture_files)} textures "
          f"({texture_note}); synthetic files are smooth and decode faster than photographs of their size")
    print("  bank + composer: each batch written into the previous batch's tensors, as the training loops do")
    print(f"  bank build: {n_masks} masks + {n_textures} textures in {stats['build_seconds']:.2f} s "
          f"({stats['mask_seconds_per_1000']:.2f} s per 1,000 masks at {image_size} px)")
    return result
