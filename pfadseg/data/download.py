"""Archive download with resume and sha256 verification, and safe extraction (metrics-and-dvc.md 6.1, 6.2)."""

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
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

from tqdm import tqdm

from pfadseg.config import ArchiveConfig
from pfadseg.fsio import atomic_dir

log = logging.getLogger(__name__)

CHUNK = 1 << 20
TIMEOUT_S = 60.0
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")


class DownloadError(RuntimeError):
    """A download, checksum or archive problem; the message says what to do about it."""


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


def _manual_hint(url: str, dest: Path) -> str:
    return (f"Without network access, download {url} elsewhere and place it at {dest.resolve()} "
            "(it is checked against its sha256), or pass it with "
            "`pfadseg download mvtec|dtd --archive PATH`; "
            "or work fully offline with `data.source: synthetic` (procedural MVTec-layout images) and "
            "`data.textures: procedural` in params.yaml.")


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


def download(url: str, dest: Path, *, sha256: str, progress: bool = True, timeout: float = TIMEOUT_S) -> Path:
    """Stream ``url`` into ``dest.part`` (resuming one), verify its sha256, then rename it to ``dest``."""
    dest = Path(dest)
    if urlparse(url).scheme not in ("http", "https"):
        raise DownloadError(f"{url}: only http(s) URLs can be downloaded; for a local file use "
                            "`pfadseg download mvtec|dtd --archive PATH`")
    part = dest.with_suffix(dest.suffix + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        _fetch(url, part, progress=progress, timeout=timeout)
    except HTTPError as exc:
        raise DownloadError(f"cannot download {url}: HTTP {exc.code} {exc.reason}. "
                            f"{_manual_hint(url, dest)}") from exc
    except (OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        kept = ""
        if part.is_file() and part.stat().st_size:
            kept = f" The partial download is kept at {part}; run again to resume it."
        raise DownloadError(f"cannot download {url}: {reason}.{kept} {_manual_hint(url, dest)}") from exc
    actual = sha256_file(part)
    if actual != sha256.lower():
        part.unlink()
        raise DownloadError(f"{url}: sha256 mismatch, expected {sha256.lower()}, got {actual}; the download "
                            "was deleted. Run again, or check the sha256 in params.yaml if the file changed "
                            "upstream.")
    os.replace(part, dest)
    return dest


def fetch_archive(
    spec: ArchiveConfig, archives_dir: Path, *, archive: Path | None = None, progress: bool = True
) -> Path:
    """A verified archive: ``archive`` if given, else the copy in ``archives_dir``, else a download there."""
    expected = spec.sha256.lower()
    if archive is not None:
        archive = Path(archive)
        if not archive.is_file():
            raise DownloadError(f"{archive}: --archive file not found")
        actual = sha256_file(archive)
        if actual != expected:
            raise DownloadError(f"{archive}: sha256 is {actual} but {expected} is expected for {spec.url}; "
                                "is this the right (complete) archive?")
        return archive
    dest = Path(archives_dir) / archive_name(spec.url)
    if dest.is_file():
        actual = sha256_file(dest)
        if actual != expected:
            raise DownloadError(f"{dest}: corrupted or different archive (sha256 {actual}, expected "
                                f"{expected}); delete it to download it again")
        log.info("%s: archive present and verified", dest)
        return dest
    return download(spec.url, dest, sha256=expected, progress=progress)


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


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a .tar[.gz|.xz|.bz2]/.tgz/.zip into ``dest`` after checking every member; all or nothing."""
    archive, dest = Path(archive), Path(dest)
    lower = archive.name.lower()
    try:
        if lower.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _check_zip_member(info, archive)
                with atomic_dir(dest) as tmp:
                    zf.extractall(tmp)
        elif lower.endswith(TAR_SUFFIXES):
            with tarfile.open(archive, "r:*") as tf:
                members = tf.getmembers()
                for member in members:
                    _check_tar_member(member, archive)
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
