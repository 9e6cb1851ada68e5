"""Benchmark: per-sample DeSTSeg-style synthesis vs bank + on-device composer (destseg-protocol.md 1.3, 1.4).

Both paths make the same thing per sample (rotated normal image, Perlin mask, blended texture, ImageNet
normalisation) for the same augmentation group; they are timed in alternating rounds of one run, after a
warm-up, with torch's thread count left at the machine default, and each path's rate is that of its best
round (load from other processes only ever adds time). The main comparison excludes image decoding
from both (the composer gets decoded images once per run; the reference is handed decoded arrays). A second
reference figure adds what DeSTSeg's loader also does per sample: decode and resize one training PNG and one
texture JPEG (here smooth synthetic files, which decode faster than real photographs).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pfadseg.config import Config
from pfadseg.data.images import load_image
from pfadseg.seeding import numpy_rng, torch_generator
from pfadseg.synth.bank import AnomalyBank, build_bank
from pfadseg.synth.composer import AugmentGroup, BatchComposer, compose_sample_reference
from pfadseg.train.loop import resolve_device

_ROUNDS = 4


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    group: AugmentGroup = "rotate",
) -> dict[str, Any]:
    """Samples/s of the reference and of the bank + composer path, their ratio and the bank build time."""
    dev = resolve_device(device)
    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, image_size=image_size),
        bank=dataclasses.replace(cfg.bank, n_masks=n_masks, n_textures=n_textures),
    )
    rng = numpy_rng(cfg.seed, "bench", "synth")
    with tempfile.TemporaryDirectory(prefix="pfadseg-bench-synth-") as tmp:
        texture_files = [path for c in range(4) for path in
                         _write_random_images(Path(tmp) / "textures" / f"c{c}", rng, 8, (200, 640), ".jpg")]
        image_files = _write_random_images(Path(tmp) / "train", rng, 8, (700, 1025), ".png")
        stats = build_bank(cfg, Path(tmp) / "textures", Path(tmp) / "bank", progress=False)
        bank = AnomalyBank.load(Path(tmp) / "bank", cfg)
        images = np.stack([load_image(p, image_size) for p in image_files])
        textures = np.array(bank.textures)
        composer = BatchComposer(
            torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(dev), bank.masks_tensor(dev),
            bank.textures_tensor(dev), group, cfg.bank, cfg.train.augment,
            torch_generator(cfg.seed, "bench", "composer", device=dev),
        )

        def reference(n: int, decode: bool = False) -> None:
            for _ in range(n):
                i, t = int(rng.integers(len(images))), int(rng.integers(len(textures)))
                image, texture = images[i], textures[t]
                if decode:
                    image = load_image(image_files[i], image_size)
                    texture = load_image(texture_files[t % len(texture_files)], image_size)
                out = compose_sample_reference(image, texture, rng, cfg.bank, group, cfg.train.augment)
                tuple(torch.from_numpy(a) for a in out)

        def composed(n: int) -> None:
            for _ in range(n):
                composer.sample(batch_size)
            _sync(dev)

        reference(2, decode=True)
        composed(2)
        n_ref = max(1, n_reference // _ROUNDS)
        n_dec = max(1, n_ref // 2)
        n_batch = max(1, n_batches // _ROUNDS)
        paths = {
            "ref": lambda: reference(n_ref),
            "dec": lambda: reference(n_dec, decode=True),
            "comp": lambda: composed(n_batch),
        }
        rounds: dict[str, list[float]] = {key: [] for key in paths}
        for _ in range(_ROUNDS):  # alternate, so all paths see the same machine load
            for key, run in paths.items():
                start = time.perf_counter()
                run()
                rounds[key].append(time.perf_counter() - start)

    ref_s, dec_s, comp_s = min(rounds["ref"]), min(rounds["dec"]), min(rounds["comp"])
    n_comp = n_batch * batch_size
    result = {
        "image_size": image_size,
        "batch_size": batch_size,
        "group": group,
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
        "reference_samples_per_s": n_ref / ref_s,
        "reference_with_decoding_samples_per_s": n_dec / dec_s,
        "composer_samples_per_s": n_comp / comp_s,
        "speedup": (n_comp / comp_s) / (n_ref / ref_s),
        "bank_build_s": stats["build_seconds"],
        "bank_masks": n_masks,
        "bank_textures": n_textures,
        "mask_build_s_per_1000": stats["mask_seconds_per_1000"],
    }
    decoded_ratio = result["composer_samples_per_s"] / result["reference_with_decoding_samples_per_s"]
    rows = [
        ("reference, per sample (numpy/PIL/scipy)", n_ref / ref_s, f"{1000 * ref_s / n_ref:.2f} ms/sample"),
        ("reference + decoding a PNG and a JPEG", n_dec / dec_s, f"{1000 * dec_s / n_dec:.2f} ms/sample"),
        (f"bank + composer on {dev}", n_comp / comp_s, f"{1000 * comp_s * batch_size / n_comp:.2f} ms/batch"),
    ]
    print(f"bench synth: {image_size} px, batch {batch_size}, group {group}, device {dev}, "
          f"torch threads {result['torch_threads']}")
    for name, rate, detail in rows:
        print(f"  {name:<42}{rate:9.1f} samples/s ({detail})")
    print(f"  speed-up: {result['speedup']:.1f}x (with decoding in the reference: {decoded_ratio:.1f}x)")
    print(f"  bank build: {n_masks} masks + {n_textures} textures in {stats['build_seconds']:.2f} s "
          f"({stats['mask_seconds_per_1000']:.2f} s per 1,000 masks at {image_size} px)")
    return result
