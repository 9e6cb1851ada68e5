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
    assert graph_problem(CFG, REPO) is None, "run: pfadseg graph"


def test_deps_follow_the_imports() -> None:
    assert "pfadseg/data/images.py" in STAGES["evaluate"]["deps"], "editing the mask threshold reruns evaluate"
    assert "pfadseg/config/schema.py" in STAGES["train_student"]["deps"]
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
    assert not {"pfadseg/train/student.py", "pfadseg/train/seg.py"} & set(adps["train_adps"]["deps"])


ADPS_STAGES = yaml.safe_load(render_graph(config_from_dict(read_params(REPO / "params.yaml"), ["model.arch=adps"]),
                                          REPO))["stages"]
# Code a stage never runs, so must not depend on: an edit to it leaves the stage up to date (no retraining).
NEVER_RUNS = {
    "train_student": ("metrics.py", "evaluate.py", "models/segnet.py", "models/rcm.py", "models/aspp.py",
                      "models/adps.py", "models/psm.py", "models/wmb.py", "models/patchify.py", "detectors.py",
                      "models/detector.py", "score/maps.py"),
    "train_seg": ("metrics.py", "evaluate.py", "models/adps.py", "models/psm.py", "models/wmb.py",
                  "models/patchify.py", "detectors.py", "models/detector.py", "score/maps.py"),
    "acquire_textures": ("data/ksdd2.py", "data/procedural/scenes.py"),
    "acquire_images": ("data/procedural/textures.py",),
    "evaluate": ("data/download.py", "data/ksdd2.py", "data/procedural/scenes.py", "data/procedural/textures.py"),
    "report": ("data/download.py", "data/ksdd2.py", "data/procedural/scenes.py"),
    "train_adps": ("models/aff.py", "models/pcar.py", "models/spr.py", "models/rcm.py", "models/aspp.py",
                   "models/segnet.py", "models/student.py", "metrics.py", "evaluate.py", "models/detector.py",
                   "score/maps.py"),
    "calibrate": ("metrics.py", "evaluate.py"),
}


@pytest.mark.parametrize("stage", list(NEVER_RUNS))
def test_a_stage_depends_on_no_code_it_never_runs(stage: str) -> None:
    deps = (ADPS_STAGES if stage == "train_adps" else STAGES)[stage]["deps"]
    assert [m for m in NEVER_RUNS[stage] if f"pfadseg/{m}" in deps] == []
    assert f"pfadseg/{'train/adps.py' if stage == 'train_adps' else 'config/schema.py'}" in deps, "the closure is real"


def test_only_evaluation_reads_the_metrics() -> None:
    assert [name for name, stage in STAGES.items() if "pfadseg/metrics.py" in stage.get("deps", [])] == ["evaluate"]


def test_a_stage_cannot_read_an_undeclared_param() -> None:
    view = scoped_config(CFG, ("model.use_aff", "train.student"), "train_student")
    assert view.model.use_aff is CFG.model.use_aff and view.train.student.lr == CFG.train.student.lr
    with pytest.raises(UndeclaredParamError, match=r"stage train_student reads model\.use_rcm"):
        _ = view.model.use_rcm
    with pytest.raises(UndeclaredParamError, match="reads eval"):
        _ = view.eval


def test_no_persistent_outputs_so_the_run_cache_works() -> None:
    """DVC never run-caches a stage with a `persist` output, and ablations rely on restoring trained students
    (only check_params, which takes a second, keeps its marker)."""
    assert not [name for name, stage in STAGES.items() if "persist" in str(stage) and name != "check_params"]


