"""Post-Segmentation Module: UNet-decoder up-blocks from the WMB features to a 2-class mask (ADPS Sec. III, PSM)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pfadseg.models.blocks import conv3x3, kaiming_init_


class UpBlock(nn.Module):
    """Transposed conv (k2, s2) to ``cout``, concat of an optional skip, then [3x3 conv, BN, ReLU] x 2."""

    def __init__(self, cin: int, cout: int, skip: int = 0) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.conv = nn.Sequential(conv3x3(cout + skip, cout), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                                  conv3x3(cout, cout), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        # B x cin x h x w (+ B x skip x 2h x 2w) -> B x cout x 2h x 2w
        x = self.up(x)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv(x)


class PostSegmentation(nn.Module):
    """[C1, C2, C3] -> softmax over 2 classes at the input size, channel 1 = anomaly (ADPS Sec. III, PSM).

    Our reading (docs/deviations.md): P0 = C3; up-blocks 1, 2 take C2, C1 as skips; 3, 4 reach 1/2 and 1/1 without.
    """

    def __init__(self, widths: Sequence[int], in_channels: Sequence[int] = (64, 128, 256)) -> None:
        super().__init__()
        if len(widths) != 4 or len(in_channels) != 3:
            raise ValueError(f"PostSegmentation: expected 4 widths and 3 input levels, got {widths}, {in_channels}")
        c1, c2, c3 = in_channels
        w0, w1, w2, w3 = widths
        self.up1 = UpBlock(c3, w0, skip=c2)
        self.up2 = UpBlock(w0, w1, skip=c1)
        self.up3 = UpBlock(w1, w2)
        self.up4 = UpBlock(w2, w3)
        kaiming_init_(self)  # up-block convs as the DeSTSeg seg net; transposed convs and head keep PyTorch's init
        self.head = nn.Conv2d(w3, 2, 3, padding=1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        # [B x 64 x H/4, B x 128 x H/8, B x 256 x H/16] (channels as in_channels) -> B x 2 x H x W, float32
        c1, c2, c3 = feats
        x = self.up4(self.up3(self.up2(self.up1(c3, c2), c1)))
        return torch.softmax(self.head(x).float(), dim=1)
