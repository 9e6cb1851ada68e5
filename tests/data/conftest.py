"""Fixtures for the data tests: a local HTTP file server with Range support, archives, tiny datasets."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pfadseg.config import SyntheticDataConfig, config_from_dict, read_params
from pfadseg.data.procedural.scenes import make_synthetic_mvtec
from tests.conftest import REPO

ARCHIVE_LIMITS = config_from_dict(read_params(REPO / "params.yaml")).data.archive_limits  # the project's limits


@dataclass
class FileServer:
    """What the local server serves and what it saw; tests flip ``ignore_range`` / ``cut_after``."""

    base: str
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    ignore_range: bool = False  # answer 200 with the whole file, as a server without Range support does
    cut_after: int | None = None  # close the connection after this many body bytes (an interrupted transfer)

    def url(self, name: str) -> str:
        """The URL of a served file."""
        return f"{self.base}/{name}"

    def serve(self, name: str, data: bytes) -> tuple[str, str]:
        """Serve ``data`` as ``name``; returns (url, sha256)."""
        self.files[name] = data
        return self.url(name), hashlib.sha256(data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        state = self.server.state
        range_header = self.headers.get("Range")
        state.requests.append((self.path, range_header))
        body = state.files.get(self.path.lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
        if match and not state.ignore_range:
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload if state.cut_after is None else payload[: state.cut_after])

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


class _Server(ThreadingHTTPServer):
    state: FileServer


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    """An HTTP server on 127.0.0.1 (random port) with Range support, shut down after the test."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = FileServer(base=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def make_tar(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> Path:
    """Write a tar archive of regular files ``{name: content}``."""
    with tarfile.open(path, mode) as tf:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tf.addfile(info, io.BytesIO(content))
    return path


def tar_folder(path: Path, folder: Path, arcname: str) -> Path:
    """Write ``folder`` as a .tar.gz whose top-level entry is ``arcname``."""
    with tarfile.open(path, "w:gz") as tf:
        tf.add(folder, arcname=arcname)
    return path


def tiny_synthetic(root: Path, categories: list[str], seed: int = 0, size: int = 32) -> Path:
    """A tiny procedural MVTec-layout dataset at ``root``."""
    cfg = SyntheticDataConfig(image_size=size, n_train=3, n_test_good=2, n_test_per_defect=2,
                              n_defect_types=2, seed=seed)
    make_synthetic_mvtec(root, categories, cfg)
    return root


@pytest.fixture
def tiny_mvtec(tmp_path: Path) -> Callable[..., Path]:
    """``tiny_mvtec(categories)``: a tiny MVTec-layout set in tmp_path (3 train, 2 good, 2 x 2 defects)."""

    def _make(categories: list[str], name: str = "mvtec", **kwargs: int) -> Path:
        return tiny_synthetic(tmp_path / name, categories, **kwargs)

    return _make


def all_files(root: Path) -> set[Path]:
    """Every path below ``root`` (files and folders)."""
    return set(root.rglob("*"))
