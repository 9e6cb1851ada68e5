"""DVC stage ``check_params``: refuse, before any stage that has outputs runs, everything a later stage would refuse.

DVC deletes a stage's outputs before running its command, so a bad ``dvc exp run -S key=value`` caught by the
stage itself would cost the outputs it replaces. Every other stage depends on this stage's output, so DVC runs it
first. It depends on the whole params.yaml (and reads dvc.yaml, which DVC does not allow as a dependency: an
architecture switch edits params.yaml, so the check reruns then), and fails on:

* an invalid params.yaml: an unknown key anywhere, a wrong type, an out-of-range or cross-key value
  (``run_stage`` loads and validates the file before calling :func:`run_check_params`);
* networks that cannot be built or scored at these settings (:func:`pfadseg.detectors.build_problem`);
* a dvc.yaml written for another ``model.arch`` (its training stages are another architecture's).

Its output never changes, so a valid edit reruns only the stages that read the edited keys.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from pfadseg.arch.registry import ARCHITECTURES, architecture
from pfadseg.config import Config, ConfigError, config_from_dict
from pfadseg.detectors import build_problem
from pfadseg.fsio import atomic_path
from pfadseg.paths import Layout
from pfadseg.pipeline.entry import ITEM, StageDef

CHECKED = "params.yaml validates (pfadseg check_params stage)\n"
SECTIONS = tuple(f.name for f in dataclasses.fields(Config))  # the stage's view may read every section
GRAPH = Path("dvc.yaml")


def graph_arch_problem(cfg: Config, graph: Path) -> str | None:
    """Why ``graph`` (a dvc.yaml) does not run ``cfg``'s architecture, or None."""
    try:
        stages = set((yaml.safe_load(graph.read_text()) or {}).get("stages") or {})
    except (OSError, yaml.YAMLError) as exc:
        return f"{graph}: cannot read the pipeline ({exc}); rewrite it with `pfadseg graph`"
    wanted = architecture(cfg.model.arch).train_stages
    found = {arch.name: [s for s in arch.train_stages if s in stages] for arch in ARCHITECTURES.values()}
    if all(s in stages for s in wanted) and not any(found[a] for a in found if a != cfg.model.arch):
        return None
    written_for = [a for a, names in found.items() if names and a != cfg.model.arch]
    other = f"the pipeline of model.arch={written_for[0]}" if written_for else "no training stages"
    return (f"{graph} holds {other}, but params.yaml gives model.arch={cfg.model.arch}; nothing was deleted. Run "
            f"the experiment with `pfadseg experiment NAME -S model.arch={cfg.model.arch}` (it writes the pipeline "
            f"first), or rewrite dvc.yaml with `pfadseg graph` and rerun")


def run_check_params(cfg: Config, layout: Layout) -> None:
    """Refuse settings a later stage would refuse, else write the constant marker (params.yaml validated already)."""
    full = config_from_dict(cfg.to_dict())  # the stage's view reads every section; the shape check needs the dataclass
    if problem := build_problem(architecture(cfg.model.arch), full):
        raise ConfigError(f"params.yaml: {problem}; nothing was deleted")
    if problem := graph_arch_problem(cfg, layout.root / GRAPH):
        raise ConfigError(problem)
    with atomic_path(layout.params_check) as tmp:
        tmp.write_text(CHECKED)


CHECK_PARAMS = StageDef("check_params", run_check_params, params=lambda arch: SECTIONS,
                        records=lambda arch: (str(ITEM.params_check),))
