"""DVC stages ``acquire_images`` and ``acquire_textures``: download (or generate), check, install, record."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pfadseg.config import ArchiveConfig, Config
from pfadseg.data.categories import MVTEC_CATEGORIES
from pfadseg.data.download import (
    NeededArchive,
    NetworkError,
    archive_name,
    fetch_archive,
    offline_hint,
    safe_extract,
    sha256_file,
    with_overrides,
)
from pfadseg.data.ksdd2 import KSDD2_ARCHIVE, convert_ksdd2
from pfadseg.data.layout import (
    LayoutError,
    build_manifest,
    check_mask_sizes,
    check_mvtec_counts,
    find_dataset_root,
    find_texture_root,
    scan_category,
    texture_manifest,
)
from pfadseg.data.procedural import make_procedural_textures, make_synthetic_mvtec
from pfadseg.fsio import atomic_dir, write_json
from pfadseg.paths import Layout
from pfadseg.pipeline.entry import ITEM, StageDef

log = logging.getLogger(__name__)

T = TypeVar("T")

# what ``pfadseg download`` takes, as data.source and data.textures name it: (title, params key, file name in the
# archives folder, None for the URL's)
ARCHIVES: dict[str, tuple[str, str, str | None]] = {
    "mvtec": ("MVTec AD", "data.mvtec", None),
    "ksdd2": ("KolektorSDD2", "data.ksdd2", KSDD2_ARCHIVE),
    "dtd": ("DTD", "data.dtd", None),
}


@contextmanager
def _workdir(beside: Path) -> Iterator[Path]:
    """A temporary folder beside ``beside`` (same file system, so installing is a rename), removed after."""
    beside.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{beside.name}.", suffix=".work", dir=beside.parent) as work:
        yield Path(work)


def _install(folders: Iterable[Path], dest: Path, check: Callable[[Path], T]) -> T:
    """Move ``folders`` into a fresh ``dest``; ``check`` validates the result before it replaces ``dest``."""
    with atomic_dir(dest) as tmp:
        for folder in folders:
            os.replace(folder, tmp / folder.name)
        return check(tmp)


def _archive_record(spec: ArchiveConfig, archive: Path) -> dict[str, str]:
    """Provenance of a verified archive (its sha256 was checked against ``spec`` when pinned), for the manifest."""
    return {"url": spec.url, "file": archive.name, "sha256": (spec.sha256 or sha256_file(archive)).lower()}


def _needed(dataset: str, spec: ArchiveConfig, layout: Layout) -> NeededArchive:
    """The archive of ``dataset`` (a key of ``ARCHIVES``) as ``spec`` gives it, where the pipeline keeps it."""
    title, _, name = ARCHIVES[dataset]
    return NeededArchive(title, dataset, spec, layout.archives / (name or archive_name(spec.url)))


def _fetch(cfg: Config, layout: Layout, dataset: str, spec: ArchiveConfig, *, archive: Path | None,
           progress: bool) -> Path:
    """:func:`fetch_archive` for ``dataset``; without network, the error names every archive the configuration
    still needs (not those verified on disk), how to bring each, and the fully offline ways."""
    _, key, name = ARCHIVES[dataset]
    try:
        return fetch_archive(spec, layout.archives, archive=archive, name=name, key=key, progress=progress)
    except NetworkError as exc:
        # the whole config, for this message only (the other acquire stage's params change no output of this one)
        data = cfg.to_dict()["data"]
        needs = [_needed(other, spec if other == dataset else ArchiveConfig(**data[other]), layout)
                 for other in (data["source"], data["textures"]) if other in ARCHIVES]
        missing = [need for need in needs if need.dataset == dataset or not need.on_disk()]
        raise NetworkError(exc.cause, offline_hint(missing)) from exc


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


def acquire_images(
    cfg: Config, layout: Layout, *, archive: Path | None = None, url: str | None = None,
    sha256: str | None = None, progress: bool = True,
) -> Path:
    """Put the dataset of ``data.source`` at ``layout.images`` (MVTec layout) and write the images manifest."""
    data = cfg.data
    root = layout.images
    categories = list(data.categories)
    record: dict[str, Any] = {"source": data.source, "root": data.root}
    if data.source == "mvtec":
        spec = with_overrides(data.mvtec, url, sha256)
        path = _fetch(cfg, layout, "mvtec", spec, archive=archive, progress=progress)
        with _workdir(root) as work:
            safe_extract(path, work / "extracted", data.archive_limits)
            found = find_dataset_root(work / "extracted", categories)
            counts = _install([found / cat for cat in categories], root,
                              lambda tmp: _mvtec_manifest(tmp, categories))
        record.update(_archive_record(spec, path))
    elif data.source == "ksdd2":
        spec = with_overrides(data.ksdd2, url, sha256)
        path = _fetch(cfg, layout, "ksdd2", spec, archive=archive, progress=progress)
        with _workdir(root) as work:
            safe_extract(path, work / "extracted", data.archive_limits)
            record["conversion"] = convert_ksdd2(work / "extracted", work / "converted")
            counts = _install([work / "converted" / cat for cat in categories], root,
                              lambda tmp: build_manifest(tmp, categories))
        record.update(_archive_record(spec, path))
    elif data.source == "synthetic":
        with _workdir(root) as work:
            summary = make_synthetic_mvtec(work / "synthetic", categories, data.synthetic)
            counts = _install([work / "synthetic" / cat for cat in categories], root,
                              lambda tmp: build_manifest(tmp, categories))
        record.update({key: summary[key] for key in ("seed", "image_size")})
    else:
        source = _source_folder(data.root)
        with _workdir(root) as work:
            counts = _install(_copy_folder(source, categories, work / "copy"), root,
                              lambda tmp: build_manifest(tmp, categories, masks_required=False))
    record.update(counts)
    write_json(layout.images_manifest, record)
    log.info("%s: %d categories, %d train and %d test images (%s)", root, len(categories),
             counts["totals"]["train"], counts["totals"]["test"], data.source)
    return root


def acquire_textures(
    cfg: Config, layout: Layout, *, archive: Path | None = None, url: str | None = None,
    sha256: str | None = None, progress: bool = True,
) -> Path:
    """Put the anomaly-source textures of ``data.textures`` at ``layout.textures`` (``<class>/*.jpg``)."""
    data = cfg.data
    root = layout.textures
    record: dict[str, Any] = {"source": data.textures}
    with _workdir(root) as work:
        if data.textures == "dtd":
            spec = with_overrides(data.dtd, url, sha256)
            path = _fetch(cfg, layout, "dtd", spec, archive=archive, progress=progress)
            safe_extract(path, work / "extracted", data.archive_limits)
            record.update(_archive_record(spec, path))
        else:
            summary = make_procedural_textures(work / "extracted", data.procedural_textures)
            record.update({key: summary[key] for key in ("seed", "image_size")})
        images = find_texture_root(work / "extracted")
        counts = _install(sorted(p for p in images.iterdir() if p.is_dir()), root, texture_manifest)
    record.update(counts)
    write_json(layout.textures_manifest, record)
    log.info("%s: %d texture classes, %d images (%s)", root, counts["classes"], counts["images"],
             data.textures)
    return root


ACQUIRE_IMAGES = StageDef(
    "acquire_images", acquire_images,
    params=lambda arch: ("data.source", "data.root", "data.categories", "data.mvtec", "data.ksdd2",
                         "data.archive_limits", "data.synthetic"),
    outs=lambda arch: (str(ITEM.images),), records=lambda arch: (str(ITEM.images_manifest),),
)
ACQUIRE_TEXTURES = StageDef(
    "acquire_textures", acquire_textures,
    params=lambda arch: ("data.textures", "data.dtd", "data.archive_limits", "data.procedural_textures"),
    outs=lambda arch: (str(ITEM.textures),), records=lambda arch: (str(ITEM.textures_manifest),),
)
