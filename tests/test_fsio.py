"""A failed write names its file and the OS's reason, and leaves neither the file nor its temporary sibling."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from pfadseg import fsio
from pfadseg.artifacts import save_model_file, save_torch
from pfadseg.fsio import WriteError, atomic_path, read_json, write_json

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """atomic_path's temporary files become links to /dev/full, where every write fails with ENOSPC."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    real = tempfile.mkstemp

    def on_dev_full(*args: object, **kwargs: object) -> tuple[int, str]:
        fd, name = real(*args, **kwargs)  # type: ignore[call-overload]
        os.close(fd)
        os.unlink(name)
        os.symlink("/dev/full", name)  # atomic_path unlinks the link, never /dev/full
        return os.open(name, os.O_WRONLY), name

    monkeypatch.setattr(fsio.tempfile, "mkstemp", on_dev_full)
    yield


def _only(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize("write", [
    lambda path: save_torch({"w": torch.zeros(1000)}, path),
    lambda path: save_model_file(path, "pfadseg.model/1", {"w": torch.zeros(1000)}, {}),
    lambda path: write_json(path, {"a": 1}),
], ids=["save_torch", "save_model_file", "write_json"])
def test_a_full_disk_names_the_file_and_no_space(tmp_path: Path, full_disk: None, write: object) -> None:
    path = tmp_path / "out" / "student.pt"
    expected = rf"^{re.escape(str(path))}: cannot write: No space left on device; free some space"
    with pytest.raises(WriteError, match=expected) as err:
        write(path)  # type: ignore[operator]
    assert err.value.errno == errno.ENOSPC and isinstance(err.value, OSError)
    assert _only(path.parent) == [], "neither the file nor a temporary file is left"


def test_a_write_past_the_file_size_limit_names_the_file_and_the_reason(tmp_path: Path) -> None:
    """A real EFBIG from the OS (RLIMIT_FSIZE), in a child process: torch.save's zip writer would say only
    'enforce fail at inline_container.cc ... unexpected pos'."""
    script = (
        "import resource, signal, sys, torch\n"
        "from pathlib import Path\n"
        "from pfadseg.artifacts import save_torch\n"
        "from pfadseg.fsio import write_json\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))\n"
        "out = Path(sys.argv[1])\n"
        "for write in (lambda: save_torch({'w': torch.zeros(100_000)}, out / 'a.ckpt'),\n"
        "              lambda: write_json(out / 'b.json', list(range(100_000)))):\n"
        "    try:\n"
        "        write()\n"
        "    except OSError as exc:\n"
        "        print(type(exc).__name__, exc.errno, exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"WriteError {errno.EFBIG} {tmp_path / 'a.ckpt'}: cannot write: File too large",
        f"WriteError {errno.EFBIG} {tmp_path / 'b.json'}: cannot write: File too large",
    ]
    assert _only(tmp_path) == []


def test_a_folder_without_write_permission_names_the_file(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    expected = rf"^{re.escape(str(tmp_path / 'm.json'))}: cannot write: Permission denied$"
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(WriteError, match=expected):
            write_json(tmp_path / "m.json", {})
    finally:
        tmp_path.chmod(0o700)


def test_an_error_reading_another_file_is_not_called_a_write_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err, atomic_path(tmp_path / "out.json") as tmp:
        tmp.write_text((tmp_path / "missing.txt").read_text())
    assert not isinstance(err.value, WriteError)
    with pytest.raises(FileNotFoundError, match=r"missing\.json: not found"), atomic_path(tmp_path / "out.json"):
        read_json(tmp_path / "missing.json")
    assert _only(tmp_path) == []