def test_layers_read_one_way() -> None:
    """Nothing below pipeline/ imports pipeline/; the architecture is picked in one place."""
    for path in (REPO / "pfadseg").rglob("*.py"):
        rel = path.relative_to(REPO).as_posix()
        text = path.read_text()
        if not rel.startswith("pfadseg/pipeline/") and rel != "pfadseg/cli.py":
            assert "pfadseg.pipeline" not in text, f"{rel} imports pipeline/"
        # config: arch-dependent validation and names; report/ablation: selects experiments' results by arch
        if rel not in ("pfadseg/config/schema.py", "pfadseg/report/ablation.py"):
            assert not re.search(r"\barch\s*[!=]=\s*[\"']", text), f"{rel} branches on the architecture name"


def test_a_stage_runs_the_code_dvc_tracks(tmp_path) -> None:
    """In a copy of the project (the demo's, a queue worker's), the stage imports the copy's pfadseg, which DVC
    hashes, not the pfadseg installed in the interpreter (here: the editable checkout)."""
    import subprocess

    from pfadseg.config import profile_overrides
    from pfadseg.pipeline.workspace import make_workspace, tool_env

    ws = make_workspace(REPO, tmp_path / "copy", profile_overrides(REPO / "profiles/ci.yaml"))
    with (ws / "pfadseg/__init__.py").open("a") as fh:
        fh.write('\nraise SystemExit("the tracked copy ran")\n')
    cmd = yaml.safe_load((ws / "dvc.yaml").read_text())["stages"]["report"]["cmd"]
    assert "pfadseg/__init__.py" in yaml.safe_load((ws / "dvc.yaml").read_text())["stages"]["report"]["deps"]
    proc = subprocess.run(cmd, shell=True, cwd=ws, env=tool_env(), capture_output=True, text=True, check=False)
    assert "the tracked copy ran" in proc.stderr, proc.stderr


def test_params_are_checked_before_any_stage_that_has_outputs() -> None:
    """DVC deletes a stage's outputs before its command runs: the whole params.yaml is validated first."""
    assert next(iter(STAGES)) == "check_params"
    assert STAGES["check_params"]["outs"] == [{"params.checked": {"cache": False, "persist": True}}], \
        "a failed check must not delete its marker: every stage depends on it"
    assert STAGES["check_params"]["params"] == [{"params.yaml": None}], "any key, known or not, reruns it"
    for name, stage in STAGES.items():
        if name != "check_params":
            assert "params.checked" in stage["deps"], f"{name} could run before params.yaml is validated"


def test_dvc_exp_show_columns_are_the_evaluation_metrics() -> None:
    metrics = [next(iter(m)) if isinstance(m, dict) else m for s in STAGES.values() for m in s.get("metrics", [])]
    assert metrics == ["metrics/${item.category}/seed${item.seed}.json"], "manifests are records, not metrics"


def test_the_demo_commits_its_baseline_results(tmp_path) -> None:
    """After `dvc repro`, the demo commits the results Git tracks, so `dvc exp show` sets experiments beside them."""
    import subprocess

    from pfadseg.config import profile_overrides
    from pfadseg.pipeline.workspace import commit_all, make_workspace

    ws = make_workspace(REPO, tmp_path / "demo", profile_overrides(REPO / "profiles/ci.yaml"))
    (ws / "metrics").mkdir()
    (ws / "metrics/result.json").write_text('{"seg": {"image_auroc": 0.9}}')
    commit_all(ws, "demo baseline results")
    git = lambda *a: subprocess.run(["git", *a], cwd=ws, capture_output=True, text=True, check=True).stdout  # noqa: E731
    assert git("status", "--porcelain") == ""
    assert git("log", "--format=%s").split("\n")[:2] == ["demo baseline results", "workspace"]
    assert "metrics/result.json" in git("show", "--name-only", "--format=", "HEAD")


def test_training_and_calibration_do_not_declare_the_test_splits_source() -> None:
    """They read the training images only; data.source decides whether test masks are required (evaluate)."""
    for stage in ("train_student", "train_seg", "calibrate"):
        assert "data.source" not in STAGES[stage]["params"], stage
    assert "data.source" in STAGES["evaluate"]["params"]
