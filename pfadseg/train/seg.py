"""Stage 2: train the segmentation net on the frozen teacher/student pair (PFADSeg §3.3-3.4; focal + L1)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pfadseg.config import SegTrainConfig
from pfadseg.device import maybe_compile
from pfadseg.models.anomaly_map import seg_input
from pfadseg.models.segnet import SegNet
from pfadseg.synth.composer import Batch, BatchComposer
from pfadseg.train.loop import make_step
from pfadseg.train.losses import focal_loss, l1_loss, seg_target
from pfadseg.train.stacked import StackedParameters


def stack_segnet(segnet: SegNet, cfg: SegTrainConfig, cast: torch.dtype | None, by_shape: bool
                 ) -> StackedParameters:
    """The segmentation net's parameters stacked in its two optimiser groups: residual blocks at lr_res, the head
    (ASPP or RCM and the classifier) at lr_head (``cast``, ``by_shape``: as :class:`StackedParameters`)."""
    return StackedParameters(segnet, segnet.param_groups(cfg.lr_res, cfg.lr_head), cast, by_shape=by_shape)


def seg_optimizer(segnet: StackedParameters, cfg: SegTrainConfig, foreach: bool = False) -> torch.optim.Optimizer:
    """SGD over the groups of :func:`stack_segnet`; ``foreach`` as :func:`pfadseg.train.student.student_optimizer`."""
    return torch.optim.SGD(segnet.param_groups(), lr=cfg.lr_head, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay, foreach=foreach or None)


def seg_divergence_hint(cfg: SegTrainConfig) -> str:
    """The likely cause of a diverged segmentation net."""
    return (f"train.seg.batch_size {cfg.batch_size} at lr_res {cfg.lr_res:g} / lr_head {cfg.lr_head:g}; raise the "
            "batch size or lower the learning rates")


def seg_step_fn(
    teacher: nn.Module,
    student: nn.Module,
    segnet: StackedParameters,
    optimizer: torch.optim.Optimizer,
    composer: BatchComposer,
    cfg: SegTrainConfig,
    amp: Callable[[], contextlib.AbstractContextManager[Any]],
    *,
    compiled: bool = False,
    cuda_graph: bool = False,
) -> Callable[[int], dict[str, torch.Tensor]]:
    """One step: both frozen networks see the synthetic image; the seg net learns its mask at 1/4 size.

    The student is in eval mode and detached: the reference code leaves it attached but never steps it,
    which gives the same result with more memory (DeSTSeg's train.py; docs/deviations.md).
    """
    student.eval()
    segnet.train()
    forward = maybe_compile(segnet.forward, compiled)

    def losses(batch: Batch) -> dict[str, torch.Tensor]:
        with amp():
            with torch.no_grad():
                features = seg_input(student(batch["img_aug"]), teacher(batch["img_aug"]))
            probs = forward(features)
        target = seg_target(batch["mask"], probs.shape[-2:])
        focal = focal_loss(probs, target, cfg.focal_gamma)
        l1 = l1_loss(probs, target)
        return {"loss": cfg.focal_weight * focal + cfg.l1_weight * l1, "focal": focal, "l1": l1}

    return make_step(optimizer, composer, cfg.batch_size, losses, cuda_graph=cuda_graph)
