"""The project revision a report names: this checkout's git commit or, in a workspace copy of the project
(``pfadseg demo``, the end-to-end CI run), the commit of the project it was copied from."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from pfadseg.fsio import read_json, write_json

SOURCE_RECORD = ".pfadseg-source.json"  # in a workspace: the project it was copied from and its revision


def git_state(root: Path) -> dict[str, Any] | None:
    """``{"revision": short commit hash, "dirty": tracked files changed}`` of the checkout at ``root``, or None
    outside a git checkout."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        changes = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"revision": rev, "dirty": bool(changes)}


def _describe(state: dict[str, Any] | None) -> str:
    return "unknown" if state is None else state["revision"] + ("+dirty" if state["dirty"] else "")


def record_source(project: Path, workspace: Path) -> None:
    """Write ``project``'s revision into ``workspace`` (a copy of it), for the reports made there."""
    write_json(workspace / SOURCE_RECORD, {"project": str(Path(project).resolve()), **(git_state(project) or {})})


def project_revision(root: Path) -> str:
    """The revision of the code at ``root``: short hash (``+dirty`` with uncommitted changes to tracked files) of
    the project it was copied from when ``root`` is a workspace, else of ``root``; ``unknown`` outside git."""
    record = Path(root) / SOURCE_RECORD
    if not record.is_file():
        return _describe(git_state(root))
    source = read_json(record)
    state = source if "revision" in source else None
    return f"{_describe(state)} (project {source['project']}, copied into this workspace)"
