"""``pfadseg predict``: score users' own images and write heatmaps, overlays and masks at their own resolution.

A model is a trained run's folder (``models/<category>/seed<k>/``: ``student.pt`` and ``seg.pt``, or ADPS's
``adps.pt``) or a model file in it, loaded by :class:`pfadseg.runs.TrainedRun` from its files alone (their
stored config); the decision thresholds come from its ``calibration.json`` (fitted by :mod:`pfadseg.calibrate`
on synthetic anomalies, never on test data) unless given explicitly.

Per image (at least ``MIN_IMAGE_SIDE`` = 32 px a side; grayscale, RGB, RGBA, palette, 16-bit; PNG, JPEG, BMP,
TIFF): the same preprocessing as the evaluation (:func:`pfadseg.data.images.read_rgb`: EXIF orientation applied,
high bit depths scaled to 8 bit, then PIL ``convert("RGB")``; bilinear squash-resize to ``data.image_size``;
ImageNet normalisation), the segmentation map, the image score (the architecture's rule, as the evaluation),
the decision ``score >= image_threshold``, and, at the image's (upright) resolution (the map upsampled
bilinearly):

* ``<stem>_heatmap.png``: the map on a fixed [0, 1] scale (jet colour map; not stretched per image, so a
  normal image stays blue);
* ``<stem>_overlay.png``: the heatmap blended over the image (50 %);
* ``<stem>_mask.png``: ``map >= pixel_threshold`` as 0/255.

Thresholds must lie in the architecture's score range (``Architecture.score_range``: [0, 1], probabilities, for
every architecture here). Memory stays bounded for large images: an image of more than ``max_pixels`` (default
:data:`pfadseg.data.images.MAX_IMAGE_PIXELS`) is refused from its header; otherwise only the decoded image (4 bytes
per pixel) is held whole, as the three outputs are computed and written in bands of rows (a map of up to
``MAP_BLOCK_PIXELS`` is upsampled in one call, bit for bit as always; a larger one separably, band by band).

Output paths mirror the inputs' folders below their common parent, so ``good/000.png`` and ``crack/000.png``
do not collide; same-stem files of one folder (``a.png``, ``a.jpg``) keep their suffix (``a_png_*``). Every
file is written atomically, the three of an image together; an unreadable, too small or too large image is
logged, listed in the report and in ``predictions.csv`` with the reason, and earlier outputs under its name are
removed.
"""

from __future__ import annotations

import csv
import logging
import os
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from pfadseg.config import Config
from pfadseg.data.images import MAX_IMAGE_PIXELS, ImageReadError, normalize, read_rgb, to_tensor
from pfadseg.device import amp_enabled, autocast, configure_backends, resolve_device
from pfadseg.errors import MissingFileError, PfadsegError
from pfadseg.fsio import atomic_path
from pfadseg.runs import TrainedRun
from pfadseg.score.rule import ScoreRule

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
CSV_NAME = "predictions.csv"
OUTPUT_KINDS = ("heatmap", "overlay", "mask")
CSV_FIELDS = ("path", "status", "score", "label", "threshold", "pixel_threshold", "width", "height",
              "heatmap", "overlay", "mask", "error")
OVERLAY_ALPHA = 0.5
COLORMAP = "jet"
MAX_WORKERS = 4
MAP_BLOCK_PIXELS = 1 << 24  # a map up to this size (64 MB as float32) is upsampled in one F.interpolate call
BAND_PIXELS = 1 << 18  # pixels per band of rows in which the outputs are computed and written (~10 MB of work)
PNG_COMPRESSION = 6  # zlib level, Pillow's default


class PredictError(PfadsegError, ValueError):
    """A model or an argument that prediction cannot use; the message says what to do."""


# ------------------------------------------------------------------------------------------------ model


