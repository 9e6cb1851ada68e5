"""What every architecture provides, the teacher handling included (DeSTSeg §3.1, ADPS Sec. III-A)."""

from __future__ import annotations

import dataclasses
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pfadseg.config import Backbone, Config
from pfadseg.device import prepare_module
from pfadseg.evaluate import ScoreRule
from pfadseg.models.build import build_teacher
from pfadseg.models.teacher import teacher_identity
from pfadseg.seeding import derive_seed, seeded

# Params every model-building stage reads: the data size, the teacher and the device settings.
MODEL_COMMON_PARAMS: tuple[str, ...] = (
    "seed", "data.source", "data.image_size", "model.arch", "model.teacher_weights", "train.device", "train.amp",
    "train.channels_last", "train.fewer_kernels", "train.accelerator_path_on_cpu",
)


@dataclass(frozen=True)
class ModelFile:
    """One file of a trained run: its name in the run folder and its format tag."""

    name: str
    format: str


class Architecture(ABC):
    """An architecture: its model files, how a detector is built from them, its score rule and stage params."""

    name: str
    files: tuple[ModelFile, ...]  # what its training stages write into a run folder, in training order
    train_stages: tuple[str, ...]  # its DVC training stages, in order (the pipeline package wires them)
    curves: tuple[str, ...]  # the dvclive folder of each training stage, in order
    exportable: bool  # pfadseg export can write it as one ONNX graph
    model_params: tuple[str, ...]  # what building its detector reads
    stage_params: Mapping[str, tuple[str, ...]]  # training stage -> the params it reads
    score_params: tuple[str, ...]  # the params of its image-score rule (calibrate, evaluate)
    report_params: tuple[str, ...]  # the params its report lines read
    score_range: tuple[float, float]  # [low, high] of its anomaly map and image score: the thresholds' range

    @abstractmethod
    def untrained_detector(self, cfg: Config, teacher: nn.Module, device: torch.device,
                           generator: torch.Generator | None = None) -> nn.Module:
        """Eval-mode detector ``images -> (anomaly map, DeST map)`` with freshly initialised trainable parts."""

    @abstractmethod
    def load_states(self, detector: nn.Module, states: Mapping[str, dict[str, torch.Tensor]]) -> None:
        """Load the state dicts of :attr:`files` (by file name) into a detector of this architecture."""

    def build_detector(self, cfg: Config, teacher: nn.Module, states: Mapping[str, dict[str, torch.Tensor]],
                       device: torch.device) -> nn.Module:
        """The trained detector: :meth:`untrained_detector` with the weights of :attr:`files`."""
        detector = self.untrained_detector(cfg, teacher, device)
        self.load_states(detector, states)
        return detector

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

    def build_problem(self, cfg: Config) -> str | None:
        """Why a stage could not build or score this architecture's detector for ``cfg``, or None.

        The detector is built and run on the meta device (shapes only: no memory, no weights, well under a second),
        so every size and module setting that a stage would refuse is refused before any stage runs.
        """
        meta = torch.device("meta")
        shapes_only = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, teacher_weights="random"),
                                          train=dataclasses.replace(cfg.train, channels_last=False, compile=False))
        size = cfg.data.image_size
        logging.disable(logging.WARNING)  # the stand-in random teacher is no user setting: no warning about it
        try:
            with meta:
                detector = self.untrained_detector(shapes_only, build_teacher("random", self.teacher_backbone(cfg)),
                                                   meta)
                anomaly_map, _ = detector(torch.empty(2, 3, size, size))
        except (ValueError, RuntimeError) as exc:
            return f"the {self.name} networks cannot be built for these settings: {exc}"
        finally:
            logging.disable(logging.NOTSET)
        if tuple(anomaly_map.shape[-2:]) != (size, size):
            return f"the anomaly map is {tuple(anomaly_map.shape[-2:])}, not data.image_size {size} square"
        if problem := self.score_rule(cfg).problem(size):
            return f"eval.{problem}" if problem.startswith("top_k") else problem
        return None

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
