"""A self-contained copy of the project with its own params (the offline demo and the end-to-end CI run)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from pfadseg.config import apply_overrides, config_from_dict, read_params
from pfadseg.errors import RunError
from pfadseg.pipeline.graph import write_graph
from pfadseg.revision import record_source

# What a pipeline needs besides params.yaml: the stage scripts, the code its deps hash, the DVC settings.
PROJECT_ITEMS = ("dvc.yaml", ".dvcignore", "stages", "pfadseg", "profiles")


def _ignore(_: str, names: list[str]) -> set[str]:
    return {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}


def tool_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with PATH starting with this interpreter's folder, so dvc and
    ``python`` match it."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def make_workspace(project: Path, dest: Path, overrides: Sequence[str]) -> Path:
    """Copy the project into ``dest`` (a new git + DVC repository) with ``params.yaml`` + ``overrides``, the
    dvc.yaml of their architecture and a record of the project's revision (``pfadseg.revision``)."""
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest}: already exists and is not empty; remove it or choose another folder")
    params = apply_overrides(read_params(project / "params.yaml"), overrides)
    dest.mkdir(parents=True, exist_ok=True)
    for item in PROJECT_ITEMS:
        src = project / item
        if src.is_dir():
            shutil.copytree(src, dest / item, ignore=_ignore)
        elif src.is_file():
            shutil.copy2(src, dest / item)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_graph(config_from_dict(params), dest)  # the graph of the workspace's own architecture
    record_source(project, dest)  # its reports name the project's revision, not the workspace's own commit
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=dest, check=True, env=tool_env(), capture_output=True)
    commit_all(dest, "workspace")
    return dest


def commit_all(workspace: Path, message: str) -> None:
    """``git add -A`` and commit (e.g. the demo's baseline results, so ``dvc exp show`` sets experiments beside
    them); nothing when nothing changed."""
    for cmd in (["git", "add", "-A"], ["git", "-c", "user.name=pfadseg", "-c", "user.email=pfadseg@localhost",
                                       "commit", "-qm", message, "--allow-empty"]):
        subprocess.run(cmd, cwd=workspace, check=True, env=tool_env(), capture_output=True)


def run_dvc(workspace: Path, *args: str, capture: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``dvc ARGS`` in ``workspace`` with this interpreter's tools (in ``env``, default this process's);
    raise with DVC's output on failure."""
    proc = subprocess.run(["dvc", *args], cwd=workspace, env=tool_env(env), text=True,
                          capture_output=capture, check=False)
    if proc.returncode != 0:
        detail = f"\n{proc.stdout}\n{proc.stderr}" if capture else ""
        raise RunError(f"dvc {' '.join(args)} failed in {workspace} (exit {proc.returncode}){detail}")
    return proc
