"""A tiny trained run (64 px, DeSTSeg baseline, random teacher, one step per stage), once per session."""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pfadseg.artifacts import SEG_FORMAT, load_model_file, save_model_file
from pfadseg.calibrate import calibrate_run
from pfadseg.config import Config, config_from_dict, read_params
from pfadseg.paths import Layout
from pfadseg.pipeline.acquire import acquire_images, acquire_textures
from pfadseg.pipeline.bank import run_bank
from pfadseg.pipeline.train import run_train_seg, run_train_student, train_images
from pfadseg.predict import load_predictor
from pfadseg.synth.bank import AnomalyBank
from tests.conftest import REPO, TINY

CATEGORY = "bottle"
BASELINE = ("model.use_aff=false", "model.use_pcar=false", "model.use_rcm=false")
CALIBRATION_SAMPLES = 4
# Training quality does not matter here, only that real stage outputs exist: one step of batch 2 per stage.
ONE_STEP = ("train.student.iterations=1", "train.student.batch_size=2", "train.seg.iterations=1",
            "train.seg.batch_size=2", "train.checkpoint_every=100")


@dataclass(frozen=True)
class TrainedRun:
    """A trained run: its config, layout, the run folder as trained, and a copy with stored calibration."""

    root: Path
    cfg: Config
    layout: Layout
    model_dir: Path  # models/bottle/seed0 with the calibration the seg stage stored removed
    calibrated_dir: Path  # the same files, seg.pt with meta["calibration"]
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the random teacher's warning
        acquire_images(cfg, layout, progress=False)
        acquire_textures(cfg, layout, progress=False)
        run_bank(cfg, layout, progress=False)
        run_train_student(cfg, layout, CATEGORY, 0, progress=False)
        run_train_seg(cfg, layout, CATEGORY, 0, progress=False)
        model_dir = layout.seg(CATEGORY, 0).parent
        trained = load_model_file(model_dir / "seg.pt", SEG_FORMAT)  # the seg stage calibrates: undo it here
        save_model_file(model_dir / "seg.pt", SEG_FORMAT, trained["state_dict"],
                        {k: v for k, v in trained["meta"].items() if k != "calibration"})
        predictor = load_predictor(model_dir, device="cpu", require_threshold=False)
        calibration = calibrate_run(cfg, CATEGORY, 0, predictor.detector, train_images(cfg, layout, CATEGORY),
                                    AnomalyBank.load(layout.bank, cfg), predictor.device,
                                    n_samples=CALIBRATION_SAMPLES)
    calibrated_dir = root / "calibrated" / CATEGORY / "seed0"
    calibrated_dir.mkdir(parents=True)
    shutil.copy2(model_dir / "student.pt", calibrated_dir / "student.pt")
    seg = load_model_file(model_dir / "seg.pt", SEG_FORMAT)
    save_model_file(calibrated_dir / "seg.pt", SEG_FORMAT, seg["state_dict"], {**seg["meta"],
                                                                              "calibration": calibration})
    return TrainedRun(root, cfg, layout, model_dir, calibrated_dir, calibration)
