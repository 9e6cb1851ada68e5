"""The whole DVC pipeline on the CI profile, then ablation experiments that reuse what they can."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from pfadseg.config import config_from_dict, profile_overrides, read_params
from pfadseg.data.procedural import make_synthetic_mvtec
from pfadseg.paths import Layout
from pfadseg.pipeline.ablate import run_experiment
from pfadseg.pipeline.workspace import make_workspace, run_dvc
from tests.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CI profile on a user's folder: carpet with masks, and ``widgets``, a category of their own without any."""
    base = tmp_path_factory.mktemp("ws")
    synthetic = config_from_dict(read_params(REPO / "params.yaml"), profile_overrides(REPO / "profiles/ci.yaml"))
    make_synthetic_mvtec(base / "mydata", ["bottle", "carpet"], synthetic.data.synthetic)
    (base / "mydata/bottle").rename(base / "mydata/widgets")
    shutil.rmtree(base / "mydata/widgets/ground_truth")
    overrides = [*profile_overrides(REPO / "profiles/ci.yaml"), "data.source=folder", f"data.root={base / 'mydata'}",
                 "data.categories=[carpet,widgets]"]
    ws = make_workspace(REPO, base / "project", overrides)
    run_dvc(ws, "repro")
    return ws


def _ran(output: str, stage: str) -> bool:
    return re.search(rf"Running stage '{re.escape(stage)}", output) is not None


def test_repro_builds_every_output_and_a_complete_report(workspace: Path) -> None:
    tables = (workspace / "reports/tables.md").read_text()
    for title in ("Table 1", "Table 2", "Table 3", "Extra"):
        assert f"## {title}" in tables
    assert "RANDOM TEACHER" in tables and "copied into this workspace" in tables  # the project's revision
    assert re.search(r"(?i)your data|folder", tables.split("\n## ")[0]), "a banner names the folder"
    for category in ("carpet", "widgets"):
        row = next(line for line in tables.splitlines() if line.startswith(f"| {category} |"))
        assert "not run" not in row
        metrics = json.loads((workspace / f"metrics/{category}/seed0.json").read_text())
        assert 0.0 <= metrics["seg"]["image_auroc"] <= 1.0 and metrics["n_test"] == 3 + 2 * 2
        assert (workspace / f"plots/{category}/seed0/seg_image_roc.csv").is_file()
        assert (workspace / f"reports/figures/examples_{category}.png").stat().st_size > 1000
    widgets = json.loads((workspace / "metrics/widgets/seed0.json").read_text())
    assert widgets["pixel_level"] is False and widgets["seg"].get("pixel_ap") is None
    assert "| bottle |" not in tables, "the report's rows are the categories that ran"


def test_second_repro_does_nothing(workspace: Path) -> None:
    out = run_dvc(workspace, "repro").stdout
    assert "Running stage" not in out, out


def test_rcm_ablation_reuses_every_student(workspace: Path) -> None:
    out = run_dvc(workspace, "exp", "run", "-n", "no-rcm", "-S", "model.use_rcm=false").stdout
    assert not _ran(out, "train_student@"), out
    assert _ran(out, "train_seg@widgets-0") and _ran(out, "evaluate@carpet-0")
    shown = json.loads(run_dvc(workspace, "exp", "show", "--json").stdout)
    assert "no-rcm" in json.dumps(shown)


def test_adps_is_an_experiment_like_the_switches(workspace: Path) -> None:
    out = run_experiment(Layout(workspace), "adps", ["model.arch=adps"])
    assert _ran(out, "train_adps@widgets-0") and _ran(out, "calibrate@carpet-0") and _ran(out, "report"), out
    assert not _ran(out, "train_student@") and not _ran(out, "train_seg@"), "ADPS has its own training stage"
    shown = json.dumps(json.loads(run_dvc(workspace, "exp", "show", "--json").stdout))
    assert '"adps"' in shown
    metrics = json.loads((workspace / "metrics/carpet/seed0.json").read_text())
    assert metrics["variant"] == "adps" and metrics["seg"]["image_score"].startswith("max of the Gaussian")
    assert "ADPS (k=2" in (workspace / "reports/tables.md").read_text()


def test_returning_to_pfadseg_restores_every_stage_from_the_run_cache(workspace: Path) -> None:
    run_experiment(Layout(workspace), "adps-first", ["model.arch=adps"])
    out = run_experiment(Layout(workspace), "pfadseg-again", ["model.arch=pfadseg"])
    for stage in ("train_student@", "train_seg@", "calibrate@", "evaluate@"):
        assert not _ran(out, stage), out
    assert "is cached - skipping run" in out, out


def test_an_invalid_experiment_value_deletes_no_output(workspace: Path) -> None:
    """check_params fails before DVC deletes what train_student would replace."""
    student, params = workspace / "models/carpet/seed0/student.pt", workspace / "params.yaml"
    before, params_text = student.read_bytes(), params.read_text()
    try:
        with pytest.raises(RuntimeError, match=r"train\.student\.iterations"):
            run_dvc(workspace, "exp", "run", "-S", "train.student.iterations=abc")
    finally:
        params.write_text(params_text)  # dvc exp run leaves its -S value in params.yaml
    assert student.read_bytes() == before
    assert "params.checked" not in run_dvc(workspace, "status").stdout, "the failed check deleted its marker"


def test_dvc_status_follows_the_code_each_stage_imports(workspace: Path) -> None:
    """An edit reruns the stages whose import closure holds the file, and no others (the last test: it edits)."""

    def stale_after_editing(relative: str) -> str:
        path = workspace / relative
        original = path.read_text()
        try:
            path.write_text(original + "\n# edited\n")
            return run_dvc(workspace, "status").stdout
        finally:
            path.write_text(original)

    out = stale_after_editing("pfadseg/data/images.py")
    assert "evaluate@widgets-0" in out and "train_student@widgets-0" in out, out
    out = stale_after_editing("pfadseg/report/tables.py")
    assert "report" in out and "train_student" not in out and "evaluate@" not in out, out
