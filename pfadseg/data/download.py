"""Archive download with resume and sha256 verification, and safe extraction (cf. anomalib's data/utils/download.py)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import logging
import lzma
import os
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

from tqdm import tqdm

from pfadseg.config import ArchiveConfig, ArchiveLimitsConfig
from pfadseg.errors import PfadsegError
from pfadseg.fsio import atomic_dir

log = logging.getLogger(__name__)

CHUNK = 1 << 20
TIMEOUT_S = 60.0
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")
GIB = 1 << 30
LIMITS_KEY = "data.archive_limits"  # the params that bound extraction, named in errors


class DownloadError(PfadsegError, RuntimeError):
    """A download, checksum or archive problem; the message says what to do about it."""


class UnpinnedChecksumError(DownloadError):
    """An archive whose sha256 is not pinned in params.yaml: the message gives the computed one to pin."""


class NetworkError(DownloadError):
    """A download the network cut short (no connection, timeout, dropped transfer): ``cause`` says what happened,
    the message adds what to do without network."""

    def __init__(self, cause: str, hint: str) -> None:
        super().__init__(f"{cause} {hint}")
        self.cause = cause


class ArchiveError(DownloadError):
    """An archive that is corrupted or holds a member that could escape (or harm) the extraction folder."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def archive_name(url: str) -> str:
    """The archive's file name: the last path component of its URL."""
    name = PurePosixPath(urlparse(url).path).name
    if not name:
        raise DownloadError(f"{url}: the URL has no file name in its path")
    return name


@dataclasses.dataclass(frozen=True)
class NeededArchive:
    """An archive a configuration downloads: its title, ``pfadseg download`` name, spec and place on disk."""

    title: str  # e.g. MVTec AD
    dataset: str  # what ``pfadseg download`` takes: mvtec, dtd or ksdd2
    spec: ArchiveConfig
    path: Path  # where the pipeline keeps it (the archives folder)

    def on_disk(self) -> bool:
        """Whether it is at ``path`` and verified (its sha256 is the pinned one; any file when none is pinned)."""
        if not self.path.is_file():
            return False
        return self.spec.sha256 is None or sha256_file(self.path) == self.spec.sha256.lower()


def offline_hint(missing: Sequence[NeededArchive]) -> str:
    """What to do without network: how to bring each ``missing`` archive, or how to work fully offline."""
    steps = "".join(f"\n  - {need.title}: download {need.spec.url} elsewhere, then run `pfadseg download "
                    f"{need.dataset} --archive FILE`, or place it at {need.path.resolve()}" for need in missing)
    return ("Without network access, bring the archive(s) this configuration still needs (each is checked "
            f"against its sha256):{steps}\n"
            "Or run `pfadseg demo`: it runs fully offline (procedural data and textures, random teacher). In this "
            "project, `data.source: synthetic` (procedural MVTec-layout images) and `data.textures: procedural` in "
            "params.yaml need no archive either.")


def _content_range_start(value: str | None) -> int | None:
    match = re.match(r"bytes\s+(\d+)-", value or "")
    return int(match.group(1)) if match else None


def _fetch(url: str, part: Path, *, progress: bool, timeout: float) -> None:
    """Append the rest of ``url`` to ``part`` (Range request), or rewrite it when the server ignores Range."""
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "pfadseg"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as exc:
        if exc.code == 416 and offset:  # the .part already holds the whole file; the checksum decides
            exc.close()
            return
        raise
    with response:
        resumed = bool(offset) and response.status == 206
        if resumed and _content_range_start(response.headers.get("Content-Range")) != offset:
            raise DownloadError(f"{url}: the server resumed at the wrong offset "
                                f"({response.headers.get('Content-Range')!r}, wanted {offset}); "
                                f"delete {part} and try again")
        if offset and not resumed:
            log.info("%s: the server ignored the Range request; downloading from the start", url)
        start = offset if resumed else 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        with part.open("ab" if resumed else "wb") as fh, tqdm(
            total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=part.name[:-5],
            disable=not progress,
        ) as bar:
            while chunk := response.read(CHUNK):
                fh.write(chunk)
                bar.update(len(chunk))
        if total is not None and part.stat().st_size < total:
            raise http.client.IncompleteRead(b"", total - part.stat().st_size)


