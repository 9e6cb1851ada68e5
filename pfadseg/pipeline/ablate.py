"""``pfadseg ablate``: the paper's seven switch combinations as DVC experiments, then reports/ablation.md.

Three ways to run the grid: one after another in the workspace; through DVC's queue with ``--jobs N`` workers
(each stage on a GPU of its own, see :func:`pfadseg.device.claim_free_gpu`); or split over machines that share a
Git remote and a DVC remote (``--rows``/``--push`` on each, ``--pull`` on the one that renders).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pfadseg.config import Config, load_config
from pfadseg.device import PER_GPU_ENV
from pfadseg.errors import RunError, UsageError
from pfadseg.fsio import atomic_path
from pfadseg.paths import Layout
from pfadseg.pipeline.graph import write_graph
from pfadseg.pipeline.report import collect_runs, provenance
from pfadseg.pipeline.workspace import run_dvc
from pfadseg.report.ablation import (
    ADPS_EXPERIMENT,
    ADPS_OVERRIDES,
    ablation_chart,
    ablation_rows,
    missing_rows,
    parse_exp_show,
    render_ablation,
)

log = logging.getLogger(__name__)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # torch's intra-op pool follows OMP_NUM_THREADS


@dataclass(frozen=True)
class Experiment:
    """One experiment of the grid: its name and the ``-S`` overrides that make it."""

    name: str
    overrides: tuple[str, ...]


def plan_grid(rows: Sequence[int] | None = None, *, adps: bool = False,
              extra_overrides: Sequence[str] = ()) -> list[Experiment]:
    """The experiments of Table 4's ``rows`` (all seven by default), ADPS before row 7 with ``adps``.

    Row 7 (PFADSeg, the params.yaml default) comes last, so a sequential run leaves the workspace on it.
    """
    table = ablation_rows()
    known = [v.row for v in table]
    if rows is not None and (unknown := sorted(set(rows) - set(known))):
        raise UsageError(f"--rows {','.join(map(str, unknown))}: Table 4 has rows {known[0]} to {known[-1]}")
    chosen = [v for v in table if rows is None or v.row in rows]
    plan = [Experiment(v.name, (*v.overrides, *extra_overrides)) for v in chosen]
    if adps:
        at = len(plan) - 1 if chosen and chosen[-1].row == known[-1] else len(plan)
        plan.insert(at, Experiment(ADPS_EXPERIMENT, (*ADPS_OVERRIDES, *extra_overrides)))
    return plan


def run_experiment(layout: Layout, name: str, overrides: Sequence[str], *, capture: bool = True,
                   queue: bool = False) -> str:
    """``dvc exp run [--queue] -n NAME -S ...`` after writing the graph of the experiment's architecture."""
    write_graph(load_config(layout.root / "params.yaml", overrides), layout.root)
    args = [a for o in overrides for a in ("-S", o)]
    return run_dvc(layout.root, "exp", "run", *(["--queue"] if queue else []), "-n", name, *args,
                   capture=capture).stdout or ""


def run_sequentially(layout: Layout, plan: Sequence[Experiment]) -> None:
    """Run the experiments one after another in the workspace."""
    for number, exp in enumerate(plan, 1):
        log.info("ablation: running %s (%d of %d)", exp.name, number, len(plan))
        run_experiment(layout, exp.name, exp.overrides, capture=False)