@dataclass(frozen=True)
class Predictor:
    """A loaded model ready for :func:`predict`: its trained run, detector (eval mode) and the thresholds in use.

    ``threshold_source`` is ``calibration`` or ``argument``; ``image_threshold`` is None only when loaded with
    ``require_threshold=False`` (e.g. for export) from an uncalibrated run.
    """

    run: TrainedRun
    detector: nn.Module
    device: torch.device
    image_threshold: float | None
    pixel_threshold: float | None
    threshold_source: str | None

    @property
    def config(self) -> Config:
        return self.run.config

    @property
    def calibration(self) -> dict[str, Any] | None:
        return self.run.calibration

    @property
    def image_size(self) -> int:
        return self.config.data.image_size

    @property
    def top_k(self) -> int:
        return self.config.eval.top_k

    @property
    def score(self) -> ScoreRule:
        return self.run.arch.score_rule(self.config)

    def predict(self, inputs: Sequence[Path | str], out_dir: Path | str, *, batch_size: int | None = None,
                max_pixels: int = MAX_IMAGE_PIXELS, progress: bool = True) -> PredictReport:
        """:func:`predict` with this model's size, score rule, thresholds, device and AMP setting."""
        if self.image_threshold is None or self.pixel_threshold is None:
            raise _no_threshold(self.run)
        return predict(self.detector, [Path(p) for p in inputs], Path(out_dir), image_size=self.image_size,
                       score=self.score, image_threshold=self.image_threshold,
                       pixel_threshold=self.pixel_threshold,
                       batch_size=batch_size or self.config.eval.batch_size, device=self.device,
                       amp=amp_enabled(self.device, self.config.train), max_pixels=max_pixels, progress=progress)


def _no_threshold(run: TrainedRun) -> PredictError:
    low, high = run.arch.score_range
    return PredictError(f"{run.folder}: the run is not calibrated (no calibration.json; run its calibrate stage: dvc "
                        f"repro, or pfadseg calibrate); or pass --threshold X, an image score in [{low:g}, {high:g}] "
                        "at or above which an image is anomalous")


def load_predictor(
    model: Path | str,
    *,
    device: str = "auto",
    threshold: float | None = None,
    pixel_threshold: float | None = None,
    teacher_weights: str | None = None,
    require_threshold: bool = True,
) -> Predictor:
    """A trained run (its folder, or a model file in it) rebuilt from its files alone, with its thresholds.

    The config is the run's stored one; ``teacher_weights`` replaces its ``model.teacher_weights`` (e.g. another
    path to the same file on this machine; its sha256 must match). Thresholds: ``threshold`` (image) and
    ``pixel_threshold`` when given, else the calibrated ones; without calibration the pixel threshold defaults
    to the image threshold (both are probabilities of the same map). No calibration and no ``threshold``, or a
    threshold outside the architecture's ``score_range`` -> :class:`PredictError` (the former unless
    ``require_threshold`` is False).
    """
    run = TrainedRun.open(model, teacher_weights=teacher_weights)
    calibration = run.calibration
    if threshold is None and calibration is None and require_threshold:
        raise _no_threshold(run)
    low, high = run.arch.score_range
    for option, value in (("--threshold", threshold), ("--pixel-threshold", pixel_threshold)):
        if value is not None and not low <= value <= high:  # NaN too
            raise PredictError(f"{option} {value:g} is outside [{low:g}, {high:g}], the range of {run.arch.name} "
                               f"anomaly scores (every image would be normal, or anomalous); pass a value in "
                               f"[{low:g}, {high:g}], or none for the calibrated one")
    if threshold is not None:
        image_threshold, source = float(threshold), "argument"
    elif calibration is not None:
        image_threshold, source = float(calibration["image_threshold"]), "calibration"
    else:
        image_threshold, source = None, None
    if pixel_threshold is None:
        pixel_threshold = float(calibration["pixel_threshold"]) if calibration is not None else image_threshold
    dev = resolve_device(device)
    configure_backends(dev)
    return Predictor(run=run, detector=run.detector(dev), device=dev, image_threshold=image_threshold,
                     pixel_threshold=pixel_threshold, threshold_source=source)


# ---------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class InputImage:
    """One input file and the output name (relative, without ``_<kind>.png``) its results get."""

    path: Path
    key: str


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def collect_inputs(inputs: Sequence[Path | str], out_dir: Path | str | None = None) -> list[InputImage]:
    """The image files of ``inputs`` (files as given; folders recursively, by suffix, sorted), each once, with
    collision-free output keys mirroring their folders below the inputs' common parent. Files under
    ``out_dir`` (earlier outputs) are skipped when scanning folders. Nonexistent inputs raise."""
    out = Path(out_dir).resolve() if out_dir is not None else None
    files: list[Path] = []
    anchors: list[Path] = []
    for item in map(Path, inputs):
        resolved = item.resolve()
        if resolved.is_dir():
            anchors.append(resolved)
            found = sorted(p for p in resolved.rglob("*") if p.is_file() and _is_image(p)
                           and not (out is not None and _inside(p, out)))
            if not found:
                log.warning("%s: no image files (%s) found", item, ", ".join(IMAGE_SUFFIXES))
            files.extend(found)
        elif resolved.exists():
            anchors.append(resolved.parent)
            files.append(resolved)
        else:
            raise MissingFileError(f"{item}: no such file or folder")
    files = list(dict.fromkeys(files))  # each file once, first occurrence order
    if not files:
        return []
    base = Path(os.path.commonpath([str(a) for a in anchors]))
    stems = [p.relative_to(base).with_suffix("").as_posix() for p in files]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    keys: list[str] = []
    used: set[str] = set()
    for path, stem in zip(files, stems, strict=True):
        key = stem if counts[stem] == 1 else f"{stem}_{path.suffix.lstrip('.').lower() or 'noext'}"
        candidate, n = key, 1
        while candidate.lower() in used:  # case-insensitive file systems too
            n += 1
            candidate = f"{key}-{n}"
        used.add(candidate.lower())
        keys.append(candidate)
    return [InputImage(p, k) for p, k in zip(files, keys, strict=True)]


