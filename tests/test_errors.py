"""One error base: every error pfadseg raises for its user is a PfadsegError, caught once by the command line and by
the stage entry with the same exit status; anything else is a bug and keeps its traceback."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import pfadseg
from pfadseg.cli import app
from pfadseg.config import ConfigError
from pfadseg.errors import PfadsegError, UsageError
from pfadseg.pipeline import entry
from pfadseg.pipeline.train_student import TRAIN_STUDENT

runner = CliRunner()


def _modules() -> list[object]:
    return [importlib.import_module(m.name) for m in pkgutil.walk_packages(pfadseg.__path__, "pfadseg.")
            if not m.name.startswith("pfadseg.cli")]


def test_every_error_class_of_the_package_is_a_pfadseg_error() -> None:
    defined = {cls for module in _modules() for _, cls in inspect.getmembers(module, inspect.isclass)
               if issubclass(cls, Exception) and cls.__module__.startswith("pfadseg.")}
    assert len(defined) >= 20
    assert [cls.__name__ for cls in defined if not issubclass(cls, PfadsegError)] == []


@pytest.mark.parametrize(("error", "status"), [(UsageError("bad --thing"), 1), (ConfigError("x.y: bad"), 2)])
def test_the_cli_and_the_stage_entry_print_one_line_with_the_same_status(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, error: PfadsegError, status: int,
        capsys: pytest.CaptureFixture[str]) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.chdir(Path(__file__).parents[1])
    monkeypatch.setattr(type(TRAIN_STUDENT), "invoke", fail)
    result = runner.invoke(app, ["train-student", "bottle"])
    assert result.exit_code == status and f"error: {error}" in result.output
    assert "Traceback" not in result.output
    with pytest.raises(SystemExit) as stopped:
        entry.run_stage(TRAIN_STUDENT, ["bottle", "0"])
    assert stopped.value.code == status and capsys.readouterr().err.strip() == f"error: {error}"


def test_a_bug_keeps_its_traceback_on_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    def bug(*args: object, **kwargs: object) -> None:
        raise ValueError("a genuine bug")

    monkeypatch.chdir(Path(__file__).parents[1])
    monkeypatch.setattr(type(TRAIN_STUDENT), "invoke", bug)
    result = runner.invoke(app, ["train-student", "bottle"])
    assert result.exit_code == 1 and isinstance(result.exception, ValueError), "not swallowed into one line"
    with pytest.raises(ValueError, match="a genuine bug"):
        entry.run_stage(TRAIN_STUDENT, ["bottle", "0"])
