"""Image and mask reading per the DeSTSeg protocol (its data/mvtec_dataset.py), and normalisation.

Every image the project reads (datasets, textures, ``predict``) goes through :func:`read_rgb`: EXIF orientation
applied, 16-bit and float images scaled to 8 bit, images under ``MIN_IMAGE_SIDE`` px rejected; ordinary 8-bit
images are read exactly as PIL ``convert("RGB")`` reads them.

Images of more than ``MAX_IMAGE_PIXELS`` pixels (width x height) are refused from their header, before anything is
decoded (``pfadseg predict --max-pixels`` sets another limit). This check replaces Pillow's own (a raw
``DecompressionBombWarning`` above 89 M pixels, an error above twice that), which importing this module turns off.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from pfadseg.data.layout import CategoryFiles, mask_size_error, train_images, upright_size
from pfadseg.errors import PfadsegError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MASK_THRESHOLD = 0.5
MAX_WORKERS = 4
# Pillow holds a decoded image at 4 bytes per pixel; `pfadseg predict` on CPU peaks at about 1.2 GB + 4.2 bytes per
# pixel (1.8 GB for 12000 x 12000: pfadseg bench predict-memory), so this default stays near 2 GB.
MAX_IMAGE_PIXELS = 200_000_000  # e.g. 14142 x 14142; larger images are refused unless the limit is raised
MIN_IMAGE_SIDE = 32  # px, the smaller side of an image (the student reaches 1/32 of its input)
UINT16_MAX = 65535


Image.MAX_IMAGE_PIXELS = None  # Pillow's decompression-bomb check: open_image's max_pixels replaces it


class ImageReadError(PfadsegError, ValueError):
    """An image or mask file that cannot be decoded (missing, unreadable, truncated) or used (too large or small,
    odd range)."""


def open_image(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """``path`` fully decoded (truncation fails here) in its own mode, turned upright by its EXIF orientation.

    More than ``max_pixels`` pixels raise :class:`ImageReadError` from the header, before anything is decoded.
    """
    try:
        with Image.open(path) as im:
            width, height = im.size
            if width * height <= max_pixels:
                im.load()
                ImageOps.exif_transpose(im, in_place=True)  # in place: no second full-size copy
                return im
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: cannot read image ({exc})") from exc
    raise ImageReadError(f"{path}: image is {width} x {height} = {width * height:,} px, more than the limit of "
                         f"{max_pixels:,} px (a guard against decompression bombs and running out of memory); if "
                         "the image is genuine, raise it: pfadseg predict --max-pixels N (for training data: "
                         "pfadseg.data.images.MAX_IMAGE_PIXELS)")


def _is_high_bit(mode: str) -> bool:
    """Single-channel 16-bit (``I;16*``), 32-bit integer (``I``) or float (``F``) modes."""
    return mode.startswith("I;16") or mode in ("I", "F")


def _to_8bit(image: Image.Image, path: Path) -> Image.Image:
    """High-bit-depth single-channel images as 8-bit ``L``; other modes unchanged.

    16-bit values (``I;16*``, and ``I`` within 0..65535, as 16-bit PNG/PGM may open) become ``value >> 8``, the
    rule Pillow itself applies to 48/64-bit RGB(A) PNG and TIFF; float (``F``) values in [0, 1] become
    ``round(value * 255)``. Other ranges have no known scale and raise :class:`ImageReadError`.
    """
    if not _is_high_bit(image.mode):
        return image
    values = np.asarray(image)
    if image.mode == "F":
        finite = bool(np.isfinite(values).all())
        if not finite or values.min() < 0.0 or values.max() > 1.0:
            found = f"values {values.min():g} to {values.max():g}" if finite else "NaN or inf values"
            raise ImageReadError(f"{path}: float image with {found}; only floats in [0, 1] have a known scale: "
                                 "save it as such, or as 8-bit or 16-bit integers")
        return Image.fromarray(np.rint(values * 255.0).astype(np.uint8))
    if values.min() < 0 or values.max() > UINT16_MAX:
        raise ImageReadError(f"{path}: 32-bit integer image with values {values.min()} to {values.max()}, outside "
                             f"the 16-bit range 0..{UINT16_MAX}; save it as 8-bit or 16-bit")
    return Image.fromarray((values.astype(np.uint16) >> 8).astype(np.uint8))


def read_rgb(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """8-bit RGB, as every dataset, texture and predict image is read; a side under ``MIN_IMAGE_SIDE`` or more
    than ``max_pixels`` pixels raise."""
    path = Path(path)
    image = open_image(path, max_pixels)
    if min(image.size) < MIN_IMAGE_SIDE:
        raise ImageReadError(f"{path}: image is {image.width} x {image.height} px; its smaller side must be at "
                             f"least {MIN_IMAGE_SIDE} px (too small to train on or score; use the full-size image)")
    image = _to_8bit(image, path)
    return image if image.mode == "RGB" else image.convert("RGB")  # convert would copy an RGB image whole


def load_image(path: Path, size: int) -> np.ndarray:
    """RGB uint8 ``size`` x ``size`` x 3: :func:`read_rgb`, PIL bilinear squash-resize (as DeSTSeg)."""
    image = read_rgb(path).resize((size, size), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8).copy()


def load_mask(path: Path, size: int, *, image_file: Path | None = None) -> np.ndarray:
    """Boolean ``size`` x ``size`` mask: [0,1] tensor, torchvision antialiased bilinear resize, >= 0.5.

    Read as images are (:func:`open_image`, :func:`_to_8bit`, then ``L``); a high-bit-depth mask whose non-zero
    values all lie below half its range (e.g. 0/255 stored as 16-bit) would come out empty and raises instead,
    and so does a mask whose upright size differs from that of ``image_file``, its image, when given.
    """
    path = Path(path)
    image = open_image(path)
    if image_file is not None and (image_size := upright_size(image_file)) != image.size:
        raise ImageReadError(mask_size_error(Path(image_file), image_size, path, image.size))
    mask = np.asarray(_to_8bit(image, path).convert("L"), dtype=np.float32) / 255.0
    if _is_high_bit(image.mode) and mask.max() < MASK_THRESHOLD and np.asarray(image).any():
        raise ImageReadError(f"{path}: {image.mode} mask whose non-zero values all lie below half of its range, "
                             "so it would be empty; save masks as 0/255 (8-bit) or 0/65535 (16-bit)")
    resized = TF.resize(torch.from_numpy(mask)[None], [size, size], interpolation=InterpolationMode.BILINEAR,
                        antialias=True)
    return (resized[0] >= MASK_THRESHOLD).numpy()


def load_images(paths: Sequence[Path], size: int, *, workers: int | None = None) -> np.ndarray:
    """Images as uint8 N x ``size`` x ``size`` x 3, in the order of ``paths`` (decoded by a thread pool)."""
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    workers = workers or min(MAX_WORKERS, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, image in enumerate(pool.map(lambda p: load_image(p, size), paths)):
            out[i] = image
    return out


@dataclass(frozen=True)
class TestSet:
    """One category's test set at the evaluation size.

    ``labels`` come from the resized masks (any pixel set, as DeSTSeg's eval.py); ``folder_labels`` from the folders.
    """

    __test__ = False  # not a pytest test class

    images: np.ndarray  # uint8 N x H x W x 3
    masks: np.ndarray  # bool N x H x W (all False for good images)
    labels: np.ndarray  # bool N
    folder_labels: np.ndarray  # bool N
    paths: list[Path]
    defects: list[str]


def load_train_set(root: Path, category: str, size: int) -> np.ndarray:
    """The normal training images of ``root/<category>``, decoded and resized once: uint8 N x size x size x 3 (the
    test split and its masks are not read: training and calibration depend on neither)."""
    return load_images(train_images(root, category), size)


def load_test_set(files: CategoryFiles, size: int) -> TestSet:
    """Decode and resize a category's test images and masks; image labels derive from the resized masks."""
    images = load_images([item.image for item in files.test], size)
    masks = np.zeros((len(files.test), size, size), dtype=bool)
    for i, item in enumerate(files.test):
        if item.mask is not None:
            masks[i] = load_mask(item.mask, size, image_file=item.image)
    labels = masks.any(axis=(1, 2))
    folder_labels = np.array([item.label for item in files.test], dtype=bool)
    # a defective image without a mask is no disagreement: evaluation then skips the pixel metrics and says so
    has_mask = np.array([item.mask is not None or not item.label for item in files.test], dtype=bool)
    disagree = int((labels != folder_labels)[has_mask].sum())
    if disagree:
        log.warning("%s: %d test image(s) whose label from the resized mask differs from the folder label "
                    "(the mask label is used, as in DeSTSeg)", files.category, disagree)
    return TestSet(images, masks, labels, folder_labels, [item.image for item in files.test],
                   [item.defect for item in files.test])


def to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 B x H x W x 3 images -> float32 B x 3 x H x W in [0, 1]."""
    batch = torch.as_tensor(images)
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != torch.uint8:
        raise ValueError(f"expected uint8 B x H x W x 3 images, got {batch.dtype} {tuple(batch.shape)}")
    return batch.permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def normalize(images: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalise float images in [0, 1], shape B x 3 x H x W (any device and float dtype)."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std
