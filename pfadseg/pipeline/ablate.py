"""``pfadseg ablate``: the paper's seven switch combinations as DVC experiments, then reports/ablation.md.

Three ways to run the grid: one after another in the workspace; through DVC's queue with ``--jobs N`` workers
(each stage on a GPU of its own, see :func:`pfadseg.device.claim_free_gpu`); or split over machines that share a
Git remote and a DVC remote (``--rows``/``--push`` on each, ``--pull`` on the one that renders).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from pfadseg.config import Config, load_config
from pfadseg.errors import RunError, UsageError
from pfadseg.fsio import atomic_path
from pfadseg.paths import Layout
from pfadseg.pipeline.queue import Experiment, make_way, queue_failures, run_experiment, run_queued
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


def run_sequentially(layout: Layout, plan: Sequence[Experiment]) -> None:
    """Run the experiments one after another in the workspace."""
    make_way(layout, [exp.name for exp in plan])
    for number, exp in enumerate(plan, 1):
        log.info("ablation: running %s (%d of %d)", exp.name, number, len(plan))
        run_experiment(layout, exp, capture=False)


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
            failures = queue_failures(run_queued(layout, plan, jobs, per_gpu=per_gpu, label="grid"))
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
