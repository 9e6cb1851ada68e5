"""A trained run: the folder ``models/<category>/seed<k>/`` with its model files, stored config and calibration.

:meth:`TrainedRun.open` reads and checks the files of whichever architecture wrote the folder;
:meth:`TrainedRun.detector` builds its eval-mode detector. Evaluation, calibration, prediction, export and the
benchmarks all load runs through here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pfadseg.arch.base import same_teacher
from pfadseg.arch.registry import ARCHITECTURES, Architecture
from pfadseg.artifacts import ArtifactError, load_model_file
from pfadseg.config import Config, ConfigError, config_from_dict, upgrade_stored_config
from pfadseg.detectors import build_detector
from pfadseg.device import cuda_graphed
from pfadseg.fsio import read_json

CALIBRATION_FILE = "calibration.json"


def run_architecture(folder: Path) -> Architecture:
    """The architecture whose model files are all in ``folder``; an error naming what is missing otherwise."""
    for arch in ARCHITECTURES.values():
        if all((folder / f.name).is_file() for f in arch.files):
            return arch
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: no such model; pass a trained run's folder (models/<category>/seed<k>/)")
    wanted = " or ".join(" + ".join(f.name for f in a.files) for a in ARCHITECTURES.values())
    raise ArtifactError(f"{folder}: holds no complete trained run (expected {wanted}); train it first "
                        "(dvc repro, or the pfadseg train-* commands)")


def run_folder(model: Path | str) -> Path:
    """A run folder, given as the folder or as one of its model files."""
    model = Path(model)
    return model.parent if model.is_file() else model


@dataclass
class TrainedRun:
    """The model files of one run (checked against each other), its config, architecture and calibration."""

    folder: Path
    arch: Architecture
    config: Config  # the config it serves: ``expect``, or the one its last stage stored (calibration.json)
    files: dict[str, dict[str, Any]]  # file name -> {format, state_dict, meta}
    calibration: dict[str, Any] | None
    _detectors: dict[str, nn.Module] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, model: Path | str, *, expect: Config | None = None, teacher_weights: str | None = None
             ) -> TrainedRun:
        """Load a run folder (or a model file inside it).

        ``expect``: the config this run must serve (a stage's params): the architecture, the teacher and the
        architecture's own checks must agree. Without it the run's stored config is used, with
        ``teacher_weights`` replacing its ``model.teacher_weights`` (the same file elsewhere: its sha256 must
        match). ``calibration`` is None until the calibrate stage has run.
        """
        folder = run_folder(model)
        arch = run_architecture(folder)
        files = {f.name: load_model_file(folder / f.name, f.format) for f in arch.files}
        calibration_path = folder / CALIBRATION_FILE
        calibration_record = read_json(calibration_path) if calibration_path.is_file() else None
        # The config of the run's last stage: calibration.json when calibrated (it declares what predict reads)
        source, meta = ((calibration_path, calibration_record) if calibration_record is not None
                        else (folder / arch.files[-1].name, files[arch.files[-1].name]["meta"]))
        overrides = [f"model.teacher_weights={teacher_weights}"] if teacher_weights else []
        stored = _stored_config(source, meta, overrides)
        cfg = expect if expect is not None else stored
        if cfg.model.arch != arch.name:
            raise ArtifactError(f"{folder}: a model.arch={arch.name} run, but params.yaml gives model.arch="
                                f"{cfg.model.arch}; retrain it (dvc repro)")
        current = arch.teacher_record(cfg)
        for name, content in files.items():
            recorded = content["meta"].get("teacher", {})
            if not same_teacher(recorded, current):
                raise ArtifactError(f"{folder / name}: trained with teacher {recorded}, but the teacher now is "
                                    f"{current}; retrain it, or pass the original teacher weights (--teacher)")
            arch.check_stored(folder / name, _stored_config(folder / name, content["meta"]), cfg)
        calibration = calibration_record["calibration"] if calibration_record is not None else None
        return cls(folder, arch, cfg, files, calibration)

    def meta(self, name: str) -> dict[str, Any]:
        """The metadata stored in model file ``name``."""
        return self.files[name]["meta"]

    @property
    def wall_time_s(self) -> float:
        """Training time of all its stages."""
        return float(sum(content["meta"]["wall_time_s"] for content in self.files.values()))

    def detector(self, device: torch.device) -> nn.Module:
        """The eval-mode detector on ``device`` (built once per device), its inference replayed from CUDA graphs
        when the run was trained with ``train.cuda_graphs`` (:func:`pfadseg.device.cuda_graphed`)."""
        key = str(device)
        if key not in self._detectors:
            states: Mapping[str, dict[str, torch.Tensor]] = {n: c["state_dict"] for n, c in self.files.items()}
            teacher = self.arch.load_teacher(self.config, device)
            try:
                detector = build_detector(self.arch, self.config, teacher, states, device)
            except RuntimeError as exc:
                raise ArtifactError(f"{self.folder}: the weights do not fit the architecture of the stored config "
                                    f"({str(exc).splitlines()[0]}); are the model files from different runs?") \
                    from None
            self._detectors[key] = cuda_graphed(detector, device, self.config.train)
        return self._detectors[key]


def _stored_config(path: Path, meta: Mapping[str, Any], overrides: list[str] | None = None) -> Config:
    if "config" not in meta:
        raise ArtifactError(f"{path}: stores no config (meta['config']); retrain it with this version")
    try:
        return config_from_dict(upgrade_stored_config(meta["config"]), overrides or [])
    except ConfigError as exc:
        raise ArtifactError(f"{path}: its stored config does not validate with this pfadseg version ({exc}); "
                            "retrain the model or use the version that trained it") from None

