"""Segmentation net: 2 residual blocks 448->256, ASPP or RCM head, sigmoid (DeSTSeg §3.3; PFADSeg §3.3)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pfadseg.config import ModelConfig, RCMConfig
from pfadseg.models.aspp import ASPP
from pfadseg.models.blocks import BlockParts, kaiming_init_, make_stage
from pfadseg.models.pa_block import pa_block_parts
from pfadseg.models.rcm import RCM
from pfadseg.seeding import seeded_from

SEG_IN_CHANNELS = 64 + 128 + 256
WIDTH = 256
ASPP_RATES = (6, 12, 18)


class SegNet(nn.Module):
    """``res`` (lr_res): 2 BasicBlocks; ``head`` (lr_head): ASPP or RCM, 3x3 conv-BN-ReLU, 1x1 conv."""

    def __init__(self, parts: BlockParts = BlockParts(), rcm: RCMConfig | None = None,
                 in_channels: int = SEG_IN_CHANNELS) -> None:
        super().__init__()
        self.res = make_stage(in_channels, WIDTH, parts=parts)
        kaiming_init_(self.res)  # the head keeps PyTorch's default init, as in DeSTSeg
        context: nn.Module = ASPP(WIDTH, WIDTH, ASPP_RATES) if rcm is None else RCM(
            WIDTH, rcm.band_kernel, rcm.square_kernel, rcm.mlp_ratio, rcm.layer_scale_init)
        self.head = nn.Sequential(
            context,
            nn.Conv2d(WIDTH, WIDTH, 3, padding=1, bias=False),
            nn.BatchNorm2d(WIDTH),
            nn.ReLU(inplace=True),
            nn.Conv2d(WIDTH, 1, 1, bias=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # B x 448 x h x w (anomaly_map.seg_input) -> B x 1 x h x w probabilities, float32
        logits = self.head(self.res(x))
        return torch.sigmoid(logits.float())  # fp32 sigmoid: bf16 would quantise p near 1 to steps of 2^-8

    def param_groups(self, lr_res: float, lr_head: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups: ``res`` at lr_res, ``head`` (ASPP/RCM + classifier) at lr_head."""
        return [{"name": "res", "params": list(self.res.parameters()), "lr": lr_res},
                {"name": "head", "params": list(self.head.parameters()), "lr": lr_head}]

    def rcm_layer_scale(self) -> float | None:
        """Mean |gamma| of the RCM layer scale (None with the ASPP head); a host sync, call at log points."""
        context = self.head[0]
        return float(context.gamma.detach().abs().mean()) if isinstance(context, RCM) else None


def build_segnet(model_cfg: ModelConfig, generator: torch.Generator | None = None) -> SegNet:
    """Segmentation net with the AFF/PCAR switches in ``res`` and RCM (``use_rcm``) or ASPP as head."""
    with seeded_from(generator):
        return SegNet(pa_block_parts(model_cfg), model_cfg.rcm if model_cfg.use_rcm else None)
