"""AFF: attentional feature fusion with an MS-CAM gate, Dai et al. WACV 2021 (PFADSeg §3.1)."""

from __future__ import annotations

import torch
from torch import nn


def _bottleneck(channels: int, hidden: int) -> list[nn.Module]:
    """1x1 conv C->m (bias) + BN + ReLU + 1x1 conv m->C (bias) + BN, as in open-aff's fusion.py."""
    return [
        nn.Conv2d(channels, hidden, 1, bias=True),
        nn.BatchNorm2d(hidden),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden, channels, 1, bias=True),
        nn.BatchNorm2d(channels),
    ]


class GlobalMean(nn.Module):
    """``nn.AdaptiveAvgPool2d(1)`` as a mean over H and W (B x C x H x W -> B x C x 1 x 1): one reduction, faster
    than the adaptive pool on channels_last tensors; no parameters, so state dicts are unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


class MSCAM(nn.Module):
    """MS-CAM gate M(Z) = sigmoid(local(Z) + global(Z)) in (0, 1), Dai et al. WACV 2021 §3.2."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = channels // reduction
        if hidden < 1:
            raise ValueError(f"MS-CAM: {channels} channels with reduction {reduction} leave no bottleneck")
        self.local_att = nn.Sequential(*_bottleneck(channels, hidden))
        # BN on a 1x1 map normalises over the batch only: train mode needs a batch of 2 or more.
        self.global_att = nn.Sequential(GlobalMean(), *_bottleneck(channels, hidden))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # B x C x H x W (+ B x C x 1 x 1 broadcast) -> B x C x H x W
        return torch.sigmoid(self.local_att(z) + self.global_att(z))


class AFF(nn.Module):
    """Z = s * (M(X + Y) * X + (1 - M(X + Y)) * Y); s = 2 (official code, ``factor_two``) or 1 (paper)."""

    def __init__(self, channels: int, reduction: int = 4, factor_two: bool = True) -> None:
        super().__init__()
        self.gate = MSCAM(channels, reduction)
        self.scale = 2.0 if factor_two else 1.0

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # x, y: B x C x H x W (x: residual branch, y: shortcut) -> B x C x H x W
        w = self.gate(x + y)
        return self.scale * (y + (x - y) * w)  # = w * x + (1 - w) * y, promoting mixed dtypes (AMP)
