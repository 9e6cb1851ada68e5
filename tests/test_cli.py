"""The typer CLI: every command has --help; argument errors name the key."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pfadseg.cli import app

runner = CliRunner()
COMMANDS = ["acquire", "download", "synth-data", "bank", "train-student", "train-seg", "evaluate", "report",
            "ablate", "predict", "export", "profile", "demo", "bench synth", "bench models", "bench metrics",
            "bench train", "bench predict"]


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
