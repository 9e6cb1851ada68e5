"""Crash-safe file output: write to a temporary sibling, then rename into place; a failed write names its file."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pfadseg.errors import MissingFileError, PfadsegError


class ReadError(PfadsegError, ValueError):
    """A file whose content pfadseg cannot read (e.g. malformed JSON); the message names it."""


class WriteError(PfadsegError, OSError):
    """A file could not be written: one line naming the destination and the OS's reason (``errno`` is the OS's)."""


@contextmanager
def writing(path: Path | str, *only: Path) -> Iterator[None]:
    """Raise an OS error of the block as a :class:`WriteError` naming ``path`` and the OS's reason; with ``only``,
    just the errors about no file or one of ``only`` (an error reading another file passes unchanged)."""
    try:
        yield
    except WriteError:
        raise
    except OSError as exc:
        if only and (exc.errno is None or exc.filename not in (None, *map(str, only))):
            raise
        reason = exc.strerror or str(exc)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            reason += "; free some space, then rerun"
        error = WriteError(f"{path}: cannot write: {reason}")
        error.errno = exc.errno
        raise error from exc


def _default_mode(directory: bool) -> int:
    """The mode a plain open()/mkdir() would give under the current umask (mkstemp/mkdtemp use 0600/0700)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


@contextmanager
def atomic_path(path: Path | str, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A failed write (the folder, the temporary file, the rename) raises a :class:`WriteError` naming ``path`` and the
    OS's reason; the temporary file is removed.
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        with writing(path, tmp_path, path):
            yield tmp_path
            os.chmod(tmp_path, _default_mode(directory=False))
            os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, _default_mode(directory=True))
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path | str, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: Path | str) -> Any:
    """Read a JSON file, naming the file in the error when it is missing or malformed."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MissingFileError(f"{path}: not found") from None
    except json.JSONDecodeError as exc:
        raise ReadError(f"{path}: not valid JSON ({exc})") from None
