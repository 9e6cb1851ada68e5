"""The ablation grid through DVC's queue on one machine, and split over two clones that share a Git remote and a
DVC remote: both render the same ablation.md (smallest profile, one category, rows 1 and 7)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from pfadseg.config import profile_overrides
from pfadseg.pipeline.queue import worker_env
from pfadseg.pipeline.workspace import make_workspace, tool_env
from tests.conftest import REPO

pytestmark = pytest.mark.slow
JOBS = 2
ROW_NAMES = ("ablation-1-none", "ablation-7-rcm-aff-pcar")


def _sh(cwd: Path, *cmd: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(env), text=True, capture_output=True, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with a bare Git remote ``origin`` and a local-folder DVC remote holding its data stages."""
    base = tmp_path_factory.mktemp("grid")
    overrides = [*profile_overrides(REPO / "profiles/ci.yaml"), "data.categories=[carpet]"]
    ws = make_workspace(REPO, base / "project", overrides)
    _sh(ws, "dvc", "remote", "add", "-d", "store", str(base / "dvc-store"))
    _sh(ws, "dvc", "repro", "acquire_images", "bank")  # data and anomaly bank, shared by every experiment and machine
    _sh(ws, "dvc", "push")
    _sh(ws, "git", "add", "-A")
    _sh(ws, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "data and remotes")
    _sh(base, "git", "clone", "-q", "--bare", str(ws), str(base / "origin.git"))
    _sh(ws, "git", "remote", "add", "origin", str(base / "origin.git"))
    return ws


def _comparable(report: str) -> str:
    """ablation.md without what names the machine's own commits (experiment revisions)."""
    return re.sub(r"^\| (ablation-\S+|adps) \| [0-9a-f?]+ \|", r"| \1 | REV |", report, flags=re.M)


@pytest.fixture(scope="module")
def queued_report(project: Path) -> str:
    out = _sh(project, "pfadseg", "ablate", "--rows", "1,7", "--jobs", str(JOBS))
    assert re.search(r"grid: 2/2 finished, 0 running, 0 queued, 0 failed", out), out
    assert "rows not run: 2, 3, 4, 5, 6" in out
    return (project / "reports/ablation.md").read_text()


def test_the_queue_runs_the_rows_and_the_report_names_each_experiment(queued_report: str) -> None:
    for name in ROW_NAMES:
        assert re.search(rf"^\| {name} \| [0-9a-f]{{7}} \| cpu \| 1 \|$", queued_report, flags=re.M), queued_report
    assert "Rows not run: 2, 3, 4, 5, 6" in queued_report
    row7 = next(line for line in queued_report.splitlines() if line.startswith("| 7 |"))
    assert "ablation-7-rcm-aff-pcar" in row7 and "not run" not in row7


def test_a_grid_split_over_two_clones_renders_the_same_report(project: Path, queued_report: str) -> None:
    """Two machines at once: each clone recomputes one row, one stage after another with a queue worker's threads,
    and pushes it; a third clone pulls both and renders the same report, so the numbers equal the queued run's bit
    for bit."""
    origin = project.parent / "origin.git"
    workers = {}
    for row, clone in (("1", "machine-a"), ("7", "machine-b")):
        _sh(project.parent, "git", "clone", "-q", str(origin), clone)
        _sh(project.parent / clone, "dvc", "pull", "--allow-missing")  # the data stages' outputs
        workers[clone] = subprocess.Popen(["pfadseg", "ablate", "--rows", row, "--push", "origin"],
                                          cwd=project.parent / clone, env=tool_env(worker_env(JOBS)), text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for clone, worker in workers.items():
        out = worker.communicate()[0]
        assert worker.returncode == 0, f"{clone}:\n{out}"
        assert "Running stage 'train_student@carpet-0'" in out, out  # computed there, not restored
    _sh(project.parent, "git", "clone", "-q", str(origin), "coordinator")
    coordinator = project.parent / "coordinator"
    out = _sh(coordinator, "pfadseg", "ablate", "--no-run", "--pull", "origin")
    assert "rows not run: 2, 3, 4, 5, 6" in out
    assert _comparable((coordinator / "reports/ablation.md").read_text()) == _comparable(queued_report)
