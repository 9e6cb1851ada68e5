"""Training losses of DeSTSeg/PFADSeg (DeSTSeg's model/losses.py; PFADSeg §3.4) and ADPS (Eq. 7)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from pfadseg.models.anomaly_map import cosine_distance_maps


def cosine_distillation_loss(
    student_feats: Sequence[torch.Tensor],
    teacher_feats: Sequence[torch.Tensor],
    reduction: Literal["sum", "mean"],
) -> torch.Tensor:
    """Sum over levels of the per-image spatial mean of (1 - cos); summed (reference code) or averaged over the batch.

    The reference code sums over the batch, so its gradient is B times the paper's per-image Eq. 4: with
    SGD this is a B-fold learning-rate difference, hence the named option.
    """
    terms = [per_image.sum() if reduction == "sum" else per_image.mean()
             for per_image in (dist.float().mean(dim=(1, 2, 3))  # each B x 1 x h x w -> B
                               for dist in cosine_distance_maps(student_feats, teacher_feats))]
    total = terms[0]
    for term in terms[1:]:  # summed from the first level, not from a zero tensor: one op fewer, the same sum
        total = total + term
    return total


def focal_loss(probs: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """Binary focal loss on probabilities, no alpha, mean over all elements (log clamped at -100 as BCE).

    BCE is written out (not F.binary_cross_entropy, which asserts its input range) so that a diverged,
    NaN output reaches the training loop's NaN guard instead of crashing inside the loss.
    """
    probs, target = probs.float(), target.float()
    tiny = math.exp(-100)  # clamping p (not log p) keeps the gradient finite at p = 0 or 1
    bce = -(target * probs.clamp(min=tiny).log() + (1 - target) * (1 - probs).clamp(min=tiny).log())
    p_t = probs * target + (1 - probs) * (1 - target)
    return ((1 - p_t).pow(gamma) * bce).mean()


def l1_loss(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between the probability map and the binary target."""
    return (probs.float() - target.float()).abs().mean()


def seg_target(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Mask B x 1 x H x W -> B x 1 x h x w target: bilinear (align_corners=False, no antialias), then >= 0.5."""
    small = F.interpolate(mask.float(), size=size, mode="bilinear", align_corners=False)
    return (small >= 0.5).float()


def signed_distillation_loss(
    student_feats: Sequence[torch.Tensor],
    teacher_feats: Sequence[torch.Tensor],
    mask: torch.Tensor,
    *,
    target_resize: Literal["bilinear", "maxpool"],
    clamp: bool,
) -> torch.Tensor:
    """ADPS Eq. 7: per level the pixel mean of (1 - Y)(1 - cos) + Y cos (``clamp``: Y max(cos, 0)), summed over levels.

    Y is the mask at the level's size: ``bilinear`` as :func:`seg_target`, ``maxpool`` marks a cell holding any
    anomalous pixel (mask >= 0.5). Averaging over pixels and images gives the per-image mean over the batch.
    """
    if target_resize not in ("bilinear", "maxpool"):
        raise ValueError(f"signed_distillation_loss: target_resize must be bilinear or maxpool, got {target_resize!r}")
    total = torch.zeros((), device=student_feats[0].device, dtype=torch.float32)
    for dist in cosine_distance_maps(student_feats, teacher_feats):  # each B x 1 x h x w, 1 - cos
        size = dist.shape[-2:]
        y = F.adaptive_max_pool2d((mask >= 0.5).float(), size) if target_resize == "maxpool" else seg_target(mask, size)
        cos = 1 - dist
        total = total + ((1 - y) * dist + y * (cos.clamp(min=0) if clamp else cos)).mean()
    return total
