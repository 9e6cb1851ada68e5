"""KolektorSDD2 (Bozic et al., 2021) converted to MVTec AD layout (for ADPS's experiments).

The official zip holds ``train/`` and ``test/`` folders of ``<id>.png`` images with ``<id>_GT.png`` masks
(any non-zero pixel is defect). The unsupervised protocol trains on the defect-free training images only and
tests on the official test split (894 good + 110 defective).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from pfadseg.data.categories import KSDD2_CATEGORY, KSDD2_TEST_COUNTS
from pfadseg.data.images import ImageReadError, open_image
from pfadseg.data.layout import GOOD, LayoutError, image_files, mask_size_error

log = logging.getLogger(__name__)

DEFECT = "defect"
GT_SUFFIX = "_GT"
SPLITS = ("train", "test")


def find_ksdd2_root(extracted: Path) -> Path:
    """The shallowest folder under ``extracted`` (itself included) holding both ``train/`` and ``test/``."""
    extracted = Path(extracted)
    roots = [p.parent for p in extracted.rglob("train")
             if p.is_dir() and (p.parent / "test").is_dir()
             and not any(part.startswith((".", "__MACOSX")) for part in p.relative_to(extracted).parts)]
    if not roots:
        raise LayoutError(f"{extracted}: no folder holds the KolektorSDD2 train/ and test/ folders "
                          "(<id>.png images with <id>_GT.png masks)")
    return min(roots, key=lambda p: (len(p.parts), str(p)))


def _read(path: Path) -> Image.Image:
    """``path`` as the loader reads it (:func:`open_image`: decoded, EXIF-upright); errors name the file."""
    try:
        return open_image(path)
    except ImageReadError as exc:
        raise LayoutError(str(exc)) from exc


def _defect_mask(image: Path, gt: Path) -> np.ndarray:
    """Boolean mask of ``gt`` (any non-zero pixel, in any channel), checked to match ``image`` in size."""
    size = _read(image).size
    mask = _read(gt)
    if mask.size != size:
        raise LayoutError(mask_size_error(image, size, gt, mask.size))
    single = len(mask.getbands()) == 1 and mask.mode != "P"  # palette and alpha images: judge the colours
    values = np.asarray(mask if single else mask.convert("RGB"))
    return values != 0 if single else values.any(axis=-1)


def _pairs(split: Path) -> list[tuple[Path, Path]]:
    """(image, GT mask) pairs of an official split folder; every image needs its mask and vice versa."""
    files = image_files(split)
    masks = {p.stem.removesuffix(GT_SUFFIX): p for p in files if p.stem.endswith(GT_SUFFIX)}
    images = [p for p in files if not p.stem.endswith(GT_SUFFIX)]
    if not images:
        raise LayoutError(f"{split}: no KolektorSDD2 images (<id>.png with <id>_GT.png)")
    missing = [p for p in images if p.stem not in masks]
    if missing:
        raise LayoutError(f"{missing[0]}: image without its ground-truth mask (expected "
                          f"{split / (missing[0].stem + GT_SUFFIX + '.png')}); {len(missing)} image(s) lack one")
    orphans = sorted(masks.keys() - {p.stem for p in images})
    if orphans:
        raise LayoutError(f"{masks[orphans[0]]}: orphan mask, no image {split / orphans[0]}.*")
    return [(p, masks[p.stem]) for p in images]


def convert_ksdd2(extracted: Path, out: Path) -> dict[str, int]:
    """Write the KolektorSDD2 copy found under ``extracted`` to ``out/ksdd2`` in MVTec AD layout.

    ``train/good`` gets the defect-free training images (defective ones are skipped and counted),
    ``test/good`` and ``test/defect`` the official test split, ``ground_truth/defect/<id>_mask.png`` the
    binary (0/255) masks. Images keep their native resolution (about 230 x 630): the loader squash-resizes
    every image and mask to ``data.image_size`` (pfadseg.data.images). Returns the counts.
    """
    root = find_ksdd2_root(extracted)
    cat = Path(out) / KSDD2_CATEGORY
    counts = dict.fromkeys(("train_good", "train_defective_skipped", "test_good", "test_defective"), 0)
    for split in SPLITS:
        for image, gt in _pairs(root / split):
            mask = _defect_mask(image, gt)
            defective = bool(mask.any())
            if split == "train":
                counts["train_defective_skipped" if defective else "train_good"] += 1
                if defective:
                    continue
                dest = cat / "train" / GOOD
            else:
                counts["test_defective" if defective else "test_good"] += 1
                dest = cat / "test" / (DEFECT if defective else GOOD)
                if defective:
                    masks = cat / "ground_truth" / DEFECT
                    masks.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(mask.astype(np.uint8) * 255).save(masks / f"{image.stem}_mask.png")
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image, dest / image.name)
    test = {key: counts[key] for key in KSDD2_TEST_COUNTS}
    if test != KSDD2_TEST_COUNTS:
        log.warning("%s: test split %s differs from the official KolektorSDD2 counts %s (expected only for a "
                    "partial copy)", root, test, KSDD2_TEST_COUNTS)
    log.info("%s: KolektorSDD2 converted: %s", cat, counts)
    return counts
