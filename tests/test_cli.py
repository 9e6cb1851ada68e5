"""The typer CLI: every command has --help; argument errors name the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pfadseg.cli import app
from tests.conftest import REPO

runner = CliRunner()
COMMANDS = ["acquire", "download", "synth-data", "bank", "train-student", "train-seg", "evaluate", "report",
            "ablate", "predict", "export", "profile", "demo", "bench synth", "bench models", "bench metrics",
            "bench train", "bench predict", "bench predict-memory", "graph", "experiment", "calibrate",
            "train-adps"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = runner.invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_bad_override_fails_naming_the_key() -> None:
    result = runner.invoke(app, ["train-student", "bottle", "-S", "model.use_pcar=maybe"])
    assert result.exit_code == 2
    assert "model.use_pcar: expected true or false" in result.output


def test_profile_prints_set_arguments() -> None:
    result = runner.invoke(app, ["profile", "destseg"])
    assert result.exit_code == 0
    assert result.output.split() == ["-S", "model.use_aff=false", "-S", "model.use_pcar=false", "-S",
                                     "model.use_rcm=false", "-S", "train.student.iterations=1000", "-S",
                                     "train.student.batch_size=32", "-S", "train.student.lr=0.4", "-S",
                                     "train.seg.batch_size=32"]


def test_a_non_finite_override_fails_naming_the_key() -> None:
    result = runner.invoke(app, ["train-student", "bottle", "-S", "train.student.lr=.nan"])
    assert result.exit_code == 2
    assert "train.student.lr: must be a finite number, got nan" in result.output


def test_demo_outside_the_project_root_says_where_to_run_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 1
    assert "lacks params.yaml, dvc.yaml, profiles/demo.yaml: run `pfadseg demo` from the pfadseg project root" in (
        " ".join(result.output.split()))
    assert list(tmp_path.iterdir()) == []  # nothing was created


def test_export_help_shows_the_extra_to_install() -> None:
    result = runner.invoke(app, ["export", "--help"])
    assert result.exit_code == 0
    assert "(pip: .[export])" in " ".join(result.output.split())  # rich wraps the text


@pytest.mark.parametrize("command", [["experiment", "bad"], ["ablate", "--rows", "1"]])
def test_a_bad_experiment_value_changes_nothing(command: list[str], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Validated before DVC runs: params.yaml keeps its text and no dvc.yaml is written."""
    params = (Path(__file__).parent.parent / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(params)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [*command, "-S", "train.student.iterations=abc"])
    assert result.exit_code != 0 and "train.student.iterations" in result.output, result.output
    assert (tmp_path / "params.yaml").read_text() == params and not (tmp_path / "dvc.yaml").exists()


def test_ablate_rejects_rows_outside_table_4(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "params.yaml").write_text((Path(__file__).parent.parent / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["ablate", "--rows", "1,x"])
    assert result.exit_code == 1 and "--rows '1,x': give comma-separated integers" in result.output
    result = runner.invoke(app, ["ablate", "--rows", "8"])
    assert result.exit_code == 1 and "--rows 8: Table 4 has rows 1 to 7" in result.output


def _documented_invocations() -> set[tuple[str, ...]]:
    """Every ``pfadseg WORD [WORD] --option ...`` the package's messages, dvc.yaml and the docs tell users to type."""
    files = [*(REPO / "pfadseg").rglob("*.py"), REPO / "dvc.yaml", REPO / "README.md", *(REPO / "docs").glob("*.md")]
    pattern = re.compile(r"pfadseg ([a-z][a-z-]+)(?: ([a-z][a-z-]*))?((?: --[a-z][a-z-]*)+)")
    return {(m.group(1), m.group(2) or "", *m.group(3).split()) for f in files for m in pattern.finditer(f.read_text())}


def test_every_command_and_option_a_message_or_doc_names_exists() -> None:
    root = typer.main.get_command(app)
    invocations = _documented_invocations()
    assert ("graph", "", "--check") in invocations, "the scan finds what it should"
    for word, second, *options in sorted(invocations):
        command = root.commands.get(word)
        assert command is not None, f"pfadseg {word}: no such command"
        if hasattr(command, "commands"):  # a group (bench): the next word is its command
            command = command.commands.get(second)
            assert command is not None, f"pfadseg {word} {second}: no such command"
        known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        for option in options:
            assert option in known, f"pfadseg {word} {second}: no option {option}"


def test_broken_yaml_in_an_override_is_one_line_naming_it() -> None:
    result = runner.invoke(app, ["graph", "--check", "-S", "data.categories=[carpet"])
    assert result.exit_code == 2, result.output
    assert "override 'data.categories=[carpet': the value '[carpet' is not valid YAML" in result.output
    assert "Traceback" not in result.output
