"""ADPS network: frozen teacher, patch student, WMB and post-segmentation module (ADPS Sec. III, Algorithm 1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from pfadseg.config import ADPSConfig, ModelConfig
from pfadseg.models.patchify import PatchStudent
from pfadseg.models.psm import PostSegmentation
from pfadseg.models.teacher import FEATURE_CHANNELS
from pfadseg.models.wmb import weight_mask
from pfadseg.seeding import seeded_from


class ADPSOutput(NamedTuple):
    """What training needs: both feature pyramids (Eq. 7) and the 2-class map (Eq. 8)."""

    teacher_feats: Sequence[torch.Tensor]  # C1 @ 1/4, C2 @ 1/8, C3 @ 1/16 (FEATURE_CHANNELS), detached
    student_feats: Sequence[torch.Tensor]  # same shapes, stitched from the patches
    probs: torch.Tensor  # B x 2 x H x W softmax, float32, channel 1 = anomaly


class ADPSNet(nn.Module):
    """Teacher sees the image, the student its k x k patches; PSM decodes the WMB features (ADPS Sec. III)."""

    def __init__(self, teacher: nn.Module, cfg: ADPSConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.teacher = teacher
        self.student = PatchStudent(cfg.k, cfg.split_at, cfg.backbone)
        self.psm = PostSegmentation(cfg.psm_widths, FEATURE_CHANNELS[cfg.backbone])

    def forward(self, images: torch.Tensor) -> ADPSOutput:
        # B x 3 x H x W normalised -> ADPSOutput (probs at H x W)
        teacher_feats = self.teacher(images)
        student_feats = self.student(images)
        weighted = [weight_mask(t, s, self.cfg.wmb_detach_student)[0]
                    for t, s in zip(teacher_feats, student_feats, strict=True)]
        return ADPSOutput(teacher_feats, student_feats, self.psm(weighted))


def build_adps(model_cfg: ModelConfig, teacher: nn.Module, generator: torch.Generator | None = None) -> ADPSNet:
    """ADPS network around ``teacher``: patch student and post-segmentation module from ``model.adps``."""
    with seeded_from(generator):
        return ADPSNet(teacher, model_cfg.adps)
