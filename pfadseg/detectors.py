"""Each architecture's detector, built from its networks: untrained (its shapes checked on the meta device) or
with a trained run's weights. Apart from :mod:`pfadseg.arch`, so that the training stages, which read an
architecture's description, do not depend on networks they never run."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping

import torch
from torch import nn

from pfadseg.arch.adps import ADPS_FILE
from pfadseg.arch.base import Architecture
from pfadseg.arch.destseg import SEG_FILE, STUDENT_FILE
from pfadseg.config import Config
from pfadseg.device import prepare_module
from pfadseg.models.adps import build_adps
from pfadseg.models.detector import ADPSDetector, AnomalyDetector
from pfadseg.models.segnet import build_segnet
from pfadseg.models.student import build_student
from pfadseg.models.teacher import build_teacher
from pfadseg.score.maps import score_module

States = Mapping[str, dict[str, torch.Tensor]]  # model file name -> its state dict


def _destseg(cfg: Config, teacher: nn.Module, score: nn.Module, device: torch.device,
             generator: torch.Generator | None) -> nn.Module:
    student, segnet = build_student(cfg.model, generator), build_segnet(cfg.model, generator)
    return AnomalyDetector(teacher, prepare_module(student, device, cfg.train),
                           prepare_module(segnet, device, cfg.train), score).eval()


def _destseg_states(detector: nn.Module, states: States) -> None:
    detector.student.load_state_dict(states[STUDENT_FILE.name])
    detector.segnet.load_state_dict(states[SEG_FILE.name])


def _adps(cfg: Config, teacher: nn.Module, score: nn.Module, device: torch.device,
          generator: torch.Generator | None) -> nn.Module:
    return ADPSDetector(prepare_module(build_adps(cfg.model, teacher, generator), device, cfg.train), score).eval()


def _adps_states(detector: nn.Module, states: States) -> None:
    detector.net.load_state_dict({**detector.net.state_dict(), **states[ADPS_FILE.name]})


Builder = Callable[[Config, nn.Module, nn.Module, torch.device, torch.Generator | None], nn.Module]
# model.arch -> (the untrained eval-mode detector (config, teacher, image score, ...) -> images -> Detection,
# loading its files' weights)
BUILDERS: dict[str, tuple[Builder, Callable[[nn.Module, States], None]]] = {
    "pfadseg": (_destseg, _destseg_states),
    "adps": (_adps, _adps_states),
}


def untrained_detector(arch: Architecture, cfg: Config, teacher: nn.Module, device: torch.device,
                       generator: torch.Generator | None = None) -> nn.Module:
    """Eval-mode detector of ``arch`` (its image score included) with freshly initialised trainable parts (from
    ``generator`` when given)."""
    return BUILDERS[arch.name][0](cfg, teacher, score_module(arch.score_rule(cfg)), device, generator)


def build_detector(arch: Architecture, cfg: Config, teacher: nn.Module, states: States,
                   device: torch.device) -> nn.Module:
    """The trained detector: :func:`untrained_detector` with the weights of ``arch.files``."""
    detector = untrained_detector(arch, cfg, teacher, device)
    BUILDERS[arch.name][1](detector, states)
    return detector


def build_problem(arch: Architecture, cfg: Config) -> str | None:
    """Why a stage could not build or score ``arch``'s detector for ``cfg``, or None.

    The detector is built and run on the meta device (shapes only: no memory, no weights, well under a second),
    so every size and module setting that a stage would refuse is refused before any stage runs.
    """
    size = cfg.data.image_size
    if problem := arch.score_rule(cfg).problem(size):
        return f"eval.{problem}" if problem.startswith("top_k") else problem
    meta = torch.device("meta")
    shapes_only = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, teacher_weights="random"),
                                      train=dataclasses.replace(cfg.train, channels_last=False, compile=False))
    logging.disable(logging.WARNING)  # the stand-in random teacher is no user setting: no warning about it
    try:
        with meta:
            teacher = build_teacher("random", arch.teacher_backbone(cfg))
            detector = untrained_detector(arch, shapes_only, teacher, meta)
            anomaly_map = detector(torch.empty(2, 3, size, size)).anomaly_map
    except (ValueError, RuntimeError) as exc:
        return f"the {arch.name} networks cannot be built for these settings: {exc}"
    finally:
        logging.disable(logging.NOTSET)
    if tuple(anomaly_map.shape[-2:]) != (size, size):
        return f"the anomaly map is {tuple(anomaly_map.shape[-2:])}, not data.image_size {size} square"
    return None