# ---------------------------------------------------------------------------------------------- images


def model_input(image: Image.Image, size: int) -> np.ndarray:
    """uint8 size x size x 3: PIL bilinear squash-resize, exactly as the evaluation reads test images."""
    return np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.uint8).copy()


_LUT = (colormaps[COLORMAP](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def heatmap_rgb(anomaly_map: np.ndarray) -> np.ndarray:
    """H x W map in [0, 1] -> H x W x 3 uint8 colours on the fixed [0, 1] scale."""
    index = np.clip(np.rint(np.nan_to_num(anomaly_map) * 255), 0, 255).astype(np.uint8)
    return _LUT[index]


def overlay_rgb(image: np.ndarray, heatmap: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """Heatmap blended over an RGB image: (1 - alpha) image + alpha heatmap, uint8."""
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * heatmap.astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def upsampled_bands(seg: torch.Tensor, height: int, width: int) -> Iterator[np.ndarray]:
    """The map ``seg`` (1 x 1 x S x S) upsampled bilinearly (align_corners=False) to ``height`` x ``width``, as
    float32 bands of rows, top to bottom, of about ``BAND_PIXELS`` values.

    Up to ``MAP_BLOCK_PIXELS`` it is one ``F.interpolate`` call; a larger map is interpolated separably (that call
    for the width, the height per band with the source rows computed as PyTorch does, in float32), so it never
    exists whole; it agrees with the one call to about 1e-5 (float rounding).
    """
    rows = max(1, BAND_PIXELS // width)
    if height * width <= MAP_BLOCK_PIXELS:
        full = F.interpolate(seg, size=(height, width), mode="bilinear", align_corners=False)[0, 0].cpu().numpy()
        yield from (full[y0 : y0 + rows] for y0 in range(0, height, rows))
        return
    size = seg.shape[-2]
    across = F.interpolate(seg, size=(size, width), mode="bilinear", align_corners=False)[0, 0]  # size x width
    scale = torch.tensor(size, dtype=torch.float32) / height
    for y0 in range(0, height, rows):
        y = torch.arange(y0, min(y0 + rows, height), dtype=torch.float32)
        source = (scale * (y + 0.5) - 0.5).clamp(min=0.0)
        top = source.long()
        below = (top + 1).clamp(max=size - 1)
        weight = (source - top).clamp(max=1.0).to(across.device)[:, None]
        yield (across[top.to(across.device)] * (1.0 - weight) + across[below.to(across.device)] * weight).cpu().numpy()


def output_bands(image: Image.Image, seg: torch.Tensor, pixel_threshold: float) -> Iterator[dict[str, np.ndarray]]:
    """Heatmap, overlay and mask rows of ``image`` (its map ``seg`` upsampled to its size), band by band."""
    width, height = image.size
    top = 0
    for band in upsampled_bands(seg, height, width):
        bottom = top + len(band)
        heat = heatmap_rgb(band)
        yield {"heatmap": heat,
               "overlay": overlay_rgb(np.asarray(image.crop((0, top, width, bottom)), dtype=np.uint8), heat),
               "mask": np.where(band >= pixel_threshold, 255, 0).astype(np.uint8)}
        top = bottom


class PngWriter:
    """An 8-bit grayscale or RGB PNG written band of rows by band (filter Up, one zlib stream), so that an image
    never needs to exist whole; Pillow writes a PNG from a whole image only."""

    def __init__(self, fh: BinaryIO, width: int, height: int, channels: int) -> None:
        self._fh = fh
        self._rows_left = height
        self._previous = np.zeros(width * channels, dtype=np.uint8)
        self._zlib = zlib.compressobj(PNG_COMPRESSION)
        fh.write(b"\x89PNG\r\n\x1a\n")
        colour_type = {1: 0, 3: 2}[channels]  # grayscale, RGB
        self._chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0))

    def _chunk(self, kind: bytes, data: bytes) -> None:
        self._fh.write(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data)))

    def write(self, rows: np.ndarray) -> None:
        """The next rows, uint8 n x width (grayscale) or n x width x 3 (RGB)."""
        flat = rows.reshape(len(rows), -1)
        filtered = np.empty((len(flat), flat.shape[1] + 1), dtype=np.uint8)
        filtered[:, 0] = 2  # filter Up: each byte minus the one above it, modulo 256
        np.subtract(flat, np.vstack([self._previous, flat[:-1]]), out=filtered[:, 1:])
        self._previous = flat[-1].copy()
        self._rows_left -= len(flat)
        if data := self._zlib.compress(filtered):
            self._chunk(b"IDAT", data)

    def close(self) -> None:
        """End the file; every row must have been written."""
        if self._rows_left:
            raise ValueError(f"PNG ended with {self._rows_left} row(s) missing")
        self._chunk(b"IDAT", self._zlib.flush())
        self._chunk(b"IEND", b"")


