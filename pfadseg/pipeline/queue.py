"""DVC's experiment queue, as ``pfadseg ablate`` and ``pfadseg run`` use it: queue experiments, start N workers
(each with the machine's cores divided among them, up to K per GPU: :func:`pfadseg.device.claim_free_gpu`),
watch their states, and name each failure with its log's last error."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pfadseg.config import load_config
from pfadseg.device import PER_GPU_ENV
from pfadseg.paths import Layout
from pfadseg.pipeline.graph import write_graph
from pfadseg.pipeline.workspace import run_dvc

log = logging.getLogger(__name__)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # torch's intra-op pool follows OMP_NUM_THREADS
ABANDONED = {"queued": "left queued", "running": "worker lost"}  # a state when no worker or process is left


@dataclass(frozen=True)
class Experiment:
    """One DVC experiment: its name, the ``-S`` overrides that make it and the stages it reproduces (all: none
    named)."""

    name: str
    overrides: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()


def run_experiment(layout: Layout, exp: Experiment, *, capture: bool = True, queue: bool = False) -> str:
    """``dvc exp run [--queue] -n NAME -S ... [TARGETS]`` after writing the graph of the experiment's
    architecture."""
    write_graph(load_config(layout.root / "params.yaml", exp.overrides), layout.root)
    args = [a for o in exp.overrides for a in ("-S", o)]
    return run_dvc(layout.root, "exp", "run", *(["--queue"] if queue else []), "-n", exp.name, *args, *exp.targets,
                   capture=capture).stdout or ""


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
    """States of a batch of experiments in DVC's queue (``queued``, ``running``, ``success``, ``failed``)."""

    states: dict[str, str]
    logs: dict[str, str]  # experiment -> its worker's log file, as DVC records it
    label: str = "grid"  # what the progress line calls the batch
    pids: dict[str, int] = field(default_factory=dict)  # running experiment -> its process, as DVC records it

    def counts(self) -> Counter[str]:
        return Counter(self.states.values())

    def line(self) -> str:
        c = self.counts()
        return (f"{self.label}: {c['success']}/{len(self.states)} finished, {c['running']} running, "
                f"{c['queued']} queued, {c['failed']} failed")

    @property
    def done(self) -> bool:
        return not {"queued", "running"} & set(self.states.values())

    def stopped(self) -> list[str]:
        """The experiments DVC still calls running whose process has ended without its worker recording it (a
        killed worker leaves them so)."""
        return [name for name, state in self.states.items()
                if state == "running" and not _alive(self.pids.get(name))]


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def queue_states(exp_show: list[dict[str, Any]], names: Sequence[str], label: str = "grid") -> QueueProgress:
    """Each of ``names``'s state in ``dvc exp show --json``: a finished experiment has no executor left."""
    states: dict[str, str] = dict.fromkeys(names, "queued")
    logs: dict[str, str] = {}
    pids: dict[str, int] = {}
    for entry in exp_show:
        for exp in entry.get("experiments") or []:
            name = exp.get("name")
            if name not in states:
                continue
            executor = exp.get("executor") or {}
            states[name] = executor.get("state") or "success"
            local = executor.get("local") or {}
            if log_file := local.get("log"):
                logs[name] = log_file
            if (pid := local.get("pid")) is not None:
                pids[name] = int(pid)
    return QueueProgress(states, logs, label, pids)


def shown_states(layout: Layout, names: Sequence[str], label: str = "grid") -> QueueProgress:
    """:func:`queue_states` of the workspace's ``dvc exp show --json`` now."""
    return queue_states(json.loads(run_dvc(layout.root, "exp", "show", "--json").stdout), names, label)


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


def watch_queue(layout: Layout, names: Sequence[str], poll_s: float = 5.0, idle_polls: int = 3,
                label: str = "grid") -> QueueProgress:
    """Poll the queue until every experiment has finished or failed, logging each change of the counts.

    When no worker runs and no experiment's process is left (``idle_polls`` polls in a row), experiments still
    queued, or still called running by DVC (their worker was killed), end the wait as failures.
    """
    last, idle = "", 0
    while True:
        progress = shown_states(layout, names, label)
        if (line := progress.line()) != last:
            log.info("%s", line)
            last = line
        if progress.done:
            return progress
        stopped = progress.stopped()
        idle = idle + 1 if progress.counts()["running"] == len(stopped) and active_workers(layout) == 0 else 0
        if idle >= idle_polls:
            for name, state in progress.states.items():
                if state in ABANDONED:
                    progress.states[name] = ABANDONED[state]
            return progress
        time.sleep(poll_s)


def make_way(layout: Layout, names: Sequence[str]) -> None:
    """Before a rerun of ``names`` on this commit: DVC refuses an experiment name it already holds, and lists a
    failed task beside a new one of its name, so the finished experiments of these names are removed (their outputs
    stay in DVC's cache and run cache) and so are their failed tasks, and the tasks a killed worker left running."""
    progress = shown_states(layout, names)
    states = progress.states
    if (lost := progress.stopped()) and active_workers(layout) == 0:
        run_dvc(layout.root, "queue", "kill", *lost)  # DVC then records them as ended
        run_dvc(layout.root, "queue", "remove", *lost)
    if failed := [name for name, state in states.items() if state == "failed"]:
        run_dvc(layout.root, "queue", "remove", *failed)
    if finished := [name for name, state in states.items() if state == "success"]:
        run_dvc(layout.root, "exp", "remove", *finished)


def run_queued(layout: Layout, plan: Sequence[Experiment], jobs: int, *, per_gpu: int = 1, label: str = "grid",
               poll_s: float = 5.0) -> QueueProgress:
    """Queue the experiments (``dvc exp run --queue``), start ``jobs`` workers (up to ``per_gpu`` on one GPU) and
    wait for them."""
    workspace_cfg = load_config(layout.root / "params.yaml")
    names = [exp.name for exp in plan]
    make_way(layout, names)
    try:
        for exp in plan:
            run_experiment(layout, exp, queue=True)  # the queue stores each one's dvc.yaml
    finally:
        write_graph(workspace_cfg, layout.root)  # the workspace keeps the graph of its own params
    env = worker_env(jobs, per_gpu=per_gpu)
    log.info("%s: %d experiments queued; starting %d workers with %s=%s, up to %d per GPU", label, len(plan), jobs,
             THREAD_VARIABLES[0], env[THREAD_VARIABLES[0]], per_gpu)
    run_dvc(layout.root, "queue", "start", "-j", str(jobs), env=env)
    return watch_queue(layout, names, poll_s, label=label)


def queue_failures(progress: QueueProgress) -> list[str]:
    """One line per experiment that did not finish: its name, what happened and where to look."""
    lines = []
    for name, state in progress.states.items():
        if state == "failed":
            lines.append(f"{name}: failed: {failure_reason(progress.logs.get(name))} (dvc queue logs {name})")
        elif state == "left queued":
            lines.append(f"{name}: left queued with no worker running (dvc queue start, or dvc queue remove {name})")
        elif state == "worker lost":
            lines.append(f"{name}: its queue worker stopped while it ran (killed?); rerun the command to redo it "
                         f"(its finished stages are restored from the run cache)")
    return lines
