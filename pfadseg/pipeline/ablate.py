"""``pfadseg ablate``: the paper's seven switch combinations as DVC experiments, then reports/ablation.md."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from pfadseg.config import Config, load_config
from pfadseg.fsio import atomic_path
from pfadseg.paths import Layout
from pfadseg.pipeline.graph import write_graph
from pfadseg.pipeline.report import collect_runs, provenance
from pfadseg.pipeline.workspace import run_dvc
from pfadseg.report.ablation import (
    ADPS_EXPERIMENT,
    ADPS_OVERRIDES,
    ablation_chart,
    parse_exp_show,
    render_ablation,
    variants,
)

log = logging.getLogger(__name__)


def run_ablation_experiments(layout: Layout, extra_overrides: Sequence[str] = (), *, adps: bool = False) -> None:
    """Run the seven variants (and, with ``adps``, ADPS) one after another as named experiments.

    DVC's run cache trains only 4 students for the 7 rows (students depend on AFF and PCAR only). Row 7
    (PFADSeg, the params.yaml default) runs last, so the workspace ends on the default switches.
    """
    runs = [(v.name, v.overrides) for v in variants()]
    if adps:
        runs.insert(len(runs) - 1, (ADPS_EXPERIMENT, list(ADPS_OVERRIDES)))
    for name, overrides in runs:
        log.info("ablation: running %s", name)
        run_experiment(layout, name, (*overrides, *extra_overrides), capture=False)


def run_experiment(layout: Layout, name: str, overrides: Sequence[str], *, capture: bool = True) -> str:
    """``dvc exp run -n NAME -S ...`` after writing the graph of the experiment's architecture; DVC's output."""
    write_graph(load_config(layout.root / "params.yaml", overrides), layout.root)
    args = [a for o in overrides for a in ("-S", o)]
    return run_dvc(layout.root, "exp", "run", "-n", name, *args, capture=capture).stdout or ""


def render_ablation_report(cfg: Config, layout: Layout) -> None:
    """reports/ablation.md and reports/figures/ablation.png from ``dvc exp show --json``."""
    results = parse_exp_show(json.loads(run_dvc(layout.root, "exp", "show", "--json").stdout))
    prov = provenance(cfg, layout, collect_runs(cfg, layout))
    with atomic_path(layout.reports / "ablation.md") as tmp:
        tmp.write_text(render_ablation(results, prov))
    ablation_chart(results, layout.reports / "figures" / "ablation.png")
    log.info("ablation: %d experiments with results -> %s", len(results), layout.reports / "ablation.md")
