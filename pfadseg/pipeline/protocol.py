"""``pfadseg run``: the main protocol with its category x seed runs spread over DVC's queue, then assembled.

``dvc repro`` runs one stage at a time. Here the shared stages (params check, acquisition, anomaly bank) run once
in the workspace; each category x seed run (its training stages, ``calibrate`` and ``evaluate``) is queued as a
DVC experiment of those targets, with no param changed, so ``jobs`` queue workers train them at once (up to
``per_gpu`` on one GPU). Workers save every stage they run in DVC's run cache, under the key the workspace's own
stage has (the per-run stages read no list of categories or seeds), so the workspace's ``dvc repro`` then
restores each run's outputs from it, trains nothing, and renders ``reports/tables.md`` as a serial run would.

Across machines: each runs its share (``--categories``) and pushes outputs and run cache to a DVC remote
(``--push``); one pulls the run cache (``--pull``, the default remote) and assembles with ``dvc repro --pull``,
which fetches each restored stage's outputs (DVC carries no ``cache: false`` output, so evaluation, whose metrics
Git tracks, reruns there; training does not). The protocol record (:attr:`Layout.protocol_record`) says where
each run was computed and the wall time of the whole.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pfadseg.arch.registry import architecture
from pfadseg.config import Config, load_config
from pfadseg.errors import RunError, UsageError
from pfadseg.fsio import atomic_path, read_json
from pfadseg.paths import Layout
from pfadseg.pipeline.graph import stages_for, write_graph
from pfadseg.pipeline.queue import Experiment, QueueProgress, queue_failures, run_queued
from pfadseg.pipeline.workspace import run_dvc

log = logging.getLogger(__name__)
LABEL = "protocol"
RAN = re.compile(r"Running stage '([^']+)'")
RESTORED = re.compile(r"Stage '([^']+)' is cached - skipping run")


@dataclass(frozen=True)
class Run:
    """One category x seed run of the protocol: its per-run stages, as DVC names them."""

    category: str
    seed: int
    stages: tuple[str, ...]

    @property
    def experiment(self) -> Experiment:
        """The queued experiment that computes it: the last stages as targets (DVC runs what they need)."""
        return Experiment(f"{LABEL}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', self.category)}-{self.seed}",
                          targets=self.stages[-2:])


def plan_runs(cfg: Config, categories: Sequence[str] | None = None) -> list[Run]:
    """The protocol's runs (``data.categories`` x ``seeds``), or those of ``categories`` (a machine's share)."""
    if categories is not None and (unknown := [c for c in categories if c not in cfg.data.categories]):
        raise UsageError(f"--categories {','.join(unknown)}: not in data.categories of params.yaml "
                         f"({', '.join(cfg.data.categories)})")
    per_run = [stage.name for stage in stages_for(cfg) if stage.per_run]
    return [Run(category, seed, tuple(f"{name}@{category}-{seed}" for name in per_run))
            for category in cfg.data.categories if categories is None or category in categories
            for seed in cfg.seeds]


def shared_stages(cfg: Config) -> list[str]:
    """The stages every run reads (params check, acquisition, bank): run once, in the workspace."""
    stages = stages_for(cfg)
    first_run = next(i for i, stage in enumerate(stages) if stage.per_run)
    return [stage.name for stage in stages[:first_run]]


def pending(layout: Layout, runs: Sequence[Run]) -> list[Run]:
    """The runs whose stages are not up to date in the workspace (``dvc status``): never run, failed, or not yet
    restored from the run cache (a queue worker then restores instead of training)."""
    if not runs:
        return []
    status = json.loads(run_dvc(layout.root, "status", "--json", *(s for r in runs for s in r.stages)).stdout or "{}")
    return [run for run in runs if any(stage in status for stage in run.stages)]


def reproduce(layout: Layout, *targets: str, pull: bool = False) -> tuple[list[str], list[str]]:
    """``dvc repro [--pull] [TARGETS]`` in the workspace; the stages it ran and those it restored from the run
    cache (with ``pull``, fetching a restored stage's outputs from the default remote)."""
    out = run_dvc(layout.root, "repro", *(["--pull"] if pull else []), *targets).stdout or ""
    log.info("%s", out.strip())
    return RAN.findall(out), RESTORED.findall(out)


def pull_run_cache(layout: Layout, remote: str) -> None:
    """Fetch what other machines pushed to ``remote``: its run-cache entries now; each restored stage's outputs
    during ``dvc repro --pull``, which fetches from the default remote only, so ``remote`` must be it."""
    try:
        default = run_dvc(layout.root, "remote", "default").stdout.strip()
    except RunError:  # none set
        default = ""
    if default != remote:
        raise UsageError(f"--pull {remote}: dvc repro fetches the outputs it restores from the default remote "
                         f"({default or 'none set'}); make it {remote} with `dvc remote default {remote}`")
    run_dvc(layout.root, "pull", "--run-cache", "--allow-missing", "-r", remote, capture=False)


def _record(cfg: Config, layout: Layout, runs: Sequence[Run], computed: dict[str, str], wall_s: float,
            jobs: int | None, per_gpu: int) -> str:
    """The protocol record: each run, where it was computed (a queue worker or the workspace of this command, or
    earlier or elsewhere: restored from the run cache; or not finished), its device and times; the wall time of
    the whole."""
    lines = ["# Protocol runs", "",
             f"{len(runs)} runs ({len(cfg.data.categories)} categories x {len(cfg.seeds)} seeds); "
             f"`pfadseg run` wall time {wall_s:.0f} s"
             + (f" with {jobs} queue workers (up to {per_gpu} per GPU)." if jobs else " in the workspace."), "",
             "| category | seed | computed | device | training s | evaluate s |", "|---|---|---|---|---|---|"]
    for run in runs:
        metrics_file = layout.metrics(run.category, run.seed)
        metrics: dict[str, Any] = read_json(metrics_file) if metrics_file.is_file() else {}
        wall = metrics.get("wall_time_s", {})
        lines.append(f"| {run.category} | {run.seed} | {computed.get(run.experiment.name, 'run cache')} | "
                     f"{metrics.get('device', '?')} | {wall.get('training', float('nan')):.1f} | "
                     f"{wall.get('evaluate', float('nan')):.1f} |")
    text = "\n".join(lines) + "\n"
    with atomic_path(layout.protocol_record) as tmp:
        tmp.write_text(text)
    return text


def run_protocol(layout: Layout, *, jobs: int | None = None, per_gpu: int = 1,
                 categories: Sequence[str] | None = None, push: str | None = None, pull: str | None = None,
                 run: bool = True) -> dict[str, Any]:
    """Run the protocol (module doc): the shared stages, the pending runs over ``jobs`` queue workers (in the
    workspace when ``jobs`` is None), then assemble. With ``categories`` (a machine's share) only those runs are
    computed, restored and pushed; the report waits for the machine that assembles them all (``pull``).

    Returns what ran: ``queued`` (experiment names), ``trained_in_workspace`` and ``restored`` (stage names).
    Failed runs are named in a :class:`RunError` after the finished ones are restored into the workspace; rerun
    the command to redo them (finished runs are restored, not trained again).
    """
    began = time.perf_counter()
    cfg = load_config(layout.root / "params.yaml")
    write_graph(cfg, layout.root)
    runs = plan_runs(cfg, categories)
    if pull:
        pull_run_cache(layout, pull)
    computed: dict[str, str] = {}  # experiment name -> where this command computed it
    failures: list[str] = []
    queued: list[str] = []
    if run and jobs:
        run_dvc(layout.root, "repro", *shared_stages(cfg), capture=False)
        todo = pending(layout, runs)
        queued = [r.experiment.name for r in todo]
        if todo:
            progress: QueueProgress = run_queued(layout, [r.experiment for r in todo], jobs, per_gpu=per_gpu,
                                                 label=LABEL)
            failures = queue_failures(progress)
            computed = {name: "queue worker" for name, state in progress.states.items() if state == "success"}
    unfinished = set(queued) - set(computed)
    computed.update(dict.fromkeys(unfinished, "not finished"))
    if unfinished or categories is not None:  # restore what finished; the report waits for every run
        done = [s for r in runs if r.experiment.name not in unfinished for s in r.stages]
        ran, restored = reproduce(layout, *done, pull=bool(pull)) if done else ([], [])
    else:
        ran, restored = reproduce(layout, pull=bool(pull)) if run or pull else ([], [])
    training = set(architecture(cfg.model.arch).train_stages)
    trained = sorted(s for s in ran if s.split("@")[0] in training)
    for r in runs:
        if r.experiment.name not in computed and any(s in trained for s in r.stages):
            computed[r.experiment.name] = "workspace"
        elif r.experiment.name not in computed and any(s in ran for s in r.stages):
            # restored models; evaluation reruns where its Git-tracked metrics file did not come along (a remote
            # holds DVC's cache only)
            computed[r.experiment.name] = "run cache, evaluated here"
    if push and not failures:
        run_dvc(layout.root, "push", "--run-cache", "-r", push, capture=False)
    text = _record(cfg, layout, runs, computed, time.perf_counter() - began, jobs if run else None, per_gpu)
    log.info("protocol: %d runs queued, %d stages trained in the workspace, %d restored from the run cache -> %s\n%s",
             len(queued), len(trained), len(restored), layout.protocol_record, text)
    if failures:
        raise RunError("protocol: runs that did not finish (rerun the command to redo them):\n  "
                       + "\n  ".join(failures))
    return {"queued": queued, "trained_in_workspace": trained, "restored": restored}