def download(
    url: str, dest: Path, *, sha256: str | None, progress: bool = True, timeout: float = TIMEOUT_S
) -> Path:
    """Stream ``url`` into ``dest.part`` (resuming one), verify its sha256, then rename it to ``dest``.

    With ``sha256`` None (not pinned) nothing is verified: the caller reports the computed value.
    """
    dest = Path(dest)
    if urlparse(url).scheme not in ("http", "https"):
        raise DownloadError(f"{url}: only http(s) URLs can be downloaded; for a local file use "
                            "`pfadseg download mvtec|dtd|ksdd2 --archive PATH`")
    part = dest.with_suffix(dest.suffix + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    hint = offline_hint([NeededArchive(dest.name, "mvtec|dtd|ksdd2", ArchiveConfig(url, sha256), dest)])
    try:
        _fetch(url, part, progress=progress, timeout=timeout)
    except HTTPError as exc:
        raise DownloadError(f"cannot download {url}: HTTP {exc.code} {exc.reason}. {hint}") from exc
    except (OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        kept = ""
        if part.is_file() and part.stat().st_size:
            kept = f" The partial download is kept at {part}; run again to resume it."
        raise NetworkError(f"cannot download {url}: {reason}.{kept}", hint) from exc
    if sha256 is not None and (actual := sha256_file(part)) != sha256.lower():
        part.unlink()
        raise DownloadError(f"{url}: sha256 mismatch, expected {sha256.lower()}, got {actual}; the download "
                            "was deleted. Run again, or check the sha256 in params.yaml if the file changed "
                            "upstream.")
    os.replace(part, dest)
    return dest


def fetch_archive(
    spec: ArchiveConfig, archives_dir: Path, *, archive: Path | None = None, name: str | None = None,
    key: str = "data.<dataset>", progress: bool = True,
) -> Path:
    """A verified archive: ``archive`` if given, else the copy in ``archives_dir``, else a download there.

    ``name`` is the file name in ``archives_dir`` (default: from the URL); ``key`` the params key of
    ``spec``, named in messages. Without a pinned sha256 the archive is kept and
    :class:`UnpinnedChecksumError` gives its computed sha256 to pin.
    """
    expected = spec.sha256.lower() if spec.sha256 else None
    if archive is not None:
        path = Path(archive)
        if not path.is_file():
            raise DownloadError(f"{path}: --archive file not found")
    else:
        path = Path(archives_dir) / (name or archive_name(spec.url))
        if not path.is_file():
            download(spec.url, path, sha256=expected, progress=progress)
            if expected is not None:
                return path
    actual = sha256_file(path)
    if expected is None:
        kept = "" if archive is not None else f" The archive is kept at {path}: nothing is downloaded again."
        raise UnpinnedChecksumError(
            f"{path}: no sha256 is pinned for {spec.url}; this archive's sha256 is {actual}. If it is the right "
            f"archive, pin it as {key}.sha256 in params.yaml (or pass --sha256 {actual}) and run again.{kept}")
    if actual != expected:
        if archive is not None:
            raise DownloadError(f"{path}: sha256 is {actual} but {expected} is expected for {spec.url}; "
                                "is this the right (complete) archive?")
        raise DownloadError(f"{path}: corrupted or different archive (sha256 {actual}, expected "
                            f"{expected}); delete it to download it again")
    log.info("%s: archive present and verified", path)
    return path


def with_overrides(spec: ArchiveConfig, url: str | None = None, sha256: str | None = None) -> ArchiveConfig:
    """``spec`` with the URL and/or sha256 replaced where given."""
    return dataclasses.replace(spec, url=url or spec.url, sha256=sha256 or spec.sha256)


# --------------------------------------------------------------------------------------------- extraction


def _check_name(name: str, archive: Path) -> None:
    """No absolute path and no ``..`` component: with links refused, every member then stays inside dest."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        raise ArchiveError(f"{archive}: unsafe member {name!r} (absolute path); nothing was extracted")
    if ".." in PurePosixPath(posix).parts:
        raise ArchiveError(f"{archive}: unsafe member {name!r} ('..' path component); nothing was extracted")


def _check_tar_member(member: tarfile.TarInfo, archive: Path) -> None:
    _check_name(member.name, archive)
    if member.issym() or member.islnk():
        kind = "symbolic link" if member.issym() else "hard link"
        raise ArchiveError(f"{archive}: unsafe member {member.name!r} ({kind} to {member.linkname!r}); "
                           "nothing was extracted")
    if not (member.isreg() or member.isdir()):
        raise ArchiveError(f"{archive}: unsafe member {member.name!r} (device, fifo or other special file); "
                           "nothing was extracted")


def _check_zip_member(info: zipfile.ZipInfo, archive: Path) -> None:
    _check_name(info.filename, archive)
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ArchiveError(f"{archive}: unsafe member {info.filename!r} (symbolic link); "
                           "nothing was extracted")
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise ArchiveError(f"{archive}: unsafe member {info.filename!r} (special file); "
                           "nothing was extracted")


def _raise_limit(limit: str, value: str) -> str:
    """The end of a size error: the limit passed, and the param to raise."""
    return (f"over {LIMITS_KEY}.{limit} = {value}; nothing was extracted. If you trust the archive, raise "
            f"{LIMITS_KEY}.{limit} in params.yaml")


def _check_total(archive: Path, sizes: list[tuple[str, int]], limits: ArchiveLimitsConfig) -> int:
    """The total declared size of the members ``(name, size)``; an error once it passes the limit."""
    total = 0
    for name, size in sizes:
        total += size
        if total > limits.max_extracted_gib * GIB:
            raise ArchiveError(f"{archive}: extracting up to member {name!r} would write {total / GIB:.3g} GiB, "
                               f"{_raise_limit('max_extracted_gib', f'{limits.max_extracted_gib:g} GiB')}")
    return total


def _check_ratio(archive: Path, what: str, size: int, packed: int, limits: ArchiveLimitsConfig) -> None:
    """An error when ``what`` expands from ``packed`` compressed bytes to ``size`` at more than the allowed ratio."""
    if size > limits.max_ratio * packed:
        ratio = f"{size / packed:.0f}x" if packed else "infinitely"
        raise ArchiveError(f"{archive}: {what} expands {ratio} ({packed} to {size} bytes), "
                           f"{_raise_limit('max_ratio', f'{limits.max_ratio:g}')}")


def _check_zip_sizes(infos: list[zipfile.ZipInfo], archive: Path, limits: ArchiveLimitsConfig) -> None:
    """Sizes as the zip declares them (extraction writes no more): the total, and each member's ratio."""
    for info in infos:
        _check_ratio(archive, f"member {info.filename!r}", info.file_size, info.compress_size, limits)
    _check_total(archive, [(info.filename, info.file_size) for info in infos], limits)


def _check_tar_sizes(members: list[tarfile.TarInfo], archive: Path, limits: ArchiveLimitsConfig) -> None:
    """Sizes as the tar headers declare them (extraction writes no more): the total, and the archive's ratio
    (a compressed tar is one stream, so a ratio per member does not exist)."""
    total = _check_total(archive, [(m.name, m.size) for m in members], limits)
    if members:
        largest = max(members, key=lambda m: m.size)
        _check_ratio(archive, f"the whole archive (largest member {largest.name!r})", total, archive.stat().st_size,
                     limits)


def _archive_kind(archive: Path) -> str | None:
    """The archive type, ``zip`` or ``tar``, by its name's suffix, else by its content; None if neither."""
    lower = archive.name.lower()
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith(TAR_SUFFIXES):
        return "tar"
    if zipfile.is_zipfile(archive):
        return "zip"
    return "tar" if tarfile.is_tarfile(archive) else None


def safe_extract(archive: Path, dest: Path, limits: ArchiveLimitsConfig) -> None:
    """Extract a .tar[.gz|.xz|.bz2]/.tgz/.zip into ``dest`` after checking every member and the sizes against
    ``limits``; all or nothing.

    A file whose name has no known suffix (``wget`` of a URL without one) is recognised by its content.
    """
    archive, dest = Path(archive), Path(dest)
    kind = _archive_kind(archive)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                for info in infos:
                    _check_zip_member(info, archive)
                _check_zip_sizes(infos, archive, limits)
                with atomic_dir(dest) as tmp:
                    zf.extractall(tmp)
        elif kind == "tar":
            with tarfile.open(archive, "r:*") as tf:
                members = tf.getmembers()
                for member in members:
                    _check_tar_member(member, archive)
                _check_tar_sizes(members, archive, limits)
                with atomic_dir(dest) as tmp:
                    tf.extractall(tmp, members=members, filter="data")
        else:
            raise ArchiveError(f"{archive}: unsupported archive type; use .tar, .tar.gz, .tgz, .tar.xz, "
                               ".tar.bz2 or .zip")
    except tarfile.FilterError as exc:
        raise ArchiveError(f"{archive}: unsafe member ({exc}); nothing was extracted") from exc
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError,
            gzip.BadGzipFile) as exc:
        raise ArchiveError(f"{archive}: corrupted or truncated archive ({exc}); nothing was extracted. "
                           "Delete it and download it again.") from exc
