"""Teacher + student + segmentation net as one inference module (DeSTSeg §3.3 / PFADSeg §3.3 inference)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pfadseg.models.anomaly_map import cosine_distance_maps, dest_map, seg_input


class AnomalyDetector(nn.Module):
    """Normalised images -> segmentation and DeST anomaly maps at the input size (bilinear, no smoothing)."""

    def __init__(self, teacher: nn.Module, student: nn.Module, segnet: nn.Module) -> None:
        super().__init__()
        self.teacher, self.student, self.segnet = teacher, student, segnet

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images B x 3 x H x W -> (seg map B x 1 x H x W in [0, 1], DeST map B x 1 x H x W in [0, 8])."""
        size = images.shape[-2:]
        teacher_feats = self.teacher(images)
        student_feats = self.student(images)
        seg = self.segnet(seg_input(student_feats, teacher_feats))  # B x 1 x H/4 x W/4
        seg = F.interpolate(seg.float(), size=size, mode="bilinear", align_corners=False)
        dest = dest_map(cosine_distance_maps(student_feats, teacher_feats), size=teacher_feats[0].shape[-2:])
        dest = F.interpolate(dest.float(), size=size, mode="bilinear", align_corners=False)
        return seg, dest
