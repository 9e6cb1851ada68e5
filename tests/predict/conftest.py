"""A tiny trained run (64 px, DeSTSeg baseline, random teacher, one step per stage), once per session."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pfadseg.config import Config, config_from_dict, read_params
from pfadseg.fsio import read_json
from pfadseg.paths import Layout
from pfadseg.pipeline.acquire_images import acquire_images
from pfadseg.pipeline.acquire_textures import acquire_textures
from pfadseg.pipeline.bank import run_bank
from pfadseg.pipeline.calibrate import CALIBRATE
from pfadseg.pipeline.train_seg import TRAIN_SEG
from pfadseg.pipeline.train_student import TRAIN_STUDENT
from pfadseg.predict import Predictor, load_predictor
from tests.conftest import REPO, TINY

CATEGORY = "bottle"
BASELINE = ("model.use_aff=false", "model.use_pcar=false", "model.use_rcm=false")
CALIBRATION_SAMPLES = 4
# Training quality does not matter here, only that real stage outputs exist: one step of batch 2 per stage.
ONE_STEP = ("train.student.iterations=1", "train.student.batch_size=2", "train.seg.iterations=1",
            "train.seg.batch_size=2", "train.checkpoint_every=100", f"calibrate.n_samples={CALIBRATION_SAMPLES}")


@dataclass(frozen=True)
class TrainedRun:
    """A trained run: its config, layout, the run folder as trained, and a copy with stored calibration."""

    root: Path
    cfg: Config
    layout: Layout
    model_dir: Path  # models/bottle/seed0 without calibration.json
    calibrated_dir: Path  # the same model files with the calibrate stage's calibration.json
    calibration: dict[str, Any]

    @property
    def test_images(self) -> Path:
        return self.layout.images / CATEGORY / "test"


def tiny_run_config(*overrides: str) -> Config:
    """The tiny settings (offline data, random teacher, DeSTSeg baseline), one category."""
    return config_from_dict(read_params(REPO / "params.yaml"), [
        *TINY, "data.source=synthetic", "data.textures=procedural", "model.teacher_weights=random", *BASELINE,
        *ONE_STEP, f"data.categories=[{CATEGORY}]", *overrides,
    ])


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    root = tmp_path_factory.mktemp("predict_workspace")
    cfg = tiny_run_config()
    layout = Layout(root)  # absolute paths: no chdir
    acquire_images(cfg, layout, progress=False)
    acquire_textures(cfg, layout, progress=False)
    run_bank(cfg, layout, progress=False)
    TRAIN_STUDENT.invoke(cfg, layout, CATEGORY, 0, progress=False)
    TRAIN_SEG.invoke(cfg, layout, CATEGORY, 0, progress=False)
    CALIBRATE.invoke(cfg, layout, CATEGORY, 0)
    model_dir = layout.run_dir("models", CATEGORY, 0)
    calibrated_dir = root / "calibrated" / CATEGORY / "seed0"
    calibrated_dir.mkdir(parents=True)
    for name in ("student.pt", "seg.pt"):
        shutil.copy2(model_dir / name, calibrated_dir / name)
    shutil.move(layout.calibration(CATEGORY, 0), calibrated_dir / "calibration.json")  # model_dir: uncalibrated
    calibration = read_json(calibrated_dir / "calibration.json")["calibration"]
    return TrainedRun(root, cfg, layout, model_dir, calibrated_dir, calibration)


@pytest.fixture(scope="module")
def predictor(trained_run: TrainedRun) -> Predictor:
    """The calibrated tiny run, loaded for prediction on the CPU."""
    return load_predictor(trained_run.calibrated_dir, device="cpu")
