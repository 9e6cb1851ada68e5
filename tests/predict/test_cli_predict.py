"""`pfadseg predict` end to end: outputs for readable files, the corrupted one reported once, exit code 1;
thresholds outside the score range and images over --max-pixels refused."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pfadseg.cli import app
from tests.predict.conftest import TrainedRun


def test_predict_command_reports_a_corrupted_file_once_and_exits_non_zero(
    trained_run: TrainedRun, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = sorted((trained_run.test_images / "good").iterdir())[0]
    shutil.copy(good, inputs / "part.png")
    (inputs / "broken.png").write_bytes(good.read_bytes()[:200])  # truncated PNG
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="pfadseg"):
        result = CliRunner().invoke(app, ["predict", str(trained_run.calibrated_dir), str(inputs), "--out",
                                          str(out), "--device", "cpu"])
    assert result.exit_code == 1, result.output
    printed = caplog.text + result.output  # the log (a terminal shows it above the summary) and the command's output
    assert printed.count("broken.png") == 1, printed  # the failure once, its path once
    assert "1 image(s) scored" in result.output and "1 image(s) failed" in result.output
    assert f"{inputs / 'broken.png'}: cannot read image" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == ["part_heatmap.png", "part_mask.png", "part_overlay.png",
                                                     "predictions.csv"]
    csv = (out / "predictions.csv").read_text()
    assert "broken.png" in csv and "part.png" in csv


def test_predict_command_refuses_thresholds_out_of_range_and_images_over_max_pixels(
    trained_run: TrainedRun, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    image = tmp_path / "part.png"
    shutil.copy(sorted((trained_run.test_images / "good").iterdir())[0], image)  # 64 x 64
    command = ["predict", str(trained_run.calibrated_dir), str(image), "--out", str(tmp_path / "out"), "--device",
               "cpu"]
    for option, value in (("--threshold", "5"), ("--pixel-threshold", "-1")):
        result = CliRunner().invoke(app, [*command, option, value])
        assert result.exit_code == 1
        assert f"{option} {value} is outside [0, 1]" in result.output, result.output
    with caplog.at_level(logging.WARNING, logger="pfadseg"):
        result = CliRunner().invoke(app, [*command, "--max-pixels", "4095"])
    assert result.exit_code == 1 and "1 image(s) failed" in result.output
    assert f"{image}: image is 64 x 64 = 4,096 px, more than the limit of 4,095 px" in caplog.text
    assert "--max-pixels" in caplog.text
    assert CliRunner().invoke(app, [*command, "--max-pixels", "4096"]).exit_code == 0