def output_paths(out_dir: Path, key: str) -> dict[str, Path]:
    """``{kind: out_dir/<key>_<kind>.png}`` for heatmap, overlay and mask."""
    return {kind: out_dir / f"{key}_{kind}.png" for kind in OUTPUT_KINDS}


def write_outputs(paths: dict[str, Path], bands: Iterable[dict[str, np.ndarray]], width: int, height: int) -> None:
    """All of one image's PNGs or none, from bands of rows (:func:`output_bands`): each goes to a temporary sibling,
    renamed only when all are written."""
    with ExitStack() as stack:
        writers = {}
        for kind, path in paths.items():
            tmp = stack.enter_context(atomic_path(path, suffix=".png"))
            writers[kind] = PngWriter(stack.enter_context(tmp.open("wb")), width, height,
                                      channels=1 if kind == "mask" else 3)
        for band in bands:
            for kind, writer in writers.items():
                writer.write(band[kind])
        for writer in writers.values():
            writer.close()


# ------------------------------------------------------------------------------------------------- run


@dataclass(frozen=True)
class Prediction:
    """The result for one input file (``status`` ok or failed)."""

    path: Path
    status: str
    score: float | None = None
    anomalous: bool | None = None
    width: int | None = None
    height: int | None = None
    outputs: dict[str, Path] = field(default_factory=dict)
    error: str | None = None


@dataclass
class PredictReport:
    """What :func:`predict` did: one :class:`Prediction` per input file, the CSV, failures with reasons."""

    out_dir: Path
    csv_path: Path
    image_threshold: float
    pixel_threshold: float
    predictions: list[Prediction]

    @property
    def n_ok(self) -> int:
        return sum(p.status == "ok" for p in self.predictions)

    @property
    def n_anomalous(self) -> int:
        return sum(bool(p.anomalous) for p in self.predictions if p.status == "ok")

    @property
    def failed(self) -> list[tuple[Path, str]]:
        return [(p.path, p.error or "") for p in self.predictions if p.status != "ok"]


def _decode(item: InputImage, size: int, max_pixels: int) -> tuple[Image.Image, np.ndarray] | str:
    try:
        image = read_rgb(item.path, max_pixels)
        return image, model_input(image, size)
    except ImageReadError as exc:
        return str(exc)
    except MemoryError:
        return f"{item.path}: image too large to decode in memory"
    except Exception as exc:  # a corrupt file must not stop the run; PIL plugins raise many types
        return f"{item.path}: cannot read image ({type(exc).__name__}: {exc})"


def _finish(item: InputImage, image: Image.Image, seg: torch.Tensor, score: float, image_threshold: float,
            pixel_threshold: float, out_dir: Path) -> Prediction:
    """Upsample one map (1 x 1 x S x S float32, on the device) to the image's size and write its three PNGs."""
    width, height = image.size
    paths = output_paths(out_dir, item.key)
    write_outputs(paths, output_bands(image, seg, pixel_threshold), width, height)
    return Prediction(item.path, "ok", score, score >= image_threshold, width, height, paths)


def _failed(item: InputImage, reason: str, out_dir: Path) -> Prediction:
    log.warning("skipped %s", reason)
    for stale in output_paths(out_dir, item.key).values():  # an earlier run's outputs under this name
        stale.unlink(missing_ok=True)
    return Prediction(item.path, "failed", error=reason)


