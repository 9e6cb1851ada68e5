"""Download with resume and sha256, safe extraction, and the acquire stages over a local HTTP server."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import socket
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from pfadseg.config import ArchiveConfig
from pfadseg.data.download import (
    ArchiveError,
    DownloadError,
    NetworkError,
    archive_name,
    download,
    fetch_archive,
    safe_extract,
    sha256_file,
)
from pfadseg.data.layout import scan_category, scan_textures
from pfadseg.paths import Layout
from pfadseg.pipeline.acquire_images import ACQUIRE_IMAGES, acquire_images
from pfadseg.pipeline.acquire_textures import ACQUIRE_TEXTURES, acquire_textures
from tests.data.conftest import ARCHIVE_LIMITS, FileServer, all_files, make_tar, tar_folder

PAYLOAD = {"top/a.txt": b"alpha" * 1000, "top/sub/b.bin": bytes(range(256)) * 50}


def _archive_bytes(tmp_path: Path) -> bytes:
    return make_tar(tmp_path / "src.tar.gz", PAYLOAD).read_bytes()


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -------------------------------------------------------------------------------------------- download


def test_sha256_file_reads_in_chunks(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 123)  # spans several 1 MiB chunks
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_good_archive_downloads_verifies_and_extracts(tmp_path: Path, file_server: FileServer) -> None:
    url, sha = file_server.serve("data.tar.gz", _archive_bytes(tmp_path))
    path = fetch_archive(ArchiveConfig(url, sha), tmp_path / "archives", progress=False)
    assert path == tmp_path / "archives" / "data.tar.gz"
    assert sha256_file(path) == sha
    assert not path.with_suffix(".gz.part").exists()
    safe_extract(path, tmp_path / "out", ARCHIVE_LIMITS)
    for name, content in PAYLOAD.items():
        assert (tmp_path / "out" / name).read_bytes() == content
    assert file_server.requests == [("/data.tar.gz", None)]


def test_wrong_sha256_deletes_the_download(tmp_path: Path, file_server: FileServer) -> None:
    url, sha = file_server.serve("data.tar.gz", _archive_bytes(tmp_path))
    wrong = "0" * 64
    with pytest.raises(DownloadError) as info:
        fetch_archive(ArchiveConfig(url, wrong), tmp_path / "archives", progress=False)
    message = str(info.value)
    assert url in message and wrong in message and sha in message
    assert list((tmp_path / "archives").iterdir()) == []  # neither the archive nor its .part


def test_resume_sends_range_and_appends(tmp_path: Path, file_server: FileServer) -> None:
    data = _archive_bytes(tmp_path)
    url, sha = file_server.serve("data.tar.gz", data)
    dest = tmp_path / "dl" / "data.tar.gz"
    dest.parent.mkdir()
    half = len(data) // 2
    dest.with_suffix(".gz.part").write_bytes(data[:half])
    assert download(url, dest, sha256=sha, progress=False) == dest
    assert file_server.requests == [("/data.tar.gz", f"bytes={half}-")]
    assert dest.read_bytes() == data
    assert not dest.with_suffix(".gz.part").exists()


def test_server_ignoring_range_restarts_cleanly(tmp_path: Path, file_server: FileServer) -> None:
    data = _archive_bytes(tmp_path)
    url, sha = file_server.serve("data.tar.gz", data)
    file_server.ignore_range = True
    dest = tmp_path / "data.tar.gz"
    dest.with_suffix(".gz.part").write_bytes(data[:100])
    download(url, dest, sha256=sha, progress=False)
    assert file_server.requests == [("/data.tar.gz", "bytes=100-")]  # asked to resume, got the whole file
    assert dest.read_bytes() == data  # rewritten, not appended


def test_interrupted_transfer_keeps_part_and_resumes(tmp_path: Path, file_server: FileServer) -> None:
    data = _archive_bytes(tmp_path)
    url, sha = file_server.serve("data.tar.gz", data)
    dest = tmp_path / "data.tar.gz"
    file_server.cut_after = len(data) // 3
    with pytest.raises(DownloadError, match="partial download is kept"):
        download(url, dest, sha256=sha, progress=False)
    part = dest.with_suffix(".gz.part")
    assert part.read_bytes() == data[: len(data) // 3]
    assert not dest.exists()
    file_server.cut_after = None
    download(url, dest, sha256=sha, progress=False)
    assert file_server.requests[-1] == ("/data.tar.gz", f"bytes={len(data) // 3}-")
    assert dest.read_bytes() == data


def test_complete_part_answered_416_is_verified(tmp_path: Path, file_server: FileServer) -> None:
    data = _archive_bytes(tmp_path)
    url, sha = file_server.serve("data.tar.gz", data)
    dest = tmp_path / "data.tar.gz"
    dest.with_suffix(".gz.part").write_bytes(data)
    download(url, dest, sha256=sha, progress=False)
    assert file_server.requests == [("/data.tar.gz", f"bytes={len(data)}-")]
    assert dest.read_bytes() == data


def test_no_network_error_says_what_to_do(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_unused_port()}/mvtec_anomaly_detection.tar.xz"
    with pytest.raises(DownloadError) as info:
        fetch_archive(ArchiveConfig(url, "a" * 64), tmp_path / "archives", progress=False)
    message = str(info.value)
    assert url in message
    assert str((tmp_path / "archives" / "mvtec_anomaly_detection.tar.xz").resolve()) in message
    assert "--archive FILE" in message and "`pfadseg demo`" in message
    assert "data.source: synthetic" in message and "data.textures: procedural" in message


def _offline_config(tiny_config, *overrides: str):
    """MVTec AD and DTD both to download, from a closed port on 127.0.0.1 (no network)."""
    port = _unused_port()
    return tiny_config("data.source=mvtec", "data.textures=dtd",
                       f"data.mvtec.url=http://127.0.0.1:{port}/mvtec_anomaly_detection.tar.xz",
                       f"data.dtd.url=http://127.0.0.1:{port}/dtd-r1.0.1.tar.gz", *overrides)


@pytest.mark.parametrize("stage", [ACQUIRE_IMAGES, ACQUIRE_TEXTURES])
def test_offline_error_names_every_archive_still_needed(tmp_path: Path, tiny_config, stage) -> None:
    cfg = _offline_config(tiny_config)
    layout = Layout(tmp_path)
    with pytest.raises(NetworkError) as info:
        stage.invoke(cfg, layout, progress=False)  # on the stage's own params, as DVC runs it
    message = str(info.value)
    failed = cfg.data.mvtec.url if stage is ACQUIRE_IMAGES else cfg.data.dtd.url
    assert message.startswith(f"cannot download {failed}: ")
    for title, dataset, url in (("MVTec AD", "mvtec", cfg.data.mvtec.url), ("DTD", "dtd", cfg.data.dtd.url)):
        assert f"- {title}: download {url} elsewhere, then run `pfadseg download {dataset} --archive FILE`, or " \
               f"place it at {(layout.archives / archive_name(url)).resolve()}" in message
    assert message.index("MVTec AD") < message.index("DTD")
    assert "`pfadseg demo`: it runs fully offline (procedural data and textures, random teacher)" in message
    assert list(layout.archives.iterdir()) == []


def test_offline_error_leaves_out_archives_verified_on_disk(tmp_path: Path, tiny_config) -> None:
    layout = Layout(tmp_path)
    layout.archives.mkdir(parents=True)
    dtd = layout.archives / "dtd-r1.0.1.tar.gz"
    dtd.write_bytes(b"the DTD archive")
    cfg = _offline_config(tiny_config, f"data.dtd.sha256={sha256_file(dtd)}")
    with pytest.raises(NetworkError) as info:
        acquire_images(cfg, layout, progress=False)
    assert "- MVTec AD:" in str(info.value) and "- DTD:" not in str(info.value)
    dtd.write_bytes(b"another file")  # on disk but not verified: still needed
    with pytest.raises(NetworkError, match="- DTD: "):
        acquire_images(cfg, layout, progress=False)
    with pytest.raises(NetworkError) as info:  # procedural textures need no archive
        acquire_images(_offline_config(tiny_config, "data.textures=procedural"), layout, progress=False)
    assert "- MVTec AD:" in str(info.value) and "DTD" not in str(info.value)


def test_http_error_and_bad_scheme(tmp_path: Path, file_server: FileServer) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(file_server.url("missing.tar"), tmp_path / "missing.tar", sha256="0" * 64, progress=False)
    with pytest.raises(DownloadError, match="only http"):
        download("ftp://example.org/x.tar", tmp_path / "x.tar", sha256="0" * 64, progress=False)


def test_corrupted_archive_on_disk_is_detected_before_extraction(tmp_path: Path,
                                                                 file_server: FileServer) -> None:
    url, sha = file_server.serve("data.tar.gz", _archive_bytes(tmp_path))
    archives = tmp_path / "archives"
    archives.mkdir()
    (archives / "data.tar.gz").write_bytes(b"not the archive")
    with pytest.raises(DownloadError) as info:
        fetch_archive(ArchiveConfig(url, sha), archives, progress=False)
    assert str(archives / "data.tar.gz") in str(info.value) and "delete it" in str(info.value)
    assert file_server.requests == []


def test_verified_archive_on_disk_is_reused(tmp_path: Path, file_server: FileServer) -> None:
    data = _archive_bytes(tmp_path)
    url, sha = file_server.serve("data.tar.gz", data)
    (tmp_path / "data.tar.gz").write_bytes(data)
    assert fetch_archive(ArchiveConfig(url, sha), tmp_path, progress=False) == tmp_path / "data.tar.gz"
    assert file_server.requests == []


def test_archive_option_is_checksummed(tmp_path: Path) -> None:
    data = _archive_bytes(tmp_path)
    given = tmp_path / "mine.tar.gz"
    given.write_bytes(data)
    spec = ArchiveConfig("https://example.org/x/data.tar.gz", hashlib.sha256(data).hexdigest())
    assert fetch_archive(spec, tmp_path / "archives", archive=given) == given
    given.write_bytes(data[:-1])
    with pytest.raises(DownloadError, match=str(given)):
        fetch_archive(spec, tmp_path / "archives", archive=given)
    with pytest.raises(DownloadError, match="not found"):
        fetch_archive(spec, tmp_path / "archives", archive=tmp_path / "absent.tar.gz")
    assert not (tmp_path / "archives").exists()


def test_archive_name_is_the_last_url_component() -> None:
    assert archive_name("https://h/a/b/mvtec.tar.xz?x=1") == "mvtec.tar.xz"
    with pytest.raises(DownloadError):
        archive_name("https://h/")


# -------------------------------------------------------------------------------------------- extraction


def _tar_with(path: Path, info: tarfile.TarInfo, content: bytes = b"") -> Path:
    with tarfile.open(path, "w") as tf:
        ok = tarfile.TarInfo("fine.txt")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))
        info.size = len(content)
        tf.addfile(info, io.BytesIO(content) if content else None)
    return path


def _link(name: str, kind: bytes, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize(("member", "content", "reason"), [
    (tarfile.TarInfo("../evil.txt"), b"x", "'..'"),
    (tarfile.TarInfo("ok/../../evil.txt"), b"x", "'..'"),
    (tarfile.TarInfo("/tmp/pfadseg-evil.txt"), b"x", "absolute"),
    (_link("link", tarfile.SYMTYPE, "/etc/passwd"), b"", "symbolic link"),
    (_link("hard", tarfile.LNKTYPE, "fine.txt"), b"", "hard link"),
    (_link("fifo", tarfile.FIFOTYPE, ""), b"", "fifo"),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink", "fifo"])
def test_unsafe_tar_members_are_rejected_before_writing(tmp_path: Path, member: tarfile.TarInfo,
                                                        content: bytes, reason: str) -> None:
    archive = _tar_with(tmp_path / "bad.tar", member, content)
    before = all_files(tmp_path)
    with pytest.raises(ArchiveError) as info:
        safe_extract(archive, tmp_path / "work" / "out", ARCHIVE_LIMITS)
    assert repr(member.name) in str(info.value) and reason in str(info.value)
    assert all_files(tmp_path) == before  # checked before anything, even the destination's parent, exists
    assert not Path("/tmp/pfadseg-evil.txt").exists()


def test_zip_extracts_and_rejects_unsafe_members(tmp_path: Path) -> None:
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("dtd/images/a/a_0001.jpg", b"jpg")
    safe_extract(good, tmp_path / "good", ARCHIVE_LIMITS)
    assert (tmp_path / "good" / "dtd" / "images" / "a" / "a_0001.jpg").read_bytes() == b"jpg"

    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("fine.txt", b"ok")
        zf.writestr("../evil.txt", b"x")
    with pytest.raises(ArchiveError, match=re.escape("'../evil.txt'")):
        safe_extract(bad, tmp_path / "bad", ARCHIVE_LIMITS)
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match="symbolic link"):
        safe_extract(link, tmp_path / "link", ARCHIVE_LIMITS)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "link").exists()
    assert not (tmp_path.parent / "evil.txt").exists()


def test_truncated_or_unknown_archives_fail_cleanly(tmp_path: Path) -> None:
    data = make_tar(tmp_path / "src.tar.xz", PAYLOAD, mode="w:xz").read_bytes()
    (tmp_path / "cut.tar.xz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match="corrupted or truncated"):
        safe_extract(tmp_path / "cut.tar.xz", tmp_path / "out", ARCHIVE_LIMITS)
    (tmp_path / "x.rar").write_bytes(b"rar")
    with pytest.raises(ArchiveError, match="unsupported archive type"):
        safe_extract(tmp_path / "x.rar", tmp_path / "out", ARCHIVE_LIMITS)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dir left behind


def test_extraction_replaces_an_existing_folder(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "a.tgz", {"new.txt": b"new"})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    safe_extract(archive, tmp_path / "out", ARCHIVE_LIMITS)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["new.txt"]


MIB = 1 << 20


def _zip(path: Path, members: dict[str, bytes], method: int) -> Path:
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return path


@pytest.mark.parametrize(("make", "limits", "member", "param"), [
    (lambda d: _zip(d / "bomb.zip", {"ok.txt": b"ok", "zeros.bin": bytes(50 * MIB)}, zipfile.ZIP_DEFLATED),
     {}, "zeros.bin", "max_ratio"),
    (lambda d: _zip(d / "big.zip", {"a.bin": os.urandom(MIB), "b.bin": os.urandom(MIB)}, zipfile.ZIP_STORED),
     {"max_extracted_gib": 1.5 / 1024}, "b.bin", "max_extracted_gib"),
    (lambda d: make_tar(d / "bomb.tar.gz", {"ok.txt": b"ok", "zeros.bin": bytes(20 * MIB)}),
     {}, "zeros.bin", "max_ratio"),
    (lambda d: make_tar(d / "big.tar", {"a.bin": os.urandom(MIB), "b.bin": os.urandom(MIB)}, mode="w"),
     {"max_extracted_gib": 1.5 / 1024}, "b.bin", "max_extracted_gib"),
], ids=["zip-ratio", "zip-total", "tar-ratio", "tar-total"])
def test_an_archive_that_expands_too_far_is_refused_before_writing(tmp_path: Path, make, limits: dict[str, float],
                                                                   member: str, param: str) -> None:
    archive = make(tmp_path)
    before = all_files(tmp_path)
    with pytest.raises(ArchiveError) as info:
        safe_extract(archive, tmp_path / "work" / "out", dataclasses.replace(ARCHIVE_LIMITS, **limits))
    message = str(info.value)
    assert str(archive) in message and repr(member) in message and "nothing was extracted" in message
    assert f"raise data.archive_limits.{param} in params.yaml" in message
    assert all_files(tmp_path) == before  # checked before anything, even the destination's parent, exists


def test_acquire_passes_the_archive_limits_of_params(tmp_path: Path, tiny_config) -> None:
    archive = make_tar(tmp_path / "dtd-r1.0.1.tar.gz", {"dtd/images/banded/banded_0001.jpg": os.urandom(MIB)})
    cfg = tiny_config("data.textures=dtd", "data.archive_limits.max_extracted_gib=0.0005")
    layout = Layout(tmp_path)
    with pytest.raises(ArchiveError, match=r"data\.archive_limits\.max_extracted_gib = 0\.0005"):
        acquire_textures(cfg, layout, archive=archive, sha256=sha256_file(archive), progress=False)
    assert not layout.textures.exists()


# -------------------------------------------------------------------------------------------- acquire


def test_acquire_images_mvtec_over_http(tmp_path: Path, file_server: FileServer, tiny_mvtec,
                                        tiny_config) -> None:
    source = tiny_mvtec(["bottle", "carpet"])
    archive = tar_folder(tmp_path / "mvtec.tar.gz", source, "mvtec_anomaly_detection")  # with a top-level dir
    url, sha = file_server.serve("mvtec.tar.gz", archive.read_bytes())
    cfg = tiny_config("data.categories=[bottle]", f"data.mvtec.url={url}", f"data.mvtec.sha256={sha}")
    layout = Layout(tmp_path / "project")
    root = layout.images
    assert acquire_images(cfg, layout, progress=False) == root
    assert sorted(p.name for p in root.iterdir()) == ["bottle"]  # only the requested categories
    files = scan_category(root, "bottle")
    assert len(files.train) == 3 and len(files.test) == 6
    manifest = json.loads(layout.images_manifest.read_text())
    assert manifest["source"] == "mvtec"
    assert (manifest["url"], manifest["file"], manifest["sha256"]) == (url, "mvtec.tar.gz", sha)
    assert manifest["totals"] == {"train": 3, "test": 6, "test_good": 2, "test_defective": 4, "masks": 4}
    assert (layout.archives / "mvtec.tar.gz").is_file()

    acquire_images(cfg, layout, progress=False)  # idempotent: the verified archive is reused
    assert len(file_server.requests) == 1
    assert scan_category(root, "bottle") == files
    assert [p.name for p in root.parent.iterdir() if p.name.startswith(".")] == []


def test_acquire_images_rejects_an_archive_without_the_category(tmp_path: Path, file_server: FileServer,
                                                                tiny_mvtec, tiny_config) -> None:
    archive = tar_folder(tmp_path / "m.tar.gz", tiny_mvtec(["carpet"]), "m")
    root = Layout(tmp_path).images
    cfg = tiny_config("data.categories=[bottle]")
    with pytest.raises(ValueError, match=r"lacks \['bottle'\]"):
        acquire_images(cfg, Layout(tmp_path), archive=archive, sha256=sha256_file(archive), progress=False)
    assert not root.exists()
    assert [p.name for p in root.parent.iterdir() if p.name.startswith(".")] == []


def test_acquire_textures_dtd_from_archive(tmp_path: Path, tiny_config) -> None:
    archive = make_tar(tmp_path / "dtd-r1.0.1.tar.gz", {
        "dtd/images/banded/banded_0001.jpg": b"a", "dtd/images/banded/banded_0002.jpg": b"b",
        "dtd/images/dotted/dotted_0001.jpg": b"c", "dtd/labels/labels_joint_anno.txt": b"x",
    })
    cfg = tiny_config("data.textures=dtd")
    layout = Layout(tmp_path)
    root = layout.textures
    acquire_textures(cfg, layout, archive=archive, sha256=sha256_file(archive), progress=False)
    assert {name: len(files) for name, files in scan_textures(root).items()} == {"banded": 2, "dotted": 1}
    manifest = json.loads(layout.textures_manifest.read_text())
    assert (manifest["classes"], manifest["images"], manifest["source"]) == (2, 3, "dtd")
    assert manifest["sha256"] == sha256_file(archive)
