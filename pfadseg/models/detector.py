"""The detectors, inference modules that return a :class:`Detection`: teacher + student + segmentation net
(DeSTSeg §3.3 / PFADSeg §3.3 inference) and ADPS's network (ADPS Algorithm 1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from pfadseg.models.adps import ADPSNet
from pfadseg.models.anomaly_map import cosine_distance_maps, dest_map, seg_input


class Detection(NamedTuple):
    """What a detector returns for a batch of B images at H x W."""

    anomaly_map: torch.Tensor  # B x 1 x H x W float32: the architecture's map (segmentation, or ADPS's PSM)
    score: torch.Tensor  # B float64: the architecture's image score of anomaly_map (pfadseg.score.maps)
    dest_map: torch.Tensor  # B x 1 x H x W float32 in [0, 8]: the product of the cosine-distance maps, unscored


def dest_anomaly_map(student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor],
                     size: torch.Size) -> torch.Tensor:
    """DeST map (product of the cosine-distance maps at the finest feature size), bilinearly at ``size``."""
    dest = dest_map(cosine_distance_maps(student_feats, teacher_feats), size=teacher_feats[0].shape[-2:])
    return F.interpolate(dest.float(), size=size, mode="bilinear", align_corners=False)


class AnomalyDetector(nn.Module):
    """Normalised images -> :class:`Detection`: segmentation map at the input size (bilinear, no smoothing), its
    image score by ``score`` (:func:`pfadseg.score.maps.score_module`), DeST map."""

    def __init__(self, teacher: nn.Module, student: nn.Module, segnet: nn.Module, score: nn.Module) -> None:
        super().__init__()
        self.teacher, self.student, self.segnet, self.score = teacher, student, segnet, score

    def forward(self, images: torch.Tensor) -> Detection:
        # images B x 3 x H x W
        size = images.shape[-2:]
        teacher_feats = self.teacher(images)
        student_feats = self.student(images)
        seg = self.segnet(seg_input(student_feats, teacher_feats))  # B x 1 x H/4 x W/4
        seg = F.interpolate(seg.float(), size=size, mode="bilinear", align_corners=False)
        return Detection(seg, self.score(seg), dest_anomaly_map(student_feats, teacher_feats, size))


class ADPSDetector(nn.Module):
    """Normalised images -> :class:`Detection`: PSM anomaly probability in [0, 1] at the input size, its image
    score by ``score`` (ADPS Algorithm 1: :class:`pfadseg.score.maps.SmoothedMax`), DeST map."""

    def __init__(self, net: ADPSNet, score: nn.Module) -> None:
        super().__init__()
        self.net, self.score = net, score

    def forward(self, images: torch.Tensor) -> Detection:
        # images B x 3 x H x W
        out = self.net(images)
        seg = out.probs[:, 1:2].float()
        return Detection(seg, self.score(seg),
                         dest_anomaly_map(out.student_feats, out.teacher_feats, images.shape[-2:]))
