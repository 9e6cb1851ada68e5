"""The grid's plan, its queue workers' threads, and what the queue watcher makes of DVC's states and failures."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pfadseg.paths import Layout
from pfadseg.pipeline import ablate, queue
from pfadseg.pipeline.ablate import plan_grid
from pfadseg.pipeline.queue import Experiment, queue_failures, queue_states, worker_env


def test_the_plan_runs_the_chosen_rows_with_adps_before_row_7() -> None:
    names = [e.name for e in plan_grid(adps=True)]
    assert len(names) == 8 and names[0] == "ablation-1-none" and names[-2:] == ["adps", "ablation-7-rcm-aff-pcar"]
    chosen = plan_grid([1, 7], extra_overrides=["seeds=[0,1]"])
    assert [e.name for e in chosen] == ["ablation-1-none", "ablation-7-rcm-aff-pcar"]
    assert all(e.overrides[-1] == "seeds=[0,1]" for e in chosen)
    assert [e.name for e in plan_grid([2], adps=True)] == ["ablation-2-rcm", "adps"]
    with pytest.raises(ValueError, match="--rows 0,9: Table 4 has rows 1 to 7"):
        plan_grid([0, 1, 9])


@pytest.mark.parametrize(("cores", "jobs", "threads"), [(2, 2, "1"), (16, 4, "4"), (16, 3, "5"), (2, 8, "1")])
def test_each_worker_gets_the_cores_divided_by_the_jobs(cores: int, jobs: int, threads: str) -> None:
    env = worker_env(jobs, cores)
    assert env["OMP_NUM_THREADS"] == threads and env["MKL_NUM_THREADS"] == threads
    assert env["PATH"]  # the rest of the environment is kept
    assert env["PFADSEG_JOBS_PER_GPU"] == "1" and worker_env(jobs, cores, per_gpu=4)["PFADSEG_JOBS_PER_GPU"] == "4"


def _shown(states: dict[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
    experiments = [{"name": name, "executor": executor, "revs": [{"rev": "a" * 40, "name": name}]}
                   for name, executor in states.items()]
    return [{"rev": "workspace"}, {"rev": "b" * 40, "name": "main", "experiments": experiments}]


def test_queue_states_count_and_name_each_failure(tmp_path: Path) -> None:
    log_file = tmp_path / "run.out"
    log_file.write_text("Running stage 'train_seg@carpet-0':\nerror: boom\nERROR: failed to reproduce 'train_seg'\n")
    progress = queue_states(_shown({
        "ablation-1-none": None,  # finished: DVC keeps no executor
        "ablation-2-rcm": {"state": "running", "local": {"log": "x"}},
        "ablation-3-aff": {"state": "failed", "local": {"log": str(log_file)}},
        "ablation-4-pcar": {"state": "failed", "local": {"log": str(tmp_path / "gone.out")}},
        "someone-else": {"state": "failed"},
    }), ["ablation-1-none", "ablation-2-rcm", "ablation-3-aff", "ablation-4-pcar", "ablation-5-rcm-pcar"])
    assert progress.line() == "grid: 1/5 finished, 1 running, 1 queued, 2 failed" and not progress.done
    failures = queue_failures(progress)
    assert failures == [
        "ablation-3-aff: failed: ERROR: failed to reproduce 'train_seg' (dvc queue logs ablation-3-aff)",
        "ablation-4-pcar: failed: its worker left no log (dvc queue logs ablation-4-pcar)",
    ]


def test_experiments_left_queued_without_a_worker_end_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = _shown({"ablation-1-none": None, "ablation-7-rcm-aff-pcar": {"state": "queued"}})

    class Done:
        def __init__(self, stdout: str) -> None:
            self.stdout = stdout

    def fake_dvc(_root: Path, *args: str, **_: Any) -> Done:
        return Done(json.dumps(shown) if args[:2] == ("exp", "show") else "Worker status: 0 active, 0 idle\n")

    monkeypatch.setattr(queue, "run_dvc", fake_dvc)
    progress = queue.watch_queue(Layout(Path(".")), ["ablation-1-none", "ablation-7-rcm-aff-pcar"], poll_s=0)
    assert progress.states["ablation-7-rcm-aff-pcar"] == "left queued"
    assert queue_failures(progress) == ["ablation-7-rcm-aff-pcar: left queued with no worker running (dvc queue "
                                        "start, or dvc queue remove ablation-7-rcm-aff-pcar)"]


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_runs_a_killed_worker_left_running_end_the_wait_and_are_cleared_on_rerun(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """DVC calls a killed worker's experiment running for ever; once no worker and no experiment process is left,
    the wait ends with it named, and a rerun clears its task. One whose process still computes is waited for."""
    dead = {"state": "running", "local": {"pid": _dead_pid(), "log": "x"}}
    shown = _shown({"protocol-carpet-0": dead, "protocol-bottle-0": None})
    calls: list[tuple[str, ...]] = []

    def fake_dvc(_root: Path, *args: str, **_: Any) -> Any:
        calls.append(args)
        out = json.dumps(shown) if args[:2] == ("exp", "show") else "Worker status: 0 active, 0 idle\n"
        return type("Done", (), {"stdout": out})()

    monkeypatch.setattr(queue, "run_dvc", fake_dvc)
    names = ["protocol-carpet-0", "protocol-bottle-0"]
    progress = queue.watch_queue(Layout(Path(".")), names, poll_s=0)
    assert progress.states == {"protocol-carpet-0": "worker lost", "protocol-bottle-0": "success"}
    assert queue_failures(progress)[0].startswith("protocol-carpet-0: its queue worker stopped while it ran")
    queue.make_way(Layout(Path(".")), names)
    assert [c for c in calls if c[0] in ("queue", "exp") and c[1] in ("kill", "remove")] == [
        ("queue", "kill", "protocol-carpet-0"), ("queue", "remove", "protocol-carpet-0"),
        ("exp", "remove", "protocol-bottle-0")]
    alive = queue_states(_shown({"protocol-carpet-0": {"state": "running", "local": {"pid": os.getpid()}}}), names)
    assert alive.stopped() == []


def test_failures_are_raised_after_the_report_of_what_finished(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(ablate, "run_queued", lambda *a, **k: queue.QueueProgress({"x": "failed"}, {}))
    monkeypatch.setattr(ablate, "render_ablation_report", lambda *a: calls.append("rendered") or [3])
    monkeypatch.setattr(ablate, "load_config", lambda *a: None)
    with pytest.raises(RuntimeError, match="x: failed: its worker left no log"):
        ablate.run_grid(Layout(Path(".")), [Experiment("x")], jobs=2, push="origin")
    assert calls == ["rendered"]


def test_a_rerun_makes_way_for_the_names_it_runs_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """DVC refuses a name it holds on this commit and lists a failed task beside a new one of its name: both go
    first, and nothing of other names."""
    shown = _shown({"protocol-carpet-0": {"state": "failed"}, "protocol-bottle-0": None, "other": {"state": "failed"},
                    "done-other": None})
    calls: list[tuple[str, ...]] = []

    def fake_dvc(_root: Path, *args: str, **_: Any) -> Any:
        calls.append(args)
        return type("Done", (), {"stdout": json.dumps(shown)})()

    monkeypatch.setattr(queue, "run_dvc", fake_dvc)
    monkeypatch.setattr(queue, "load_config", lambda *a: None)
    monkeypatch.setattr(queue, "write_graph", lambda *a: None)
    monkeypatch.setattr(queue, "run_experiment", lambda _layout, exp, **k: calls.append(("queued", exp.name)))
    monkeypatch.setattr(queue, "watch_queue", lambda *a, **k: None)
    plan = [Experiment("protocol-carpet-0"), Experiment("protocol-bottle-0"), Experiment("protocol-bottle-1")]
    queue.run_queued(Layout(Path(".")), plan, 2)
    assert calls[1:4] == [("queue", "remove", "protocol-carpet-0"), ("exp", "remove", "protocol-bottle-0"),
                          ("queued", "protocol-carpet-0")]