def _csv_rows(report: PredictReport) -> list[dict[str, Any]]:
    rows = []
    for p in report.predictions:
        row: dict[str, Any] = {"path": str(p.path), "status": p.status, "error": p.error or ""}
        if p.status == "ok":
            row.update(score=f"{p.score:.6f}", label="anomalous" if p.anomalous else "normal",
                       threshold=f"{report.image_threshold:.6f}", pixel_threshold=f"{report.pixel_threshold:.6f}",
                       width=p.width, height=p.height,
                       **{kind: p.outputs[kind].relative_to(report.out_dir).as_posix() for kind in OUTPUT_KINDS})
        rows.append(row)
    return rows


def write_csv(report: PredictReport) -> None:
    """``predictions.csv``: one row per input (path, status, score, label, thresholds, size, outputs, error)."""
    with atomic_path(report.csv_path, suffix=".csv") as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(CSV_FIELDS))
        writer.writeheader()
        writer.writerows(_csv_rows(report))


@torch.inference_mode()
def predict(
    detector: nn.Module,
    inputs: list[Path],
    out_dir: Path,
    *,
    image_size: int,
    score: ScoreRule,
    image_threshold: float,
    pixel_threshold: float,
    batch_size: int,
    device: torch.device | str,
    amp: bool,
    max_pixels: int = MAX_IMAGE_PIXELS,
    progress: bool = True,
) -> PredictReport:
    """Score every image of ``inputs`` (files or folders) and write its heatmap, overlay and mask to ``out_dir``.

    Images are decoded by a thread pool and run through ``detector`` (normalised B x 3 x S x S ->
    :class:`pfadseg.models.detector.Detection`, its image scores by the rule ``score``) in batches of
    ``batch_size``; unreadable files and those of more than ``max_pixels`` pixels are reported and skipped. Writes
    ``out_dir/predictions.csv`` last. Raises FileNotFoundError for an input that does not exist.
    """
    if batch_size < 1:
        raise PredictError(f"batch size must be >= 1, got {batch_size}")
    if max_pixels < 1:
        raise PredictError(f"--max-pixels must be >= 1, got {max_pixels}")
    if problem := score.problem(image_size):
        raise PredictError(problem)
    out_dir = Path(out_dir)
    device = torch.device(device)
    items = collect_inputs(inputs, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    detector.eval()
    predictions: list[Prediction] = []
    workers = min(MAX_WORKERS, os.cpu_count() or 1)

    def run_batch(chunk: list[InputImage]) -> list[Prediction]:
        # a function, so that a batch's decoded images are released before the next batch is decoded
        decoded = list(pool.map(lambda item: _decode(item, image_size, max_pixels), chunk))
        ok = [(item, d) for item, d in zip(chunk, decoded, strict=True) if not isinstance(d, str)]
        results: dict[int, Prediction] = {}
        for i, (item, d) in enumerate(zip(chunk, decoded, strict=True)):
            if isinstance(d, str):
                results[i] = _failed(item, d, out_dir)
        if ok:
            batch = normalize(to_tensor(np.stack([d[1] for _, d in ok])).to(device))
            with autocast(device, amp):
                detection = detector(batch)
            seg = detection.anomaly_map.float()
            finite = np.isfinite(seg[:, 0].cpu().numpy()).all(axis=(1, 2))
            scores = detection.score.cpu().numpy()
            jobs = {}
            for j, (item, (image, _)) in enumerate(ok):
                if finite[j]:
                    jobs[j] = pool.submit(_finish, item, image, seg[j : j + 1], float(scores[j]),
                                          image_threshold, pixel_threshold, out_dir)
            ok_index = [i for i, d in enumerate(decoded) if not isinstance(d, str)]
            for j, i in enumerate(ok_index):
                item = chunk[i]
                if not finite[j]:
                    results[i] = _failed(item, f"{item.path}: the anomaly map contains NaN or inf (broken "
                                               "model)", out_dir)
                    continue
                try:
                    results[i] = jobs[j].result()
                except OSError as exc:
                    results[i] = _failed(item, f"{item.path}: cannot write its outputs ({exc})", out_dir)
        return [results[i] for i in range(len(chunk))]

    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(items), desc="predict", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            predictions.extend(run_batch(chunk))
            bar.update(len(chunk))
    report = PredictReport(out_dir, out_dir / CSV_NAME, float(image_threshold), float(pixel_threshold),
                           predictions)
    write_csv(report)
    log.info("predict: %d image(s) scored (%d anomalous at threshold %.4f), %d failed -> %s", report.n_ok,
             report.n_anomalous, image_threshold, len(report.failed), out_dir)
    return report
