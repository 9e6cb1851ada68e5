"""Asymmetric student input: k x k patches through one batched ResNet pass, stitched back (ADPS Sec. III-A)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from pfadseg.config import Backbone
from pfadseg.models.blocks import BasicBlock, kaiming_init_, make_stage
from pfadseg.models.teacher import BACKBONES

SplitAt = Literal["input", "stage1", "stage2"]
_CUT = {"input": 0, "stage1": 1, "stage2": 2}  # stages (stem, layer1, ...) run on the whole image before the cut


def patchify(x: torch.Tensor, k: int) -> torch.Tensor:
    """B x C x H x W -> (B*k*k) x C x H/k x W/k; patch (i, j) of image b lands at index b*k*k + i*k + j."""
    b, c, h, w = x.shape
    if h % k or w % k:
        raise ValueError(f"patchify: a {h}x{w} map cannot be cut into {k} x {k} equal patches")
    return x.reshape(b, c, k, h // k, k, w // k).permute(0, 2, 4, 1, 3, 5).reshape(b * k * k, c, h // k, w // k)


def stitch(x: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`patchify` for any per-patch size: (B*k*k) x C x h x w -> B x C x k*h x k*w."""
    n, c, h, w = x.shape
    if n % (k * k):
        raise ValueError(f"stitch: {n} patches are not a whole number of {k} x {k} grids")
    b = n // (k * k)
    return x.reshape(b, k, k, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(b, c, k * h, k * w)


class PatchStudent(nn.Module):
    """Random-init ResNet (the teacher's backbone) to layer3 seeing the image as k x k patches from ``split_at`` on
    (ADPS Sec. III-A).

    Returns [C1 @ 1/4, C2 @ 1/8, C3 @ 1/16] of the full image; levels computed before the cut stay whole.
    """

    def __init__(self, k: int, split_at: SplitAt = "input", backbone: Backbone = "resnet18") -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"PatchStudent: k must be >= 1, got {k}")
        if split_at not in _CUT:
            raise ValueError(f"PatchStudent: split_at must be one of {', '.join(_CUT)}, got {split_at!r}")
        if backbone not in BACKBONES:
            raise ValueError(f"PatchStudent: backbone must be one of {', '.join(BACKBONES)}, got {backbone!r}")
        self.k, self.split_at = k, split_at
        if backbone == "resnet18":
            self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.act1 = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
            self.layer1 = make_stage(64, 64)
            self.layer2 = make_stage(64, 128, stride=2)
            self.layer3 = make_stage(128, 256, stride=2)
            kaiming_init_(self)  # as the DeSTSeg student's Encoder: Kaiming fan_out, BN 1/0, bn2 of every block zeroed
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)
        else:  # torchvision's ResNet init is the same rule: Kaiming fan_out, BN 1/0, last BN of every block zeroed
            net = BACKBONES[backbone][0](weights=None, zero_init_residual=True)
            self.conv1, self.bn1, self.act1, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
            self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.act1(self.bn1(self.conv1(x))))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # B x 3 x H x W -> [B x C1 x H/4 x W/4, B x C2 x H/8 x W/8, B x C3 x H/16 x W/16]
        h, w = x.shape[-2:]
        unit = 16 * self.k
        if h % unit or w % unit:
            raise ValueError(f"PatchStudent: image size {h}x{w} must be a multiple of 16 * k = {unit} (k={self.k}) "
                             "so that every patch reaches the 1/16 level exactly")
        cut = _CUT[self.split_at]
        feats = []
        for i, stage in enumerate((self._stem, self.layer1, self.layer2, self.layer3)):
            if i == cut:
                x = patchify(x, self.k)
            x = stage(x)
            if i > 0:
                feats.append(x if i < cut else stitch(x, self.k))
        return feats
