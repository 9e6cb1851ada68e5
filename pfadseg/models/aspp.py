"""ASPP of DeSTSeg's segmentation head (DeSTSeg §3.3, its model/model_utils.py); RCM in PFADSeg."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ASPP(nn.Module):
    """Global-pool branch + 3x3 dilated branches (no 1x1 rate-1 branch), concat, 3x3 conv + BN + ReLU."""

    def __init__(self, in_channels: int = 256, out_channels: int = 256,
                 rates: Sequence[int] = (6, 12, 18)) -> None:
        super().__init__()
        # BN on the pooled 1x1 map normalises over the batch only: train mode needs a batch of 2 or more.
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(in_channels, out_channels, 1))
        self.atrous = nn.ModuleList(_conv_bn_relu(in_channels, out_channels, 3, rate) for rate in rates)
        self.project = _conv_bn_relu((1 + len(rates)) * out_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # B x Cin x H x W -> B x Cout x H x W
        h, w = x.shape[-2:]
        pooled = self.pool(x).expand(-1, -1, h, w)  # bilinear resize of a 1x1 map = broadcast
        return self.project(torch.cat([pooled, *(branch(x) for branch in self.atrous)], dim=1))
