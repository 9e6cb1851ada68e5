"""Reports name the project's revision: a checkout's own commit, or in a workspace copy the project's."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from pfadseg.config import Config, profile_overrides
from pfadseg.paths import Layout
from pfadseg.pipeline.report import provenance
from pfadseg.pipeline.workspace import make_workspace
from tests.conftest import REPO


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@localhost", *args], cwd=root,
                          check=True, capture_output=True, text=True).stdout.strip()


def test_a_checkout_reports_its_commit_and_whether_it_is_dirty(
    tmp_path: Path, make_config: Callable[..., Config]
) -> None:
    (tmp_path / "code.py").write_text("x = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "code.py")
    _git(tmp_path, "commit", "-qm", "first")
    head = _git(tmp_path, "rev-parse", "--short", "HEAD")
    cfg = make_config()
    assert provenance(cfg, Layout(tmp_path), {}).lines["Revision"] == head
    (tmp_path / "code.py").write_text("x = 2\n")
    assert provenance(cfg, Layout(tmp_path), {}).lines["Revision"] == f"{head}+dirty"
    assert provenance(cfg, Layout(tmp_path / "elsewhere"), {}).lines["Revision"] == "unknown"


def test_a_workspace_copy_reports_the_projects_revision_not_its_own_commit(
    tmp_path: Path, make_config: Callable[..., Config]
) -> None:
    workspace = make_workspace(REPO, tmp_path / "demo", profile_overrides(REPO / "profiles" / "ci.yaml"))
    dirty = bool(_git(REPO, "status", "--porcelain", "--untracked-files=no"))
    project = _git(REPO, "rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")
    revision = provenance(make_config(), Layout(workspace), {}).lines["Revision"]
    assert revision == f"{project} (project {REPO.resolve()}, copied into this workspace)"
    assert _git(workspace, "rev-parse", "--short", "HEAD") not in revision, "not the workspace's own commit"
