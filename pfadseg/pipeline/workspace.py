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
from pfadseg.pipeline.graph import write_graph

# What a pipeline needs besides params.yaml: the stage scripts, the code its deps hash, the DVC settings.
PROJECT_ITEMS = ("dvc.yaml", ".dvcignore", "stages", "pfadseg", "profiles")


def _ignore(_: str, names: list[str]) -> set[str]:
    return {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}


def tool_env() -> dict[str, str]:
    """Environment whose PATH starts with this interpreter's folder, so dvc and ``python`` match it."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def make_workspace(project: Path, dest: Path, overrides: Sequence[str]) -> Path:
    """Copy the project into ``dest`` (a new git + DVC repository) with ``params.yaml`` + ``overrides`` and the
    dvc.yaml of their architecture."""
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
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=pfadseg", "-c", "user.email=pfadseg@localhost", "commit", "-qm",
                 "workspace"]):
        subprocess.run(cmd, cwd=dest, check=True, env=tool_env(), capture_output=True)
    return dest


def run_dvc(workspace: Path, *args: str, capture: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``dvc ARGS`` in ``workspace`` with this interpreter's tools; raise with DVC's output on failure."""
    proc = subprocess.run(["dvc", *args], cwd=workspace, env=tool_env(), text=True,
                          capture_output=capture, check=False)
    if proc.returncode != 0:
        detail = f"\n{proc.stdout}\n{proc.stderr}" if capture else ""
        raise RuntimeError(f"dvc {' '.join(args)} failed in {workspace} (exit {proc.returncode}){detail}")
    return proc
