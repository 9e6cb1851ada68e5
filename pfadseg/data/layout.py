"""MVTec-layout discovery and validation, dataset manifests, and DTD-layout texture folders."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import ExifTags, Image

from pfadseg.data.categories import MVTEC_CATEGORIES, MVTEC_TOTALS, MVTEC_TRAIN_COUNTS
from pfadseg.errors import PfadsegError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
GOOD = "good"
SEARCH_DEPTH = 4
TRANSPOSED = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width and height


class LayoutError(PfadsegError, ValueError):
    """A dataset folder that does not follow the expected layout; the message names the path."""


@dataclass(frozen=True)
class TestItem:
    """One test image, its ground-truth mask (None for good images) and its defect folder name."""

    __test__ = False  # not a pytest test class

    image: Path
    mask: Path | None
    defect: str

    @property
    def label(self) -> bool:
        """Folder label: True for every defect folder, False for ``good``."""
        return self.defect != GOOD


@dataclass(frozen=True)
class CategoryFiles:
    """The sorted train and test files of one category."""

    category: str
    train: list[Path]
    test: list[TestItem]

    @property
    def defect_types(self) -> list[str]:
        """Sorted defect folder names (without ``good``)."""
        return sorted({item.defect for item in self.test if item.label})


def mask_file(category_dir: Path, defect: str, image: Path) -> Path:
    """Where MVTec AD keeps the mask of ``image`` (a test image of ``defect``): ground_truth/DEFECT/STEM_mask.png."""
    return category_dir / "ground_truth" / defect / f"{image.stem}_mask.png"


def image_files(folder: Path) -> list[Path]:
    """Sorted image files (png/jpg/jpeg/bmp/tif/tiff, any case) directly in ``folder``, not hidden ones."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _category_dir(root: Path, category: str) -> Path:
    cat_dir = Path(root) / category
    if not cat_dir.is_dir():
        raise LayoutError(f"{cat_dir}: category folder not found (expected {category}/train/good, "
                          f"{category}/test/<defect>, {category}/ground_truth/<defect> under {root})")
    return cat_dir


def train_images(root: Path, category: str) -> list[Path]:
    """The normal training images of ``<root>/<category>/train/good``, checked; the test split is not read."""
    train_dir = _category_dir(root, category) / "train" / GOOD
    if not train_dir.is_dir():
        raise LayoutError(f"{train_dir}: training folder not found")
    train = image_files(train_dir)
    if not train:
        raise LayoutError(f"{train_dir}: no training images (png, jpg, jpeg, bmp, tif)")
    return train


def scan_category(root: Path, category: str, *, masks_required: bool = True) -> CategoryFiles:
    """Train images, test images and masks of ``<root>/<category>`` in MVTec AD layout, checked."""
    train = train_images(root, category)
    cat_dir = _category_dir(root, category)
    test_dir = cat_dir / "test"
    if not test_dir.is_dir():
        raise LayoutError(f"{test_dir}: test folder not found")
    gt_dir = cat_dir / "ground_truth"
    test: list[TestItem] = []
    stems: set[tuple[str, str]] = set()
    for defect_dir in _subdirs(test_dir):
        defect = defect_dir.name
        for image in image_files(defect_dir):
            stems.add((defect, image.stem))
            mask: Path | None = None
            if defect != GOOD:
                mask = mask_file(cat_dir, defect, image)
                if not mask.is_file():
                    if masks_required:
                        raise LayoutError(f"{image}: defective test image without its mask (expected {mask})")
                    mask = None
            test.append(TestItem(image, mask, defect))
    if not test:
        raise LayoutError(f"{test_dir}: no test images (expected {test_dir}/<defect or good>/*.png)")
    if gt_dir.is_dir():
        for mask_dir in _subdirs(gt_dir):
            for mask in image_files(mask_dir):
                stem = mask.stem.removesuffix("_mask")
                if (mask_dir.name, stem) not in stems:
                    raise LayoutError(f"{mask}: orphan mask, no test image "
                                      f"{test_dir / mask_dir.name / stem}.*")
    return CategoryFiles(category, train, test)


def upright_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image as the loader turns it upright (EXIF orientation 5-8 swaps them), from its
    header only: nothing is decoded.

    The base ``getexif`` reads only the metadata parsed on opening: PNG's own would decode the whole file to
    look for an eXIf chunk after the pixels (a rare placement, not seen here).
    """
    try:
        with Image.open(path) as im:
            orientation = Image.Image.getexif(im).get(ExifTags.Base.Orientation, 1)
            width, height = im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise LayoutError(f"{path}: cannot read image header ({exc})") from exc
    return (height, width) if orientation in TRANSPOSED else (width, height)


def mask_size_error(image: Path, image_size: tuple[int, int], mask: Path, mask_size: tuple[int, int]) -> str:
    """The error for a mask whose upright size differs from its image's: both files, both sizes, what to do."""
    (iw, ih), (mw, mh) = image_size, mask_size
    return (f"{mask}: mask is {mw} x {mh} px but its image {image} is {iw} x {ih} px (width x height, upright); "
            f"a mask is never resized to fit its image: save it at {iw} x {ih} px, or pair it with the image it "
            "was drawn on")


