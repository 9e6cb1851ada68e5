"""``pfadseg run --jobs 2`` for real on the CI profile (2 categories): both runs train in two queue workers at once,
a run killed mid-training is redone by rerunning the command and nothing else is, the assembled tables.md equals a
serial ``dvc repro``'s in every number, and another machine restores every training from the pushed run cache."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pfadseg.config import profile_overrides
from pfadseg.paths import Layout
from pfadseg.pipeline.queue import worker_env
from pfadseg.pipeline.workspace import make_workspace, run_dvc, tool_env
from tests.conftest import REPO

pytestmark = pytest.mark.slow
JOBS = 2
VICTIM = "stages.train_seg carpet 0"  # the command line of carpet's seg-training stage


def _table_rows(tables: str) -> list[str]:
    """The numeric rows of tables.md, without the header text that names the run."""
    return [line for line in tables.splitlines() if line.startswith("|")]


def _stage_pids(pattern: str, root: Path) -> list[int]:
    """Processes matching ``pattern`` that run in ``root`` or below (a queue worker's copy lies in .dvc/tmp/exps),
    so that other tests' stages of the same name are never touched."""
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False).stdout.split()
    pids = []
    for pid in map(int, found):
        try:
            if Path(f"/proc/{pid}/cwd").resolve().is_relative_to(root.resolve()):
                pids.append(pid)
        except OSError:  # ended meanwhile
            continue
    return pids


def _watch_and_kill(proc: subprocess.Popen[str], root: Path, timeout_s: float = 600) -> bool:
    """Until carpet's seg training starts: whether the two categories' training stages ever ran at the same time.
    Then SIGKILL that stage's process, as a crash or an out-of-memory kill would."""
    deadline, overlapped = time.monotonic() + timeout_s, False
    while proc.poll() is None and time.monotonic() < deadline:
        overlapped = overlapped or all(_stage_pids(rf"stages\.train_\w+ {category} 0", root)
                                       for category in ("bottle", "carpet"))
        if victims := _stage_pids(VICTIM, root):
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            return overlapped
        time.sleep(0.05)
    raise AssertionError("carpet's seg training never started")


def test_queued_runs_train_at_once_a_killed_run_is_redone_the_tables_equal_a_serial_run_and_another_machine_restores(
        tmp_path: Path) -> None:
    overrides = [*profile_overrides(REPO / "profiles/ci.yaml"), "seeds=[0]"]
    serial, queued = make_workspace(REPO, tmp_path / "serial", overrides), make_workspace(REPO, tmp_path / "queued",
                                                                                          overrides)
    env = worker_env(JOBS)  # the serial run with a queue worker's threads: the same fp32 rounding
    run_dvc(serial, "repro", env=env)
    first = subprocess.Popen(["pfadseg", "run", "--jobs", str(JOBS)], cwd=queued, env=tool_env(), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert _watch_and_kill(first, queued), "the two categories trained one after the other"
    out = first.communicate()[0]
    assert first.returncode == 1, out
    assert "protocol-carpet-0: failed" in out and "protocol-bottle-0: failed" not in out, out
    assert "| carpet | 0 | not finished |" in Layout(queued).protocol_record.read_text()

    second = subprocess.run(["pfadseg", "run", "--jobs", str(JOBS)], cwd=queued, env=tool_env(), text=True,
                            capture_output=True, check=False)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out
    assert "protocol: 1 runs queued, 0 stages trained in the workspace" in out, out
    record = Layout(queued).protocol_record.read_text()
    assert "| bottle | 0 | run cache |" in record and "| carpet | 0 | queue worker |" in record, record
    serial_rows = _table_rows((serial / "reports/tables.md").read_text())
    assert _table_rows((queued / "reports/tables.md").read_text()) == serial_rows

    # Another machine: the queued workspace pushes outputs and run cache; a fresh copy pulls and assembles.
    other = make_workspace(REPO, tmp_path / "other", overrides)
    for ws in (queued, other):
        run_dvc(ws, "remote", "add", "-d", "store", str(tmp_path / "store"))
    run_dvc(queued, "push", "--run-cache")
    third = subprocess.run(["pfadseg", "run", "--no-run", "--pull", "store"], cwd=other, env=tool_env(env),
                           text=True, capture_output=True, check=False)
    out = third.stdout + third.stderr
    assert third.returncode == 0, out
    assert "0 stages trained in the workspace" in out and "Stage 'train_seg@carpet-0' is cached" in out, out
    assert _table_rows((other / "reports/tables.md").read_text()) == serial_rows
