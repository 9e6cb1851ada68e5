"""ResNet BasicBlock whose second convolution and residual sum are layer types it is given: torchvision's block by
default, PFADSeg's PA block with PCAR and AFF (PFADSeg §3.1, :func:`pfadseg.models.pa_block.pa_block_parts`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class BlockParts:
    """The layer types a BasicBlock swaps in, each built from the block's width: ``conv2(planes)`` for its second
    convolution, ``aff(planes)`` for its residual sum (called as ``aff(x, shortcut)``); ``None`` keeps
    torchvision's part (both None: the plain block)."""

    conv2: Callable[[int], nn.Module] | None = None
    aff: Callable[[int], nn.Module] | None = None


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Post-activation ResNet BasicBlock: conv1-BN-ReLU, conv2 (or ``parts.conv2``), bn2, + shortcut (or
    ``parts.aff``), ReLU.

    ``upsample`` doubles the input size (bilinear, align_corners=False) before conv1 and the shortcut.
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, *, parts: BlockParts = BlockParts(),
                 upsample: bool = False) -> None:
        super().__init__()
        self.upsample = upsample
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2: nn.Module = conv3x3(planes, planes) if parts.conv2 is None else parts.conv2(planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes))
        self.aff = None if parts.aff is None else parts.aff(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # B x Cin x H x W -> B x Cout x H/stride x W/stride (2H x 2W with upsample)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + shortcut if self.aff is None else self.aff(out, shortcut)  # AFF(X = bn2, Y = shortcut)
        return self.relu(out)


def make_stage(inplanes: int, planes: int, blocks: int = 2, stride: int = 1, *,
               parts: BlockParts = BlockParts(), upsample: bool = False) -> nn.Sequential:
    """``blocks`` BasicBlocks; the first carries the stride, the upsampling and the projection shortcut."""
    layers = [BasicBlock(inplanes, planes, stride, parts=parts, upsample=upsample)]
    layers += [BasicBlock(planes, planes, parts=parts) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def kaiming_init_(module: nn.Module) -> None:
    """DeSTSeg's init loop: convs Kaiming-normal fan_out (ReLU), BN weight 1 bias 0; conv biases untouched."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
