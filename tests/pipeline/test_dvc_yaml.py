"""dvc.yaml is what the code gives: deps = each stage's import closure, params = what each stage may read."""

from __future__ import annotations

import re

import pytest
import yaml

from pfadseg.config import UndeclaredParamError, config_from_dict, read_params, scoped_config
from pfadseg.pipeline.graph import graph_problem, render_graph
from tests.conftest import REPO

CFG = config_from_dict(read_params(REPO / "params.yaml"))
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def test_dvc_yaml_is_the_generated_graph() -> None:
    assert graph_problem(CFG, REPO) is None, "run: pfadseg graph --write"


def test_deps_follow_the_imports() -> None:
    assert "pfadseg/data/images.py" in STAGES["evaluate"]["deps"], "editing the mask threshold reruns evaluate"
    assert "pfadseg/config.py" in STAGES["train_student"]["deps"]
    assert "pfadseg/report/tables.py" not in STAGES["train_student"]["deps"], "a report edit retrains nothing"
    assert "pfadseg/report/tables.py" in STAGES["report"]["deps"]
    assert not any(d.startswith("pfadseg/train/") for d in STAGES["evaluate"]["deps"]), "inference imports no training"


def test_each_architecture_has_its_own_training_stages_and_params() -> None:
    assert {"train_student", "train_seg"} <= set(STAGES) and "train_adps" not in STAGES
    assert not any(p.startswith(("model.adps", "train.adps")) for p in STAGES["train_student"]["params"])
    assert {"model.use_rcm", "model.rcm", "train.seg"}.isdisjoint(STAGES["train_student"]["params"])
    adps = yaml.safe_load(render_graph(config_from_dict(read_params(REPO / "params.yaml"), ["model.arch=adps"]),
                                       REPO))["stages"]
    assert "train_adps" in adps and not {"train_student", "train_seg"} & set(adps)
    assert "pfadseg/train/destseg.py" not in adps["train_adps"]["deps"]


def test_a_stage_cannot_read_an_undeclared_param() -> None:
    view = scoped_config(CFG, ("model.use_aff", "train.student"), "train_student")
    assert view.model.use_aff is CFG.model.use_aff and view.train.student.lr == CFG.train.student.lr
    with pytest.raises(UndeclaredParamError, match=r"stage train_student reads model\.use_rcm"):
        _ = view.model.use_rcm
    with pytest.raises(UndeclaredParamError, match="reads eval"):
        _ = view.eval


def test_no_persistent_outputs_so_the_run_cache_works() -> None:
    """DVC never run-caches a stage with a `persist` output, and ablations rely on restoring trained students."""
    assert "persist" not in (REPO / "dvc.yaml").read_text()


def test_layers_read_one_way() -> None:
    """Nothing below pipeline/ imports pipeline/; the architecture is picked in one place."""
    for path in (REPO / "pfadseg").rglob("*.py"):
        rel = path.relative_to(REPO).as_posix()
        text = path.read_text()
        if not rel.startswith("pfadseg/pipeline/") and rel != "pfadseg/cli.py":
            assert "pfadseg.pipeline" not in text, f"{rel} imports pipeline/"
        # config: arch-dependent validation and names; report/ablation: selects experiments' results by arch
        if rel not in ("pfadseg/config.py", "pfadseg/report/ablation.py"):
            assert not re.search(r"\barch\s*[!=]=\s*[\"']", text), f"{rel} branches on the architecture name"
