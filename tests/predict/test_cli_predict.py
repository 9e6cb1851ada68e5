"""`pfadseg predict` end to end: outputs for readable files, the corrupted one reported, exit code 1."""

from __future__ import annotations

import shutil
from pathlib import Path

from typer.testing import CliRunner

from pfadseg.cli import app
from tests.predict.conftest import TrainedRun


def test_predict_command_reports_a_corrupted_file_and_exits_non_zero(trained_run: TrainedRun,
                                                                      tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = sorted((trained_run.test_images / "good").iterdir())[0]
    shutil.copy(good, inputs / "part.png")
    (inputs / "broken.png").write_bytes(good.read_bytes()[:200])  # truncated PNG
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["predict", str(trained_run.calibrated_dir), str(inputs), "--out", str(out),
                                      "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert "1 image(s) scored" in result.output and "broken.png" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["part_heatmap.png", "part_mask.png", "part_overlay.png",
                                                     "predictions.csv"]
    csv = (out / "predictions.csv").read_text()
    assert "broken.png" in csv and "part.png" in csv