def check_mask_sizes(files: CategoryFiles) -> None:
    """Every mask of ``files`` has its image's upright size (headers only); a mismatch raises :class:`LayoutError`."""
    wrong: list[tuple[Path, tuple[int, int], Path, tuple[int, int]]] = []
    for item in files.test:
        if item.mask is not None:
            image_size, mask_size = upright_size(item.image), upright_size(item.mask)
            if image_size != mask_size:
                wrong.append((item.image, image_size, item.mask, mask_size))
    if wrong:
        more = f" ({len(wrong)} masks of {files.category} differ from their image)" if len(wrong) > 1 else ""
        raise LayoutError(mask_size_error(*wrong[0]) + more)


def _category_counts(files: CategoryFiles) -> dict[str, Any]:
    good = sum(not item.label for item in files.test)
    return {
        "train": len(files.train),
        "test": len(files.test),
        "test_good": good,
        "test_defective": len(files.test) - good,
        "masks": sum(item.mask is not None for item in files.test),
        "n_defect_types": len(files.defect_types),
        "defect_types": files.defect_types,
    }


def build_manifest(root: Path, categories: Sequence[str], *, masks_required: bool = True) -> dict[str, Any]:
    """Per-category counts (train, test, good, defective, masks, defect types) and their totals; validates the
    layout and that every mask has its image's size."""
    per_cat: dict[str, Any] = {}
    for cat in categories:
        files = scan_category(root, cat, masks_required=masks_required)
        check_mask_sizes(files)
        per_cat[cat] = _category_counts(files)
    keys = ("train", "test", "test_good", "test_defective", "masks")
    totals = {key: sum(counts[key] for counts in per_cat.values()) for key in keys}
    return {"categories": per_cat, "totals": totals}


def check_mvtec_counts(manifest: dict[str, Any]) -> None:
    """Compare a manifest with the official MVTec AD counts (per-category train; totals with all 15)."""
    per_cat = manifest["categories"]
    problems = [f"{cat} train {counts['train']} (expected {MVTEC_TRAIN_COUNTS[cat]})"
                for cat, counts in per_cat.items()
                if cat in MVTEC_TRAIN_COUNTS and counts["train"] != MVTEC_TRAIN_COUNTS[cat]]
    if set(MVTEC_CATEGORIES) <= set(per_cat):
        problems += [f"total {key} {manifest['totals'][key]} (expected {expected})"
                     for key, expected in MVTEC_TOTALS.items() if manifest["totals"][key] != expected]
    if problems:
        raise LayoutError("the MVTec AD copy differs from the official counts: " + "; ".join(problems)
                          + ". The archive or its extraction is incomplete: delete the dataset and acquire "
                          "it again")


def _walk(top: Path) -> Iterator[Path]:
    """``top`` and its non-hidden subfolders down to SEARCH_DEPTH, breadth first, sorted."""
    queue = deque([(Path(top), 0)])
    while queue:
        folder, depth = queue.popleft()
        yield folder
        if depth < SEARCH_DEPTH:
            queue.extend((sub, depth + 1) for sub in _subdirs(folder))


def find_dataset_root(extracted: Path, categories: Sequence[str]) -> Path:
    """The folder under ``extracted`` (itself included) that holds every ``<category>/train`` folder."""
    best, best_found = Path(extracted), -1
    for folder in _walk(extracted):
        found = sum((folder / cat / "train").is_dir() for cat in categories)
        if found == len(categories):
            return folder
        if found > best_found:
            best, best_found = folder, found
    missing = [cat for cat in categories if not (best / cat / "train").is_dir()]
    raise LayoutError(f"{extracted}: no folder holds all of the categories {list(categories)}; the closest, "
                      f"{best}, lacks {missing}")


def find_texture_root(extracted: Path) -> Path:
    """The DTD-layout ``images/`` folder (class subfolders of images) under ``extracted``, itself included."""
    for folder in _walk(extracted):
        if folder.name == "images" and any(image_files(sub) for sub in _subdirs(folder)):
            return folder
    raise LayoutError(f"{extracted}: no DTD-layout images/<class>/*.jpg folder found")


def scan_textures(root: Path) -> dict[str, list[Path]]:
    """Texture images per class of a ``<root>/<class>/*.jpg`` folder (classes without images skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"{root}: texture folder not found")
    classes = {sub.name: files for sub in _subdirs(root) if (files := image_files(sub))}
    if not classes:
        raise LayoutError(f"{root}: no texture images (expected {root}/<class>/*.jpg)")
    return classes


def texture_manifest(root: Path) -> dict[str, Any]:
    """Class and image counts of a texture folder."""
    classes = scan_textures(root)
    return {"classes": len(classes), "images": sum(len(files) for files in classes.values())}
