"""Weight Mask Block: teacher features re-weighted by the teacher-student disagreement (ADPS Sec. III, WMB)."""

from __future__ import annotations

import torch

from pfadseg.models.anomaly_map import l2_normalize


def weight_mask(teacher_feat: torch.Tensor, student_feat: torch.Tensor,
                detach_student: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Parameter-free WMB of one level (ADPS Sec. III, Weight Mask Block): C = (1 - W) * T, W = per-pixel cosine.

    T, S: B x c x h x w -> (C: B x c x h x w, W: B x 1 x h x w in [-1, 1]), both float32 (eps 1e-8).
    ``detach_student`` stops the gradient from C into the student (ADPS is silent; our option, docs/deviations.md).
    """
    if detach_student:
        student_feat = student_feat.detach()
    cos = (l2_normalize(teacher_feat, eps=1e-8) * l2_normalize(student_feat, eps=1e-8)).sum(dim=1, keepdim=True)
    return (1 - cos) * teacher_feat.float(), cos
