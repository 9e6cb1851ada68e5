"""`pfadseg bench predict`: inference images/s and latency per image, PFADSeg vs the DeSTSeg baseline in one run;
`pfadseg bench predict-memory`: peak memory of ``predict`` on one large image.

``bench predict`` times the model path of ``pfadseg predict``: normalised batch on the device -> the
architecture's detector (teacher, student, segmentation net, both maps upsampled to the input size, its image
scores: the mean of the top-k pixels), synchronised. Image decoding and PNG writing (CPU work that depends on the
files) are not included. Weights are random (speed does not depend on them); fp32 everywhere, plus bf16 autocast
on CUDA.

``bench predict-memory`` runs the whole of :func:`pfadseg.predict.predict` (decoding, model, upsampling, the three
PNGs) on one square PNG, in a fresh process, and reports that process's peak RSS beside the same on an image of
the model's input size (the fixed part: interpreter, torch, model) and the bytes of the decoded uint8 image.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pfadseg.arch.destseg import BENCH_VARIANTS, DESTSEG
from pfadseg.config import Config
from pfadseg.detectors import untrained_detector
from pfadseg.device import autocast, configure_backends, prepare_module, resolve_device, synchronize
from pfadseg.errors import RunError, UsageError
from pfadseg.models.teacher import build_teacher
from pfadseg.predict import BAND_PIXELS, PngWriter, predict
from pfadseg.seeding import torch_generator


def default_amp_modes(device: torch.device) -> tuple[str, ...]:
    """fp32, and bf16 where autocast applies (CUDA)."""
    return ("fp32", "bf16") if device.type == "cuda" else ("fp32",)


@torch.inference_mode()
def _time_batch(detector: nn.Module, x: torch.Tensor, amp: bool, repeats: int, device: torch.device) -> float:
    """Median seconds per batch over ``repeats`` timed calls after one warm-up call."""

    def run() -> None:
        with autocast(device, amp):
            detector(x)

    run()
    synchronize(device)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def bench_predict(
    cfg: Config,
    *,
    image_size: int = 256,
    device: str = "auto",
    batch_sizes: Sequence[int] = (1, 32),
    amp_modes: Sequence[str] | None = None,
    repeats: int = 3,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Images/s and ms per image of both variants at each batch size and precision; print a table.

    ``amp_modes``: ``fp32`` and/or ``bf16`` (CUDA, or the CPU with ``train.accelerator_path_on_cpu``; default
    both on CUDA, fp32 on CPU). Other model options
    (AFF/PCAR/RCM details, ``train.channels_last``) and ``eval.top_k`` come from ``cfg``.
    """
    dev = resolve_device(device)
    configure_backends(dev)
    modes = tuple(amp_modes) if amp_modes is not None else default_amp_modes(dev)
    for mode in modes:
        if mode not in ("fp32", "bf16"):
            raise UsageError(f"amp mode {mode!r}: use fp32 or bf16")
        if mode == "bf16" and dev.type != "cuda" and not cfg.train.accelerator_path_on_cpu:
            raise UsageError("bf16 autocast is used on CUDA only (on the CPU with train.accelerator_path_on_cpu)")
    top_k = min(cfg.eval.top_k, image_size * image_size)
    generator = torch_generator(cfg.seed, "bench-predict")
    results: dict[str, Any] = {"device": str(dev), "device_name": _device_name(dev), "image_size": image_size,
                               "batch_sizes": list(batch_sizes), "amp_modes": list(modes), "repeats": repeats,
                               "threads": torch.get_num_threads(), "top_k": top_k, "rows": []}
    with warnings.catch_warnings():  # the random teacher still logs its warning once
        warnings.simplefilter("ignore")
        teacher = prepare_module(build_teacher("random", DESTSEG.teacher_backbone(cfg)), dev, cfg.train)
    for name, variant in BENCH_VARIANTS.items():
        vcfg = variant.apply(dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, top_k=top_k)))
        detector = untrained_detector(DESTSEG, vcfg, teacher, dev, generator)
        for batch in batch_sizes:
            x = torch.randn(batch, 3, image_size, image_size, generator=generator).to(dev)
            if dev.type == "cuda" and cfg.train.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            for mode in modes:
                seconds = _time_batch(detector, x, mode == "bf16", repeats, dev)
                results["rows"].append({"variant": name, "batch_size": batch, "precision": mode,
                                        "ms_per_batch": 1e3 * seconds, "ms_per_image": 1e3 * seconds / batch,
                                        "images_per_s": batch / seconds})
        del detector
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    _print(results, echo)
    return results


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def _print(results: dict[str, Any], echo: Callable[[str], None]) -> None:
    echo(f"bench predict: {results['device_name']}, {results['image_size']} px, median of {results['repeats']} "
         f"after a warm-up; detector forward + top-{results['top_k']} score (no file decoding or PNG writing)")
    echo(f"{'variant':<8} {'batch':>5} {'precision':>9} {'ms/batch':>10} {'ms/image':>9} {'images/s':>9}")
    for r in results["rows"]:
        echo(f"{r['variant']:<8} {r['batch_size']:5d} {r['precision']:>9} {r['ms_per_batch']:10.1f} "
             f"{r['ms_per_image']:9.2f} {r['images_per_s']:9.1f}")
    by_key = {(r["variant"], r["batch_size"], r["precision"]): r for r in results["rows"]}
    for batch in results["batch_sizes"]:
        for mode in results["amp_modes"]:
            base, ours = by_key[("destseg", batch, mode)], by_key[("pfadseg", batch, mode)]
            echo(f"batch {batch} {mode}: pfadseg takes x{ours['ms_per_image'] / base['ms_per_image']:.2f} the "
                 "time per image of destseg")


