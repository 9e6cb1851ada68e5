"""What both acquire stages share: the archives they fetch (verified, with offline hints), a work folder beside
the destination, and installing a checked folder by renames."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from pfadseg.config import ArchiveConfig, Config
from pfadseg.data.categories import KSDD2_ARCHIVE
from pfadseg.data.download import (
    NeededArchive,
    NetworkError,
    archive_name,
    fetch_archive,
    offline_hint,
    sha256_file,
)
from pfadseg.fsio import atomic_dir
from pfadseg.paths import Layout

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
def work_folder(beside: Path) -> Iterator[Path]:
    """A temporary folder beside ``beside`` (same file system, so installing is a rename), removed after."""
    beside.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{beside.name}.", suffix=".work", dir=beside.parent) as work:
        yield Path(work)


def install(folders: Iterable[Path], dest: Path, check: Callable[[Path], T]) -> T:
    """Move ``folders`` into a fresh ``dest``; ``check`` validates the result before it replaces ``dest``."""
    with atomic_dir(dest) as tmp:
        for folder in folders:
            os.replace(folder, tmp / folder.name)
        return check(tmp)


def archive_record(spec: ArchiveConfig, archive: Path) -> dict[str, str]:
    """Provenance of a verified archive (its sha256 was checked against ``spec`` when pinned), for the manifest."""
    return {"url": spec.url, "file": archive.name, "sha256": (spec.sha256 or sha256_file(archive)).lower()}


def needed_archive(dataset: str, spec: ArchiveConfig, layout: Layout) -> NeededArchive:
    """The archive of ``dataset`` (a key of ``ARCHIVES``) as ``spec`` gives it, where the pipeline keeps it."""
    title, _, name = ARCHIVES[dataset]
    return NeededArchive(title, dataset, spec, layout.archives / (name or archive_name(spec.url)))


def fetch(cfg: Config, layout: Layout, dataset: str, spec: ArchiveConfig, *, archive: Path | None,
           progress: bool) -> Path:
    """:func:`fetch_archive` for ``dataset``; without network, the error names every archive the configuration
    still needs (not those verified on disk), how to bring each, and the fully offline ways."""
    _, key, name = ARCHIVES[dataset]
    try:
        return fetch_archive(spec, layout.archives, archive=archive, name=name, key=key, progress=progress)
    except NetworkError as exc:
        # the whole config, for this message only (the other acquire stage's params change no output of this one)
        data = cfg.to_dict()["data"]
        needs = [needed_archive(other, spec if other == dataset else ArchiveConfig(**data[other]), layout)
                 for other in (data["source"], data["textures"]) if other in ARCHIVES]
        missing = [need for need in needs if need.dataset == dataset or not need.on_disk()]
        raise NetworkError(exc.cause, offline_hint(missing)) from exc
