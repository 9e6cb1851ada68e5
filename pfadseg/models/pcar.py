"""PCAR: parallel convolutional attention recalibration (PFADSeg §3.2; our reading: docs/deviations.md)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from pfadseg.models.spr import SPR

Branches = Literal["dilated", "kernels", "plain"]
Softmax = Literal["branch", "pixel"]

# (kernel, dilation) of the three parallel convs: (A) dilated, (B) kernels, (C) plain.
BRANCH_CONVS: dict[str, tuple[tuple[int, int], ...]] = {
    "dilated": ((3, 1), (3, 2), (3, 3)),
    "kernels": ((3, 1), (5, 1), (7, 1)),
    "plain": ((3, 1), (3, 1), (3, 1)),
}


class PCAR(nn.Module):
    """Three parallel conv+BN branches F_i, SPR weights w_i, softmax over the branches, weighted channel sum.

    ``softmax="branch"`` (variant A): out = sum_i softmax_i(w)_c * F_i, a per-channel convex combination.
    ``softmax="pixel"`` (variant D): G_i = F_i * w_i, out = sum_i softmax_i(G) * G_i, per pixel and channel.

    ``fewer_kernels`` (set on the accelerator path by :func:`pfadseg.device.prepare_module`): a shared SPR weighs
    the three branches in one call on a 3B batch, a third of the kernels; the same function, its weight gradients
    summed in another order (equal to rounding).
    """

    fewer_kernels = False

    def __init__(self, channels: int, *, branches: Branches = "dilated", shared_spr: bool = True,
                 softmax: Softmax = "branch", spr_reduction: int = 16) -> None:
        super().__init__()
        if softmax not in ("branch", "pixel"):
            raise ValueError(f"PCAR: softmax must be 'branch' or 'pixel', got {softmax!r}")
        self.softmax = softmax
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, channels, k, padding=d * (k // 2), dilation=d, bias=False),
                nn.BatchNorm2d(channels),  # no activation after the branch BN (MSPA's HPC)
            )
            for k, d in BRANCH_CONVS[branches]
        )
        self.sprs = nn.ModuleList(SPR(channels, spr_reduction) for _ in range(1 if shared_spr else 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # B x C x H x W -> B x C x H x W
        if self.fewer_kernels and len(self.sprs) == 1:  # branch-major, so the 3B batch is a view
            feats = torch.stack([branch(x) for branch in self.branches])  # 3 x B x C x H x W
            w = self.sprs[0](feats.flatten(0, 1)).unflatten(0, feats.shape[:2])  # 3 x B x C x 1 x 1
            dim = 0
        else:
            feats = torch.stack([branch(x) for branch in self.branches], dim=1)  # B x 3 x C x H x W
            sprs = list(self.sprs) * (3 // len(self.sprs))
            w = torch.stack([spr(feats[:, i]) for i, spr in enumerate(sprs)], dim=1)  # B x 3 x C x 1 x 1
            dim = 1
        if self.softmax == "branch":
            return (feats * w.softmax(dim=dim)).sum(dim=dim)
        recal = feats * w
        return (recal * recal.softmax(dim=dim)).sum(dim=dim)
