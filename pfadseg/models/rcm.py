"""RCM: rectangular self-calibration module of CGRSeg, Ni et al. ECCV 2024 (PFADSeg §3.3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def axis_means(x: torch.Tensor) -> torch.Tensor:
    """``adaptive_avg_pool2d(x, (None, 1)) + adaptive_avg_pool2d(x, (1, None))`` (row means plus column means, RCA's
    strip pooling) as two average pools, the same values with kernels that are faster on channels_last tensors.
    ONNX export keeps the adaptive pools (pfadseg.export gives them static slices)."""
    if torch.onnx.is_in_onnx_export():
        return F.adaptive_avg_pool2d(x, (None, 1)) + F.adaptive_avg_pool2d(x, (1, None))
    h, w = x.shape[-2:]
    return F.avg_pool2d(x, (1, w)) + F.avg_pool2d(x, (h, 1))


class RCA(nn.Module):
    """Rectangular self-calibration attention: sigmoid(strip convs(pool_H(x) + pool_W(x))) * dwconv(x)."""

    def __init__(self, channels: int, band_kernel: int = 11, square_kernel: int = 3) -> None:
        super().__init__()
        # ratio 1 of the official code: the strip convs are depthwise.
        self.dwconv_hw = nn.Conv2d(channels, channels, square_kernel, padding=square_kernel // 2,
                                   groups=channels, bias=True)
        self.excite = nn.Sequential(
            nn.Conv2d(channels, channels, (1, band_kernel), padding=(0, band_kernel // 2),
                      groups=channels, bias=True),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, (band_kernel, 1), padding=(band_kernel // 2, 0),
                      groups=channels, bias=True),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # B x C x H x W -> B x C x H x W
        local = self.dwconv_hw(x)
        cross = axis_means(x)  # B x C x H x 1 + B x C x 1 x W -> B x C x H x W
        return self.excite(cross) * local


class ConvMlp(nn.Module):
    """1x1 conv C->rC (bias), GELU, 1x1 conv rC->C (bias); no norm, dropout 0."""

    def __init__(self, channels: int, mlp_ratio: int = 2) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, mlp_ratio * channels, 1, bias=True)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(mlp_ratio * channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # B x C x H x W -> B x C x H x W
        return self.fc2(self.act(self.fc1(x)))


class RCM(nn.Module):
    """x + gamma * MLP(BN(RCA(x))); gamma is a per-channel layer scale (always a parameter, 0 allowed)."""

    def __init__(self, channels: int, band_kernel: int = 11, square_kernel: int = 3, mlp_ratio: int = 2,
                 layer_scale_init: float = 1e-6) -> None:
        super().__init__()
        if band_kernel % 2 == 0 or square_kernel % 2 == 0:
            raise ValueError(f"RCM: kernels must be odd, got band {band_kernel}, square {square_kernel}")
        self.token_mixer = RCA(channels, band_kernel, square_kernel)
        self.norm = nn.BatchNorm2d(channels)
        self.mlp = ConvMlp(channels, mlp_ratio)
        self.gamma = nn.Parameter(torch.full((channels,), float(layer_scale_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # B x C x H x W -> B x C x H x W
        out = self.mlp(self.norm(self.token_mixer(x)))
        return x + out * self.gamma.reshape(1, -1, 1, 1)
