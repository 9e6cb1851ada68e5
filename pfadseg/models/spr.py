"""SPR: spatial pyramid recalibration weights of MSPA, Yu et al. EAAI 2024 (PFADSeg §3.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def quadrant_means(x: torch.Tensor) -> torch.Tensor:
    """``adaptive_avg_pool2d(x, 2)``: B x C x 2 x 2 means of the four quadrants; a plain average pool when the sides
    are even (every feature map of a 32-multiple image), whose kernels are faster on channels_last tensors. ONNX
    export keeps the adaptive pool (pfadseg.export gives it static slices; a traced kernel size is not static)."""
    h, w = x.shape[-2:]
    if h % 2 or w % 2 or torch.onnx.is_in_onnx_export():
        return F.adaptive_avg_pool2d(x, 2)
    return F.avg_pool2d(x, (h // 2, w // 2))


class SPR(nn.Module):
    """Channel weights in (0, 1) from global (1x1) and local (2x2) average pools; returns w, not x * w."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = channels // reduction
        if hidden < 1:
            raise ValueError(f"SPR: {channels} channels with reduction {reduction} leave no hidden unit")
        self.fc1 = nn.Conv2d(5 * channels, hidden, 1, bias=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # B x C x H x W -> B x C x 1 x 1
        b = x.shape[0]
        pooled_global = x.mean((2, 3), keepdim=True)  # B x C x 1 x 1: adaptive_avg_pool2d(x, 1)
        pooled_local = quadrant_means(x).reshape(b, -1, 1, 1)  # B x 4C x 1 x 1, index c*4 + 2i + j
        hidden = F.relu(self.fc1(torch.cat([pooled_global, pooled_local], dim=1)))  # B x C/r x 1 x 1
        return torch.sigmoid(self.fc2(hidden))
