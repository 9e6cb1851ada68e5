"""Image and mask reading per the DeSTSeg protocol (destseg-protocol.md 1.2 and 1.5), and normalisation."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from pfadseg.data.layout import CategoryFiles, scan_category

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MASK_THRESHOLD = 0.5
MAX_WORKERS = 4


class ImageReadError(ValueError):
    """An image or mask file that cannot be decoded (missing, unreadable, truncated)."""


def _open(path: Path, mode: str) -> Image.Image:
    """Fully decode ``path`` and convert it to ``mode``; truncated files fail here, not later."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert(mode)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"{path}: cannot read image ({exc})") from exc


def load_image(path: Path, size: int) -> np.ndarray:
    """RGB uint8 ``size`` x ``size`` x 3: PIL convert("RGB"), PIL bilinear squash-resize (protocol 1.2)."""
    image = _open(Path(path), "RGB").resize((size, size), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8).copy()


def load_mask(path: Path, size: int) -> np.ndarray:
    """Boolean ``size`` x ``size`` mask: [0,1] tensor, torchvision antialiased bilinear resize, >= 0.5."""
    mask = np.asarray(_open(Path(path), "L"), dtype=np.float32) / 255.0
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

    ``labels`` come from the resized masks (any pixel set, protocol 1.5); ``folder_labels`` from the folders.
    """

    __test__ = False  # not a pytest test class

    images: np.ndarray  # uint8 N x H x W x 3
    masks: np.ndarray  # bool N x H x W (all False for good images)
    labels: np.ndarray  # bool N
    folder_labels: np.ndarray  # bool N
    paths: list[Path]
    defects: list[str]


def load_train_set(root: Path, category: str, size: int, *, masks_required: bool) -> np.ndarray:
    """The normal training images of ``root/<category>``, decoded and resized once: uint8 N x size x size x 3."""
    return load_images(scan_category(root, category, masks_required=masks_required).train, size)


def load_test_set(files: CategoryFiles, size: int) -> TestSet:
    """Decode and resize a category's test images and masks; image labels derive from the resized masks."""
    images = load_images([item.image for item in files.test], size)
    masks = np.zeros((len(files.test), size, size), dtype=bool)
    for i, item in enumerate(files.test):
        if item.mask is not None:
            masks[i] = load_mask(item.mask, size)
    labels = masks.any(axis=(1, 2))
    folder_labels = np.array([item.label for item in files.test], dtype=bool)
    disagree = int((labels != folder_labels).sum())
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
