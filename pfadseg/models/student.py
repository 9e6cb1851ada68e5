"""Denoising student: ResNet-18 encoder, reversed decoder, no skips (DeSTSeg §3.1; PFADSeg §3.1)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from pfadseg.config import ModelConfig
from pfadseg.models.blocks import BasicBlock, BlockParts, kaiming_init_, make_stage
from pfadseg.models.pa_block import pa_block_parts
from pfadseg.seeding import seeded_from

DecoderUpsample = Literal["between_stages", "in_block"]


class Encoder(nn.Module):
    """ResNet-18 (stem 7x7/2 + maxpool, stages [2, 2, 2, 2] of 64/128/256/512) with timm's random init."""

    def __init__(self, parts: BlockParts = BlockParts()) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = make_stage(64, 64, parts=parts)
        self.layer2 = make_stage(64, 128, stride=2, parts=parts)
        self.layer3 = make_stage(128, 256, stride=2, parts=parts)
        self.layer4 = make_stage(256, 512, stride=2, parts=parts)
        # timm ResNet.init_weights(zero_init_last=True): Kaiming fan_out for every conv (AFF, SPR and PCAR
        # convs included), BN 1/0, then bn2 of every block zeroed. With AFF a zeroed bn2 does not make the
        # block the identity as in a plain ResNet: X = 0 gives relu(2 * (1 - M(Y)) * Y), a gated shortcut
        # (about Y while M(Y) is near 0.5); bn2 still gets gradients through AFF's 2 * M * X term.
        kaiming_init_(self)
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # B x 3 x H x W -> [B x 64 x H/4, B x 128 x H/8, B x 256 x H/16, B x 512 x H/32] (square notation)
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        x1 = self.layer1(x)
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        x4 = self.layer4(x3)
        return [x1, x2, x3, x4]


class Decoder(nn.Module):
    """Reversed ResNet-18: stages 512->512, 512->256, 256->128, 128->64 of 2 blocks each, bilinear upsampling.

    ``between_stages`` (DeSTSeg): interpolate to the encoder's feature sizes between stages.
    ``in_block``: the first block of stages 3..1 doubles its input before conv1 and the shortcut.
    """

    def __init__(self, parts: BlockParts = BlockParts(),
                 upsample: DecoderUpsample = "between_stages") -> None:
        super().__init__()
        if upsample not in ("between_stages", "in_block"):
            raise ValueError(f"Decoder: upsample must be 'between_stages' or 'in_block', got {upsample!r}")
        self.in_block = upsample == "in_block"
        self.layer4 = make_stage(512, 512, parts=parts)
        self.layer3 = make_stage(512, 256, parts=parts, upsample=self.in_block)
        self.layer2 = make_stage(256, 128, parts=parts, upsample=self.in_block)
        self.layer1 = make_stage(128, 64, parts=parts, upsample=self.in_block)
        kaiming_init_(self)  # DeSTSeg's loop over the decoder: no zero-init of bn2

    def _up(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        return x if self.in_block else F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # encoder [x1, x2, x3, x4] (only x4 is read; x1..x3 give the sizes)
        # -> (B x 64 x H/4 x W/4, B x 128 x H/8 x W/8, B x 256 x H/16 x W/16)
        x1, x2, x3, x4 = feats
        b4 = self.layer4(x4)  # B x 512 x H/32 x W/32
        b3 = self.layer3(self._up(b4, x3.shape[-2:]))
        b2 = self.layer2(self._up(b3, x2.shape[-2:]))
        b1 = self.layer1(self._up(b2, x1.shape[-2:]))
        return b1, b2, b3


class Student(nn.Module):
    """Encoder -> Decoder; matched level by level to the teacher's (64@1/4, 128@1/8, 256@1/16)."""

    def __init__(self, parts: BlockParts = BlockParts(),
                 decoder_upsample: DecoderUpsample = "between_stages") -> None:
        super().__init__()
        self.encoder = Encoder(parts)
        self.decoder = Decoder(parts, decoder_upsample)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # B x 3 x H x W -> (B x 64 x H/4 x W/4, B x 128 x H/8 x W/8, B x 256 x H/16 x W/16)
        return self.decoder(self.encoder(x))


def build_student(model_cfg: ModelConfig, generator: torch.Generator | None = None) -> Student:
    """Student with the AFF/PCAR switches of ``model_cfg`` and its decoder upsampling."""
    with seeded_from(generator):
        return Student(pa_block_parts(model_cfg), model_cfg.decoder_upsample)
