"""Feature normalisation, cosine-distance maps, DeST map and segmentation input (DeSTSeg §3.2-3.3)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """x / (||x||_2 + eps) along channels, in float32 (a bf16 cosine near 1 keeps only ~3 digits)."""
    x = x.float()
    return x / (torch.linalg.vector_norm(x, dim=1, keepdim=True) + eps)  # vector_norm: zero grad at 0


def cosine_distance_maps(student_feats: Sequence[torch.Tensor],
                         teacher_feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per level 1 - sum_c s_hat * t_hat: list of B x 1 x h_k x w_k in [0, 2]."""
    return [1 - (l2_normalize(s) * l2_normalize(t)).sum(dim=1, keepdim=True)
            for s, t in zip(student_feats, teacher_feats, strict=True)]


def dest_map(maps: Sequence[torch.Tensor], size: int | Sequence[int]) -> torch.Tensor:
    """Product over levels of the maps resized bilinearly to ``size`` (the level-1 size): B x 1 x size."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    resized = [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps]
    out = resized[0]
    for m in resized[1:]:
        out = out * m
    return out


def seg_input(student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """-(s_hat * t_hat) per level, resized bilinearly to level 1 and concatenated: B x 448 x h1 x w1."""
    size = student_feats[0].shape[-2:]
    return torch.cat([F.interpolate(-(l2_normalize(s) * l2_normalize(t)), size=size, mode="bilinear",
                                    align_corners=False)
                      for s, t in zip(student_feats, teacher_feats, strict=True)], dim=1)
