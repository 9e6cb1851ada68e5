"""DVC stage ``acquire_images``: the dataset of ``data.source`` (MVTec AD, KolektorSDD2, procedural or a folder) in
MVTec layout, with its manifest."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pfadseg.config import Config
from pfadseg.data.categories import MVTEC_CATEGORIES
from pfadseg.data.download import safe_extract, with_overrides
from pfadseg.data.ksdd2 import convert_ksdd2
from pfadseg.data.layout import (
    LayoutError,
    build_manifest,
    check_mask_sizes,
    check_mvtec_counts,
    find_dataset_root,
    scan_category,
)
from pfadseg.data.procedural.scenes import make_synthetic_mvtec
from pfadseg.fsio import write_json
from pfadseg.paths import Layout
from pfadseg.pipeline.acquire import archive_record, fetch, install, work_folder
from pfadseg.pipeline.entry import ITEM, StageDef

log = logging.getLogger(__name__)


def _source_folder(root: str | None) -> Path:
    """``data.root``, checked to be a folder: the error names the key, the path, what is wrong and what to do."""
    source = Path(str(root))
    if not source.is_dir():
        problem = "is a file" if source.is_file() else "is not a folder" if source.exists() else "does not exist"
        where = "" if source.is_absolute() else f" (relative to {Path.cwd()})"
        raise LayoutError(f"data.root: {source}{where} {problem}; point data.root to the folder of your dataset in "
                          "MVTec layout: <category>/train/good, <category>/test/<defect or good>, optional "
                          "<category>/ground_truth/<defect>/<stem>_mask.png")
    return source


def _copy_folder(source: Path, categories: list[str], work: Path) -> list[Path]:
    """Copy the categories of a user's MVTec-layout folder into ``work`` (masks may be missing)."""
    for category in categories:
        check_mask_sizes(scan_category(source, category, masks_required=False))  # fail early, naming the files
        shutil.copytree(source / category, work / category)
    return [work / category for category in categories]


def _mvtec_manifest(root: Path, categories: list[str]) -> dict[str, Any]:
    """Counts of an extracted MVTec AD copy, checked against the official ones when all 15 are used."""
    manifest = build_manifest(root, categories)
    if set(categories) == set(MVTEC_CATEGORIES):
        check_mvtec_counts(manifest)
    return manifest


Counts = dict[str, Any]  # the images manifest's counts (build_manifest)


@dataclass(frozen=True)
class Source:
    """Where a download comes from when not from its params: a local archive, another URL or sha256."""

    archive: Path | None = None
    url: str | None = None
    sha256: str | None = None
    progress: bool = True


def _acquire_mvtec(cfg: Config, layout: Layout, record: dict[str, Any], source: Source) -> Counts:
    categories = list(cfg.data.categories)
    spec = with_overrides(cfg.data.mvtec, source.url, source.sha256)
    path = fetch(cfg, layout, "mvtec", spec, archive=source.archive, progress=source.progress)
    with work_folder(layout.images) as work:
        safe_extract(path, work / "extracted", cfg.data.archive_limits)
        found = find_dataset_root(work / "extracted", categories)
        counts = install([found / cat for cat in categories], layout.images,
                         lambda tmp: _mvtec_manifest(tmp, categories))
    record.update(archive_record(spec, path))
    return counts


def _acquire_ksdd2(cfg: Config, layout: Layout, record: dict[str, Any], source: Source) -> Counts:
    categories = list(cfg.data.categories)
    spec = with_overrides(cfg.data.ksdd2, source.url, source.sha256)
    path = fetch(cfg, layout, "ksdd2", spec, archive=source.archive, progress=source.progress)
    with work_folder(layout.images) as work:
        safe_extract(path, work / "extracted", cfg.data.archive_limits)
        record["conversion"] = convert_ksdd2(work / "extracted", work / "converted")
        counts = install([work / "converted" / cat for cat in categories], layout.images,
                         lambda tmp: build_manifest(tmp, categories))
    record.update(archive_record(spec, path))
    return counts


def _acquire_synthetic(cfg: Config, layout: Layout, record: dict[str, Any], source: Source) -> Counts:
    categories = list(cfg.data.categories)
    with work_folder(layout.images) as work:
        summary = make_synthetic_mvtec(work / "synthetic", categories, cfg.data.synthetic)
        counts = install([work / "synthetic" / cat for cat in categories], layout.images,
                         lambda tmp: build_manifest(tmp, categories))
    record.update({key: summary[key] for key in ("seed", "image_size")})
    return counts


def _acquire_folder(cfg: Config, layout: Layout, record: dict[str, Any], source: Source) -> Counts:
    categories = list(cfg.data.categories)
    folder = _source_folder(cfg.data.root)
    with work_folder(layout.images) as work:
        return install(_copy_folder(folder, categories, work / "copy"), layout.images,
                       lambda tmp: build_manifest(tmp, categories, masks_required=False))


# data.source -> what puts that dataset at layout.images (MVTec layout), adding to the manifest's record
ACQUIRERS: dict[str, Callable[[Config, Layout, dict[str, Any], Source], Counts]] = {
    "mvtec": _acquire_mvtec,
    "ksdd2": _acquire_ksdd2,
    "synthetic": _acquire_synthetic,
    "folder": _acquire_folder,
}


def acquire_images(
    cfg: Config, layout: Layout, *, archive: Path | None = None, url: str | None = None,
    sha256: str | None = None, progress: bool = True,
) -> Path:
    """Put the dataset of ``data.source`` at ``layout.images`` (MVTec layout) and write the images manifest."""
    data = cfg.data
    record: dict[str, Any] = {"source": data.source, "root": data.root}
    counts = ACQUIRERS[data.source](cfg, layout, record, Source(archive, url, sha256, progress))
    record.update(counts)
    write_json(layout.images_manifest, record)
    log.info("%s: %d categories, %d train and %d test images (%s)", layout.images, len(data.categories),
             counts["totals"]["train"], counts["totals"]["test"], data.source)
    return layout.images


ACQUIRE_IMAGES = StageDef(
    "acquire_images", acquire_images,
    params=lambda arch: ("data.source", "data.root", "data.categories", "data.mvtec", "data.ksdd2",
                         "data.archive_limits", "data.synthetic"),
    outs=lambda arch: (str(ITEM.images),), records=lambda arch: (str(ITEM.images_manifest),),
)