def _write_test_image(path: Path, side: int) -> None:
    """A ``side`` x ``side`` RGB PNG of gradients and a checker pattern, written band by band."""
    x = np.arange(side)
    rows = max(1, BAND_PIXELS // side)
    with path.open("wb") as fh:
        png = PngWriter(fh, side, side, channels=3)
        for top in range(0, side, rows):
            y = np.arange(top, min(top + rows, side))[:, None]
            checker = ((x // 64 + y // 64) % 2 * 255).astype(np.uint8)
            png.write(np.stack(np.broadcast_arrays(x * 255 // side, y * 255 // side, checker), axis=-1)
                      .astype(np.uint8))
        png.close()


def _predict_peak_rss(cfg: Config, image: Path, pixels: int, out_dir: Path, device: str) -> int:
    """In a fresh process: predict ``image`` (``pixels`` px) with a random-weight DeSTSeg; the process's peak RSS in
    bytes."""
    dev = resolve_device(device)
    configure_backends(dev)
    with warnings.catch_warnings():  # the random teacher's warning
        warnings.simplefilter("ignore")
        teacher = prepare_module(build_teacher("random", DESTSEG.teacher_backbone(cfg)), dev, cfg.train)
    detector = untrained_detector(DESTSEG, cfg, teacher, dev)
    report = predict(detector, [image], out_dir, image_size=cfg.data.image_size, score=DESTSEG.score_rule(cfg),
                     image_threshold=0.5, pixel_threshold=0.5, batch_size=1, device=dev, amp=False,
                     max_pixels=pixels, progress=False)
    if report.failed:
        raise RunError(report.failed[0][1])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def bench_predict_memory(cfg: Config, *, size: int = 12000, device: str = "auto",
                         echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Peak RSS of :func:`pfadseg.predict.predict` on one ``size`` x ``size`` PNG and on one of the model's input
    size, each in a fresh process (so one peak cannot hide the other); print them and the per-pixel difference."""
    small = cfg.data.image_size
    if size <= small:
        raise UsageError(f"--size must exceed data.image_size ({small}), the comparison image, got {size}")
    device = str(resolve_device(device))
    peaks: dict[int, int] = {}
    with tempfile.TemporaryDirectory(prefix="pfadseg-bench-memory-") as tmp:
        for side in (small, size):
            image = Path(tmp) / f"{side}.png"
            _write_test_image(image, side)
            with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
                peaks[side] = pool.submit(_predict_peak_rss, cfg, image, side * side, Path(tmp) / f"out{side}",
                                          device).result()
            image.unlink()
    pixels = size * size
    results = {"device": device, "size": size, "small_size": small, "peak_rss": peaks[size],
               "peak_rss_small": peaks[small], "decoded_uint8_bytes": 3 * pixels,
               "bytes_per_pixel": (peaks[size] - peaks[small]) / (pixels - small * small)}
    gb = 1e9
    echo(f"bench predict-memory: predict (decode, model, upsampling, 3 PNGs) of one {size} x {size} PNG "
         f"({pixels / 1e6:.1f} M px) on {device}, each run in a fresh process")
    echo(f"peak RSS, {size} px image: {peaks[size] / gb:.2f} GB")
    echo(f"peak RSS, {small} px image: {peaks[small] / gb:.2f} GB (interpreter, torch, model: the fixed part)")
    echo(f"difference: {(peaks[size] - peaks[small]) / gb:.2f} GB = {results['bytes_per_pixel']:.1f} bytes per pixel "
         f"(the decoded uint8 RGB image alone: {3 * pixels / gb:.2f} GB, 3 bytes per pixel)")
    return results
