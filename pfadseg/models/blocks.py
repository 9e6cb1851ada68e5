"""ResNet BasicBlock; switches swap in PCAR for conv2, AFF for the residual sum: PA block (PFADSeg §3.1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pfadseg.config import AFFConfig, ModelConfig, PCARConfig, SPRConfig
from pfadseg.models.aff import AFF
from pfadseg.models.pcar import PCAR


@dataclass(frozen=True)
class BlockParts:
    """Which parts a BasicBlock swaps in; ``None`` keeps the torchvision part (both None: plain block)."""

    aff: AFFConfig | None = None
    pcar: PCARConfig | None = None
    spr: SPRConfig | None = None  # read by PCAR only

    @classmethod
    def from_config(cls, model_cfg: ModelConfig) -> BlockParts:
        return cls(aff=model_cfg.aff if model_cfg.use_aff else None,
                   pcar=model_cfg.pcar if model_cfg.use_pcar else None,
                   spr=model_cfg.spr if model_cfg.use_pcar else None)


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Post-activation ResNet BasicBlock: conv1-BN-ReLU, conv2 (or PCAR), bn2, + shortcut (or AFF), ReLU.

    ``upsample`` doubles the input size (bilinear, align_corners=False) before conv1 and the shortcut.
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, *, parts: BlockParts = BlockParts(),
                 upsample: bool = False) -> None:
        super().__init__()
        self.upsample = upsample
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        if parts.pcar is None:
            self.conv2: nn.Module = conv3x3(planes, planes)
        else:
            if parts.spr is None:
                raise ValueError("BasicBlock: PCAR needs the SPR settings (BlockParts.spr)")
            self.conv2 = PCAR(planes, branches=parts.pcar.branches, shared_spr=parts.pcar.shared_spr,
                              softmax=parts.pcar.softmax, spr_reduction=parts.spr.reduction)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes))
        self.aff = None if parts.aff is None else AFF(planes, parts.aff.reduction, parts.aff.factor_two)

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
