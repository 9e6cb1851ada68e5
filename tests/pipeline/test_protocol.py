"""``pfadseg run``'s plan and flow, with DVC faked: which runs it queues, what it restores, what it reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pfadseg.config import config_from_dict, profile_overrides, read_params
from pfadseg.errors import RunError, UsageError
from pfadseg.paths import Layout
from pfadseg.pipeline import protocol
from pfadseg.pipeline.protocol import Run, plan_runs, shared_stages
from pfadseg.pipeline.queue import QueueProgress
from tests.conftest import REPO

CI = [*profile_overrides(REPO / "profiles/ci.yaml"), "seeds=[0,1]"]


def _cfg(*overrides: str) -> Any:
    return config_from_dict(read_params(REPO / "params.yaml"), [*CI, *overrides])


def test_the_plan_has_one_run_per_category_and_seed_with_its_own_stages() -> None:
    runs = plan_runs(_cfg())
    assert [(r.category, r.seed) for r in runs] == [("bottle", 0), ("bottle", 1), ("carpet", 0), ("carpet", 1)]
    assert runs[0].stages == ("train_student@bottle-0", "train_seg@bottle-0", "calibrate@bottle-0",
                              "evaluate@bottle-0")
    assert runs[0].experiment.name == "protocol-bottle-0" and runs[0].experiment.overrides == ()
    assert runs[0].experiment.targets == ("calibrate@bottle-0", "evaluate@bottle-0")
    assert [r.stages[0] for r in plan_runs(_cfg("model.arch=adps"))][:1] == ["train_adps@bottle-0"]
    assert [(r.category, r.seed) for r in plan_runs(_cfg(), ["carpet"])] == [("carpet", 0), ("carpet", 1)]
    with pytest.raises(UsageError, match=r"--categories cable: not in data.categories"):
        plan_runs(_cfg(), ["cable"])
    assert Run("my part/2", 0, ()).experiment.name == "protocol-my_part_2-0", "a valid Git ref name"


def test_the_shared_stages_run_once_before_any_run() -> None:
    assert shared_stages(_cfg()) == ["check_params", "acquire_images", "acquire_textures", "bank"]


class FakeDvc:
    """Records DVC calls; ``dvc status`` reports ``stale`` stages; ``dvc repro`` says it restored its targets;
    ``dvc remote default`` names ``default``; a whole ``dvc repro`` runs ``ran``."""

    def __init__(self, stale: set[str], default: str = "store", ran: tuple[str, ...] = ()) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.stale = stale
        self.default = default
        self.ran = ran

    def __call__(self, _root: Path, *args: str, **_: Any) -> Any:
        self.calls.append(args)
        out = ""
        if args[0] == "status":
            out = json.dumps({s: ["changed outs"] for s in args[2:] if s in self.stale})
        elif args[:2] == ("remote", "default"):
            out = self.default + "\n"
        elif args[0] == "repro" and len(args) > 1 and "@" in args[1]:
            out = "".join(f"Stage '{s}' is cached - skipping run, checking out outputs\n" for s in args[1:])
        elif args[0] == "repro":
            out = "".join(f"Running stage '{s}':\n" for s in self.ran)
        return type("Done", (), {"stdout": out})()


@pytest.fixture
def workspace(tmp_path: Path) -> Layout:
    return Layout(tmp_path)


def _patch(monkeypatch: pytest.MonkeyPatch, dvc: FakeDvc, states: dict[str, str]) -> list[dict[str, Any]]:
    queued: list[dict[str, Any]] = []

    def fake_run_queued(_layout: Layout, plan: list[Any], jobs: int, **kwargs: Any) -> QueueProgress:
        queued.append({"names": [e.name for e in plan], "jobs": jobs, **kwargs})
        return QueueProgress({e.name: states.get(e.name, "success") for e in plan}, {}, "protocol")

    monkeypatch.setattr(protocol, "run_dvc", dvc)
    monkeypatch.setattr(protocol, "run_queued", fake_run_queued)
    monkeypatch.setattr(protocol, "write_graph", lambda *a: None)
    monkeypatch.setattr(protocol, "load_config", lambda _path: _cfg())
    return queued


def test_only_the_runs_not_up_to_date_are_queued_and_the_workspace_assembles(
        monkeypatch: pytest.MonkeyPatch, workspace: Layout) -> None:
    dvc = FakeDvc({"evaluate@carpet-1", "train_student@bottle-1"})
    queued = _patch(monkeypatch, dvc, {})
    result = protocol.run_protocol(workspace, jobs=2, per_gpu=2, push="store")
    assert queued == [{"names": ["protocol-bottle-1", "protocol-carpet-1"], "jobs": 2, "per_gpu": 2,
                       "label": "protocol"}]
    assert dvc.calls[0] == ("repro", "check_params", "acquire_images", "acquire_textures", "bank")
    assert ("repro",) in dvc.calls, "the whole pipeline is assembled (and the report rendered) in the workspace"
    assert dvc.calls[-1] == ("push", "--run-cache", "-r", "store")
    assert result["queued"] == ["protocol-bottle-1", "protocol-carpet-1"]
    record = workspace.protocol_record.read_text()
    assert "4 runs (2 categories x 2 seeds)" in record and "with 2 queue workers (up to 2 per GPU)" in record
    assert "| bottle | 1 | queue worker |" in record and "| bottle | 0 | run cache |" in record


def test_a_failed_run_is_named_after_the_finished_ones_are_restored(
        monkeypatch: pytest.MonkeyPatch, workspace: Layout) -> None:
    dvc = FakeDvc({"evaluate@bottle-0", "evaluate@carpet-0", "evaluate@bottle-1", "evaluate@carpet-1"})
    _patch(monkeypatch, dvc, {"protocol-carpet-1": "failed"})
    with pytest.raises(RunError, match=r"rerun the command to redo them\):\n  protocol-carpet-1: failed"):
        protocol.run_protocol(workspace, jobs=2, push="store")
    restore = next(c for c in dvc.calls if c[0] == "repro" and len(c) > 1 and "@" in c[1])
    assert "evaluate@carpet-0" in restore and not any("carpet-1" in s for s in restore), "the failed run waits"
    assert ("repro",) not in dvc.calls, "no report, and nothing trained in the workspace"
    assert not any(c[0] == "push" for c in dvc.calls)
    assert "| carpet | 1 | not finished |" in workspace.protocol_record.read_text()


def test_a_machines_share_is_computed_restored_and_pushed_without_the_report(
        monkeypatch: pytest.MonkeyPatch, workspace: Layout) -> None:
    dvc = FakeDvc({"evaluate@carpet-0", "evaluate@carpet-1"})
    queued = _patch(monkeypatch, dvc, {})
    protocol.run_protocol(workspace, jobs=1, categories=["carpet"], push="store")
    assert queued[0]["names"] == ["protocol-carpet-0", "protocol-carpet-1"]
    restore = next(c for c in dvc.calls if c[0] == "repro" and len(c) > 1 and "@" in c[1])
    assert all("carpet" in s for s in restore[1:]) and ("repro",) not in dvc.calls
    assert dvc.calls[-1] == ("push", "--run-cache", "-r", "store")


def test_the_assembling_machine_pulls_and_reproduces_without_running(
        monkeypatch: pytest.MonkeyPatch, workspace: Layout) -> None:
    dvc = FakeDvc(set(), ran=("evaluate@bottle-0", "train_student@carpet-1", "evaluate@carpet-1", "report"))
    queued = _patch(monkeypatch, dvc, {})
    protocol.run_protocol(workspace, pull="store", run=False)
    assert dvc.calls == [("remote", "default"), ("pull", "--run-cache", "--allow-missing", "-r", "store"),
                         ("repro", "--pull")] and queued == [], "restored outputs come from the remote"
    record = workspace.protocol_record.read_text()
    assert "| bottle | 0 | run cache, evaluated here |" in record and "| carpet | 1 | workspace |" in record
    assert "| bottle | 1 | run cache |" in record


def test_pulling_from_a_remote_that_is_not_the_default_is_refused_before_anything_runs(
        monkeypatch: pytest.MonkeyPatch, workspace: Layout) -> None:
    dvc = FakeDvc(set(), default="other")
    _patch(monkeypatch, dvc, {})
    with pytest.raises(UsageError, match=r"--pull store: .*default remote \(other\); .*dvc remote default store"):
        protocol.run_protocol(workspace, pull="store", run=False)
    assert dvc.calls == [("remote", "default")]
