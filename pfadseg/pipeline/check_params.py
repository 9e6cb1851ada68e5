"""DVC stage ``check_params``: validate the whole params.yaml before any stage that has outputs runs.

DVC deletes a stage's outputs before running its command, so a bad ``dvc exp run -S key=value`` caught by the
stage itself would cost the outputs it replaces. Every other stage depends on this stage's output, so DVC runs it
first; it fails on an invalid params.yaml (``run_stage`` loads and validates the file) before anything is deleted.
Its output never changes, so a valid edit reruns only the stages that read the edited keys.
"""

from __future__ import annotations

import dataclasses

from pfadseg.config import Config
from pfadseg.fsio import atomic_path
from pfadseg.paths import Layout
from pfadseg.pipeline.entry import ITEM, StageDef

CHECKED = "params.yaml validates (pfadseg check_params stage)\n"
SECTIONS = tuple(f.name for f in dataclasses.fields(Config))  # every top-level key: any edit reruns the check


def run_check_params(cfg: Config, layout: Layout) -> None:
    """Write the constant marker; reaching here means params.yaml loaded and validated."""
    with atomic_path(layout.params_check) as tmp:
        tmp.write_text(CHECKED)


CHECK_PARAMS = StageDef("check_params", run_check_params, params=lambda arch: SECTIONS,
                        records=lambda arch: (str(ITEM.params_check),))
