"""DVC stage ``calibrate@<category>-<seed>``: decision thresholds of a trained run (pfadseg.calibrate)."""

from __future__ import annotations

from pfadseg.arch.registry import architecture
from pfadseg.calibrate import calibrate_run
from pfadseg.config import Config, select_params
from pfadseg.data.images import load_train_set
from pfadseg.device import configure_backends, resolve_device
from pfadseg.fsio import write_json
from pfadseg.paths import Layout
from pfadseg.pipeline.entry import CATEGORY, ITEM, SEED, StageDef
from pfadseg.pipeline.training import RUN_DATA, run_file
from pfadseg.runs import TrainedRun
from pfadseg.synth.bank import BANK_PARAMS, AnomalyBank


def calibrate_params(arch: str) -> tuple[str, ...]:
    """What calibration reads: the model, its score rule, the bank and the composer's options."""
    spec = architecture(arch)
    return (*spec.model_params, *spec.score_params, *BANK_PARAMS, "bank.opacity_min",
            "bank.opacity_max", "train.augment", "calibrate", "eval.batch_size")


def run_calibrate(cfg: Config, layout: Layout, category: str, seed: int) -> None:
    """Fit the image and pixel thresholds of one trained run; write its calibration.json."""
    run = TrainedRun.open(layout.run_dir("models", category, seed), expect=cfg)
    device = resolve_device(cfg.train.device)
    configure_backends(device)
    images = load_train_set(layout.images, category, cfg.data.image_size)
    calibration = calibrate_run(cfg, category, seed, run.detector(device), run.arch.score_rule(cfg), images,
                                AnomalyBank.load(layout.bank, cfg), device)
    write_json(layout.calibration(category, seed), {
        "category": category, "run_seed": seed, "calibration": calibration, "teacher": run.arch.teacher_record(cfg),
        "stage_params": select_params(cfg, calibrate_params(cfg.model.arch)), "config": cfg.to_dict(),
    })


CALIBRATE = StageDef(
    "calibrate", run_calibrate, params=calibrate_params, per_run=True,
    deps=lambda arch: (*RUN_DATA, *map(run_file, architecture(arch).files)),
    outs=lambda arch: (str(ITEM.calibration(CATEGORY, SEED)),),  # type: ignore[arg-type]
)