def available_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_env(jobs: int, cores: int | None = None, per_gpu: int = 1) -> dict[str, str]:
    """The queue workers' environment: each worker's CPU threads are the machine's cores divided by ``jobs``, and
    up to ``per_gpu`` workers may share one GPU."""
    threads = str(max(1, (cores or available_cores()) // jobs))
    return {**os.environ, **dict.fromkeys(THREAD_VARIABLES, threads), PER_GPU_ENV: str(per_gpu)}


@dataclass
class QueueProgress:
    """States of the grid's experiments in DVC's queue (``queued``, ``running``, ``success``, ``failed``)."""

    states: dict[str, str]
    logs: dict[str, str]  # experiment -> its worker's log file, as DVC records it

    def counts(self) -> Counter[str]:
        return Counter(self.states.values())

    def line(self) -> str:
        c = self.counts()
        return (f"grid: {c['success']}/{len(self.states)} finished, {c['running']} running, {c['queued']} queued, "
                f"{c['failed']} failed")

    @property
    def done(self) -> bool:
        return not {"queued", "running"} & set(self.states.values())


def queue_states(exp_show: list[dict[str, Any]], names: Sequence[str]) -> QueueProgress:
    """Each of ``names``'s state in ``dvc exp show --json``: a finished experiment has no executor left."""
    states: dict[str, str] = dict.fromkeys(names, "queued")
    logs: dict[str, str] = {}
    for entry in exp_show:
        for exp in entry.get("experiments") or []:
            name = exp.get("name")
            if name not in states:
                continue
            executor = exp.get("executor") or {}
            states[name] = executor.get("state") or "success"
            if log_file := (executor.get("local") or {}).get("log"):
                logs[name] = log_file
    return QueueProgress(states, logs)


def failure_reason(log_file: str | None) -> str:
    """The last error line of a failed experiment's log, or why there is none."""
    if not log_file or not Path(log_file).is_file():
        return "its worker left no log"
    errors = [line.strip() for line in Path(log_file).read_text(errors="replace").splitlines()
              if line.startswith(("ERROR", "error:"))]
    return errors[-1] if errors else f"no error line in its log {log_file}"


def active_workers(layout: Layout) -> int:
    """How many DVC queue workers are running (``dvc queue status``)."""
    status = run_dvc(layout.root, "queue", "status").stdout or ""
    match = re.search(r"Worker status:\s*(\d+) active", status)
    return int(match[1]) if match else 0


def watch_queue(layout: Layout, names: Sequence[str], poll_s: float = 5.0, idle_polls: int = 3) -> QueueProgress:
    """Poll the queue until every experiment has finished or failed, logging each change of the counts.

    Experiments left queued while no worker runs (``idle_polls`` polls in a row) end the wait as failures.
    """
    last, idle = "", 0
    while True:
        progress = queue_states(json.loads(run_dvc(layout.root, "exp", "show", "--json").stdout), names)
        if (line := progress.line()) != last:
            log.info("%s", line)
            last = line
        if progress.done:
            return progress
        counts = progress.counts()
        idle = idle + 1 if counts["running"] == 0 and active_workers(layout) == 0 else 0
        if idle >= idle_polls:
            for name, state in progress.states.items():
                if state == "queued":
                    progress.states[name] = "left queued"
            return progress
        time.sleep(poll_s)


def run_queued(layout: Layout, plan: Sequence[Experiment], jobs: int, poll_s: float = 5.0, per_gpu: int = 1
               ) -> QueueProgress:
    """Queue the experiments (``dvc exp run --queue``), start ``jobs`` workers (up to ``per_gpu`` on one GPU) and
    wait for them."""
    workspace_cfg = load_config(layout.root / "params.yaml")
    try:
        for exp in plan:
            run_experiment(layout, exp.name, exp.overrides, queue=True)  # the queue stores each one's dvc.yaml
    finally:
        write_graph(workspace_cfg, layout.root)  # the workspace keeps the graph of its own params
    env = worker_env(jobs, per_gpu=per_gpu)
    log.info("ablation: %d experiments queued; starting %d workers with %s=%s, up to %d per GPU", len(plan), jobs,
             THREAD_VARIABLES[0], env[THREAD_VARIABLES[0]], per_gpu)
    run_dvc(layout.root, "queue", "start", "-j", str(jobs), env=env)
    return watch_queue(layout, [exp.name for exp in plan], poll_s)


def queue_failures(progress: QueueProgress) -> list[str]:
    """One line per experiment that did not finish: its name, what happened and where to look."""
    lines = []
    for name, state in progress.states.items():
        if state == "failed":
            lines.append(f"{name}: failed: {failure_reason(progress.logs.get(name))} (dvc queue logs {name})")
        elif state == "left queued":
            lines.append(f"{name}: left queued with no worker running (dvc queue start, or dvc queue remove {name})")
    return lines


def push_experiments(layout: Layout, remote: str, plan: Sequence[Experiment]) -> None:
    """``dvc exp push REMOTE NAMES``: the experiments' Git refs and their cached outputs, for a coordinator."""
    run_dvc(layout.root, "exp", "push", "--force", remote, *(exp.name for exp in plan), capture=False)


def pull_experiments(layout: Layout, remote: str) -> None:
    """``dvc exp pull --no-cache REMOTE``: every experiment on the current commit (the report needs only metrics)."""
    run_dvc(layout.root, "exp", "pull", "--force", "--no-cache", remote, capture=False)


def render_ablation_report(cfg: Config, layout: Layout) -> list[int]:
    """reports/ablation.md and reports/figures/ablation.png from ``dvc exp show --json``; the rows missing."""
    results = parse_exp_show(json.loads(run_dvc(layout.root, "exp", "show", "--json").stdout))
    prov = provenance(cfg, layout, collect_runs(cfg, layout))
    missing = missing_rows(results)
    with atomic_path(layout.reports / "ablation.md") as tmp:
        tmp.write_text(render_ablation(results, prov))
    ablation_chart(results, layout.reports / "figures" / "ablation.png")
    log.info("ablation: %d experiments with results -> %s%s", len(results), layout.reports / "ablation.md",
             f"; rows not run: {', '.join(map(str, missing))}" if missing else "")
    return missing



def run_grid(layout: Layout, plan: Sequence[Experiment], *, run: bool = True, jobs: int | None = None,
             per_gpu: int = 1, push: str | None = None, pull: str | None = None) -> list[int]:
    """Run ``plan`` (queued over ``jobs`` workers, up to ``per_gpu`` on one GPU, or in the workspace), push it,
    pull others', render the report.

    Returns the Table 4 rows still missing. Failed experiments are named after the report is rendered from the
    ones that finished.
    """
    failures: list[str] = []
    if run and plan:
        if jobs:
            failures = queue_failures(run_queued(layout, plan, jobs, per_gpu=per_gpu))
        else:
            run_sequentially(layout, plan)
        if push and not failures:
            push_experiments(layout, push, plan)
    if pull:
        pull_experiments(layout, pull)
    missing = render_ablation_report(load_config(layout.root / "params.yaml"), layout)
    if failures:
        raise RunError("ablation: experiments that did not finish:\n  " + "\n  ".join(failures))
    return missing
