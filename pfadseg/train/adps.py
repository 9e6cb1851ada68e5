"""ADPS joint training of student and PSM: Eq. 7 + lambda * Eq. 8, Adam, MultiStep schedule (ADPS Sec. III-IV)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch

from pfadseg.config import ADPSTrainConfig
from pfadseg.models.adps import ADPSNet
from pfadseg.synth.composer import Batch, BatchComposer
from pfadseg.train.losses import focal_loss, signed_distillation_loss


def adps_optimizer(net: ADPSNet, cfg: ADPSTrainConfig) -> torch.optim.Optimizer:
    """Adam (betas 0.9/0.999, no weight decay) over the student and PSM; the teacher stays frozen."""
    return torch.optim.Adam([*net.student.parameters(), *net.psm.parameters()], lr=cfg.lr, weight_decay=0.0)


def adps_iterations(n_train: int, cfg: ADPSTrainConfig) -> tuple[int, int]:
    """(total iterations, iterations per epoch); an epoch is ceil(n_train / batch_size) composed batches."""
    if n_train < 1:
        raise ValueError(f"adps_iterations: need at least one training image, got {n_train}")
    per_epoch = math.ceil(n_train / cfg.batch_size)
    return cfg.epochs * per_epoch, per_epoch


def adps_lr(step: int, cfg: ADPSTrainConfig, iterations_per_epoch: int) -> float:
    """MultiStep schedule as a function of the step: lr * lr_decay ** (milestone epochs reached), resume-exact."""
    epoch = step // iterations_per_epoch
    return cfg.lr * cfg.lr_decay ** sum(epoch >= m for m in cfg.milestones)


def adps_step_fn(
    net: ADPSNet,
    optimizer: torch.optim.Optimizer,
    composer: BatchComposer,
    cfg: ADPSTrainConfig,
    iterations_per_epoch: int,
    amp: Callable[[], contextlib.AbstractContextManager[Any]],
) -> Callable[[int], dict[str, torch.Tensor]]:
    """One step: teacher and patch student both see the synthetic image; signed distillation + focal on M."""
    net.train()  # student and PSM; the teacher stays in eval mode whatever it is told

    batch: Batch | None = None  # the last batch: the next one is written into its tensors

    def step(index: int) -> dict[str, torch.Tensor]:
        lr = adps_lr(index, cfg, iterations_per_epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        nonlocal batch
        batch = composer.sample(cfg.batch_size, reuse=batch)
        with amp():
            out = net(batch["img_aug"])
        mask = batch["mask"]
        distill = signed_distillation_loss(out.student_feats, out.teacher_feats, mask,
                                           target_resize=net.cfg.target_resize, clamp=net.cfg.clamp_anomalous_cos)
        focal = focal_loss(out.probs[:, 1:2], (mask >= 0.5).float(), cfg.focal_gamma)
        loss = distill + cfg.seg_weight * focal
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach(), "distill": distill.detach(), "focal": focal.detach()}

    return step
