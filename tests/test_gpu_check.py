"""benchmarks/gpu-check.sh: its CPU twin runs the same code at tiny sizes, so the GPU check cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pfadseg.pipeline.gpu_check import projected_protocol_s
from tests.conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu-check.sh"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHON": sys.executable})


def test_projected_protocol_time_is_15_categories_of_both_stages() -> None:
    assert projected_protocol_s(student_it_s=10.0, seg_it_s=20.0) == pytest.approx(15 * (300 + 200))


@pytest.mark.slow
def test_the_cpu_twin_prints_the_table_and_writes_the_figures(tmp_path: Path) -> None:
    proc = _run("--device", "cpu", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| training | variant | student it/s" in proc.stdout and "| inference |" in proc.stdout
    projected = [line for line in proc.stdout.splitlines() if line.startswith("projected full protocol")]
    assert len(projected) == 2 and all("min" in line for line in projected)
    figures = json.loads((tmp_path / "gpu-check.json").read_text())
    assert figures["device"] == "cpu" and figures["tiny"] is True
    assert figures["phases_done"] == ["synth", "train fp32", "predict", "one category", "packing"]
    assert figures["synth"]["composer_samples_per_s"] > 0
    assert {r["precision"] for r in figures["predict"]} == {"fp32", "bf16"}
    for variant in ("destseg", "pfadseg"):
        student = figures["train"]["fp32"][variant]["student"]
        assert student["it_s"] > 0 and 0 < student["kernel_ops"] < student["ops"], "ops per step in the CPU twin"
        assert f"| fp32 | {variant} |" in proc.stdout
    assert figures["train"]["fp32"]["pfadseg"]["student"]["profile"]["kernels_per_step"] > 0
    assert figures["train"]["fp32"]["pfadseg"]["student"]["gflop_per_step"] > 0
    one = figures["one_category"]
    assert set(one["seconds"]) == {"train_student", "train_seg", "calibrate", "evaluate"}
    assert all(one["loops"][stage]["steady_it_s"] > 0 for stage in ("student", "seg"))
    assert set(figures["packing"]) == {"1", "2"} and all(r["student"] > 0 for r in figures["packing"].values())
    assert figures["projected_protocol_s"] > 0 and figures["projected_from_loops_s"] > 0


def test_bad_arguments_are_refused() -> None:
    assert _run("--bogus").returncode == 2
    assert "--out DIR is required" in _run("--device", "cpu").stderr
