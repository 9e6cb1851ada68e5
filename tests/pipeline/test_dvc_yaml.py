"""dvc.yaml and the stage functions agree on what each stage reads (precise params = correct run-cache reuse)."""

from __future__ import annotations

import yaml

from pfadseg.config import config_from_dict, read_params, select_params
from pfadseg.pipeline.evaluate import EVAL_PARAMS
from pfadseg.pipeline.report import REPORT_PARAMS
from pfadseg.pipeline.train import SEG_PARAMS, STUDENT_PARAMS
from tests.conftest import REPO

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def test_training_stages_declare_exactly_the_params_they_read() -> None:
    assert sorted(STAGES["train_student"]["params"]) == sorted(STUDENT_PARAMS)
    assert sorted(STAGES["train_seg"]["params"]) == sorted(SEG_PARAMS)
    assert sorted(STAGES["evaluate"]["params"]) == sorted(EVAL_PARAMS)
    assert sorted(STAGES["report"]["params"]) == sorted(REPORT_PARAMS)


def test_student_stage_ignores_the_segmentation_switches() -> None:
    student = set(STAGES["train_student"]["params"])
    assert {"model.use_rcm", "model.rcm", "train.seg"}.isdisjoint(student)
    assert {"model.use_aff", "model.use_pcar"} <= student


def test_declared_params_exist_in_params_yaml() -> None:
    cfg = config_from_dict(read_params(REPO / "params.yaml"))
    for stage in STAGES.values():
        select_params(cfg, tuple(stage.get("params", ())))  # raises KeyError on a stale key


def test_every_stage_has_dependencies_so_repro_never_reruns_it_blindly() -> None:
    for name, stage in STAGES.items():
        assert stage.get("deps"), f"stage {name} has no deps: DVC would rerun it on every repro"


def test_no_persistent_outputs_so_the_run_cache_works() -> None:
    """DVC never run-caches a stage with a `persist` output, and ablations rely on restoring trained students."""
    persistent = [(name, path) for name, stage in STAGES.items() for kind in ("outs", "metrics", "plots")
                  for entry in stage.get(kind, []) if isinstance(entry, dict)
                  for path, options in entry.items() if (options or {}).get("persist")]
    assert not persistent
