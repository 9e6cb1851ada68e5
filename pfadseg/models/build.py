"""Networks from a ModelConfig, optionally seeded from an explicit generator, and parameter counting."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from pfadseg.config import Backbone, ModelConfig
from pfadseg.models.adps import ADPSNet
from pfadseg.models.blocks import BlockParts
from pfadseg.models.segnet import SegNet
from pfadseg.models.student import Student
from pfadseg.models.teacher import Teacher
from pfadseg.seeding import seeded


@contextlib.contextmanager
def _seeded(generator: torch.Generator | None) -> Iterator[None]:
    """Module init draws from torch's global CPU RNG: a generator seeds a forked copy."""
    if generator is None:
        yield
        return
    with seeded(int(torch.randint(0, 2**62, (1,), generator=generator))):
        yield


def build_teacher(weights: str, backbone: Backbone) -> Teacher:
    """Frozen teacher on ``backbone`` with weights as ``model.teacher_weights`` gives them (``random``: init from
    torch's global RNG)."""
    return Teacher(weights, backbone)


def build_student(model_cfg: ModelConfig, generator: torch.Generator | None = None) -> Student:
    """Student with the AFF/PCAR switches of ``model_cfg`` and its decoder upsampling."""
    with _seeded(generator):
        return Student(BlockParts.from_config(model_cfg), model_cfg.decoder_upsample)


def build_segnet(model_cfg: ModelConfig, generator: torch.Generator | None = None) -> SegNet:
    """Segmentation net with the AFF/PCAR switches in ``res`` and RCM (``use_rcm``) or ASPP as head."""
    with _seeded(generator):
        return SegNet(BlockParts.from_config(model_cfg), model_cfg.rcm if model_cfg.use_rcm else None)


def build_adps(model_cfg: ModelConfig, teacher: nn.Module, generator: torch.Generator | None = None) -> ADPSNet:
    """ADPS network around ``teacher``: patch student and post-segmentation module from ``model.adps``."""
    with _seeded(generator):
        return ADPSNet(teacher, model_cfg.adps)


def count_parameters(module: nn.Module) -> int:
    """Weights + biases + BN affine (BN running buffers excluded), trainable or not."""
    return sum(p.numel() for p in module.parameters())
