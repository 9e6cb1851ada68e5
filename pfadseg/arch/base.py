"""What every architecture provides, the teacher handling included (DeSTSeg §3.1, ADPS Sec. III-A)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pfadseg.config import Backbone, Config
from pfadseg.device import prepare_module
from pfadseg.models.teacher import build_teacher, teacher_identity
from pfadseg.score.rule import ScoreRule
from pfadseg.seeding import derive_seed, seeded

# Params every model-building stage reads: the data size, the teacher and the device settings.
MODEL_COMMON_PARAMS: tuple[str, ...] = (
    "seed", "data.image_size", "model.arch", "model.teacher_weights", "train.device", "train.amp",
    "train.channels_last", "train.fewer_kernels", "train.accelerator_path_on_cpu",
)


@dataclass(frozen=True)
class ModelFile:
    """One file of a trained run: its name in the run folder and its format tag."""

    name: str
    format: str


class Architecture(ABC):
    """An architecture: its model files, training stages and the params each reads, its score rule and teacher. Its
    detector is built by :mod:`pfadseg.detectors`, so that a stage that reads this description does not depend on
    every network of the architecture."""

    name: str
    files: tuple[ModelFile, ...]  # what its training stages write into a run folder, in training order
    train_stages: tuple[str, ...]  # its DVC training stages, in order (the pipeline package wires them)
    curves: tuple[str, ...]  # the dvclive folder of each training stage, in order
    model_params: tuple[str, ...]  # what building its detector reads
    stage_params: Mapping[str, tuple[str, ...]]  # training stage -> the params it reads
    score_params: tuple[str, ...]  # the params of its image-score rule (calibrate, evaluate)
    report_params: tuple[str, ...]  # the params its report lines read
    score_range: tuple[float, float]  # [low, high] of its anomaly map and image score: the thresholds' range

    @abstractmethod
    def score_rule(self, cfg: Config) -> ScoreRule:
        """The image-score rule of this architecture."""

    @abstractmethod
    def describe_model(self, cfg: Config) -> str:
        """One line for a report's provenance."""

    @abstractmethod
    def describe_schedule(self, cfg: Config) -> str:
        """The training schedule in one line."""

    @abstractmethod
    def teacher_backbone(self, cfg: Config) -> Backbone:
        """The backbone of its frozen teacher."""

    @abstractmethod
    def variant(self, cfg: Config) -> str:
        """Short name of the configured model, e.g. ``destseg``, ``aff+pcar+rcm``, ``adps``."""

    def load_teacher(self, cfg: Config, device: torch.device) -> nn.Module:
        """The frozen teacher; a ``random`` teacher is seeded from ``seed`` so every stage sees the same one."""
        with seeded(derive_seed(cfg.seed, "teacher")):
            teacher = build_teacher(cfg.model.teacher_weights, self.teacher_backbone(cfg))
        return prepare_module(teacher, device, cfg.train)

    def teacher_record(self, cfg: Config) -> dict[str, Any]:
        """Provenance of the teacher weights, with the seed when they are random."""
        identity = teacher_identity(cfg.model.teacher_weights, self.teacher_backbone(cfg))
        record: dict[str, Any] = {"weights": cfg.model.teacher_weights, "name": identity["name"],
                                  "sha256": identity["sha256"]}
        if cfg.model.teacher_weights == "random":
            record["seed"] = derive_seed(cfg.seed, "teacher")
        return record

    def check_stored(self, path: Any, stored: Config, cfg: Config) -> None:  # noqa: B027 - optional hook
        """Refuse a model file whose stored settings do not fit ``cfg`` (a hook; nothing by default)."""


def same_teacher(stored: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """Same weights (by hash) and, for a random teacher, the same seed; file paths may differ across machines."""
    return all(stored.get(k) == current.get(k) for k in ("sha256", "seed"))
