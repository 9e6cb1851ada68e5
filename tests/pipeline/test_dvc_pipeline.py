"""The whole DVC pipeline on the CI profile, then ablation experiments that reuse what they can."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from pfadseg.config import config_from_dict, profile_overrides, read_params
from pfadseg.data.procedural.scenes import make_synthetic_mvtec
from pfadseg.paths import Layout
from pfadseg.pipeline.queue import Experiment, run_experiment
from pfadseg.pipeline.workspace import make_workspace, run_dvc
from tests.conftest import REPO

pytestmark = pytest.mark.slow
WIDGETS = "my widgets; $x&ü"  # a user's category: spaces, shell characters and unicode, as README allows


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CI profile on a user's folder: carpet with masks, and WIDGETS, a category of their own without any."""
    base = tmp_path_factory.mktemp("ws")
    synthetic = config_from_dict(read_params(REPO / "params.yaml"), profile_overrides(REPO / "profiles/ci.yaml"))
    make_synthetic_mvtec(base / "mydata", ["bottle", "carpet"], synthetic.data.synthetic)
    (base / "mydata/bottle").rename(base / "mydata" / WIDGETS)
    shutil.rmtree(base / "mydata" / WIDGETS / "ground_truth")
    overrides = [*profile_overrides(REPO / "profiles/ci.yaml"), "data.source=folder", f"data.root={base / 'mydata'}",
                 f"data.categories=[carpet,'{WIDGETS}']"]
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
    for category in ("carpet", WIDGETS):
        row = next(line for line in tables.splitlines() if line.startswith(f"| {category} |"))
        assert "not run" not in row
        metrics = json.loads((workspace / f"metrics/{category}/seed0.json").read_text())
        assert 0.0 <= metrics["seg"]["image_auroc"] <= 1.0 and metrics["n_test"] == 3 + 2 * 2
        assert (workspace / f"plots/{category}/seed0/seg_image_roc.csv").is_file()
        assert (workspace / f"reports/figures/examples_{category}.png").stat().st_size > 1000
    widgets = json.loads((workspace / "metrics" / WIDGETS / "seed0.json").read_text())
    assert widgets["pixel_level"] is False and widgets["seg"].get("pixel_ap") is None
    assert "| bottle |" not in tables, "the report's rows are the categories that ran"


def test_second_repro_does_nothing(workspace: Path) -> None:
    out = run_dvc(workspace, "repro").stdout
    assert "Running stage" not in out, out


def test_rcm_ablation_reuses_every_student(workspace: Path) -> None:
    out = run_dvc(workspace, "exp", "run", "-n", "no-rcm", "-S", "model.use_rcm=false").stdout
    assert not _ran(out, "train_student@"), out
    assert _ran(out, f"train_seg@{WIDGETS}-0") and _ran(out, "evaluate@carpet-0")
    shown = json.loads(run_dvc(workspace, "exp", "show", "--json").stdout)
    assert "no-rcm" in json.dumps(shown)


def test_adps_is_an_experiment_like_the_switches_and_returning_restores_every_stage(workspace: Path) -> None:
    out = run_experiment(Layout(workspace), Experiment("adps", ("model.arch=adps",)))
    assert _ran(out, f"train_adps@{WIDGETS}-0") and _ran(out, "calibrate@carpet-0") and _ran(out, "report"), out
    assert not _ran(out, "train_student@") and not _ran(out, "train_seg@"), "ADPS has its own training stage"
    shown = json.dumps(json.loads(run_dvc(workspace, "exp", "show", "--json").stdout))
    assert '"adps"' in shown
    metrics = json.loads((workspace / "metrics/carpet/seed0.json").read_text())
    assert metrics["variant"] == "adps" and metrics["seg"]["image_score"].startswith("max of the Gaussian")
    assert "ADPS (k=2" in (workspace / "reports/tables.md").read_text()
    # returning to PFADSeg restores every stage from the run cache
    out = run_experiment(Layout(workspace), Experiment("pfadseg-again", ("model.arch=pfadseg",)))
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


@pytest.mark.parametrize(("change", "output", "message"), [
    (["-S", "model.arch=adps"], "models/carpet/seed0/student.pt", r"pfadseg experiment NAME -S model\.arch=adps"),
    (["-S", "eval.top_k=100000"], "models/carpet/seed0/calibration.json", r"eval\.top_k: 100000 exceeds"),
    ([], "models/carpet/seed0/seg.pt", r"unknown key\(s\) surprise"),
])
def test_what_a_later_stage_would_refuse_deletes_no_output(
        workspace: Path, change: list[str], output: str, message: str) -> None:
    """A graph of another architecture, a cross-key limit and an unknown top-level key all stop at check_params."""
    kept, params = workspace / output, workspace / "params.yaml"
    before, params_text = kept.read_bytes(), params.read_text()
    try:
        if not change:
            params.write_text(params_text + "surprise: 1\n")
        with pytest.raises(RuntimeError, match=message):
            run_dvc(workspace, "exp", "run", *change)
    finally:
        params.write_text(params_text)
    assert kept.read_bytes() == before


def test_an_empty_params_file_fails_with_the_message_readme_explains(workspace: Path) -> None:
    """DVC parses dvc.yaml's matrix before any stage runs; README's troubleshooting quotes what it then says."""
    params = workspace / "params.yaml"
    params_text = params.read_text()
    try:
        params.write_text("")
        with pytest.raises(RuntimeError) as info:
            run_dvc(workspace, "repro")
    finally:
        params.write_text(params_text)
    quoted = "Could not find 'data.categories'"
    assert quoted in str(info.value) and quoted in (REPO / "README.md").read_text()


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
    assert f"evaluate@{WIDGETS}-0" in out and f"train_student@{WIDGETS}-0" in out, out
    out = stale_after_editing("pfadseg/report/tables.py")
    assert "report" in out and "train_student" not in out and "evaluate@" not in out, out
    out = stale_after_editing("pfadseg/metrics.py")  # a metric fix re-evaluates and retrains nothing
    changed = {line.rstrip(":").split("@")[0] for line in out.splitlines() if line and not line.startswith("\t")
               and line.endswith(":")}
    assert changed == {"evaluate"}, out
