"""Stage 1: distil the teacher into the denoising student on synthetic anomalies (PFADSeg §3.4, Eq. 4)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pfadseg.config import STUDENT_SAFE_BATCH, StudentTrainConfig
from pfadseg.device import maybe_compile
from pfadseg.synth.composer import Batch, BatchComposer
from pfadseg.train.loop import make_step
from pfadseg.train.losses import cosine_distillation_loss
from pfadseg.train.stacked import StackedParameters


def student_optimizer(student: StackedParameters, cfg: StudentTrainConfig, foreach: bool = False
                      ) -> torch.optim.Optimizer:
    """SGD over all student parameters (encoder included), as the reference code. ``foreach``: one multi-tensor
    update (the accelerator path: CUDA's default, and as fast there); else PyTorch's default for the device (on the
    CPU a loop over the tensors, faster there and the same values)."""
    return torch.optim.SGD(student.param_groups(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           foreach=foreach or None)


def student_divergence_hint(cfg: StudentTrainConfig) -> str:
    """The likely cause of a diverged student (PFADSeg's lr 0.5 with ``loss_reduction: sum`` needs a batch of
    :data:`pfadseg.config.STUDENT_SAFE_BATCH` or more)."""
    return (f"train.student.batch_size {cfg.batch_size} at lr {cfg.lr:g} with loss_reduction: {cfg.loss_reduction} "
            f"(with sum at the protocol's lr 0.5, PFADSeg's student diverges at batches under {STUDENT_SAFE_BATCH}); "
            f"use a batch of {STUDENT_SAFE_BATCH} or more, a lower train.student.lr, or "
            "train.student.loss_reduction: mean")


def student_step_fn(
    teacher: nn.Module,
    student: StackedParameters,
    optimizer: torch.optim.Optimizer,
    composer: BatchComposer,
    cfg: StudentTrainConfig,
    amp: Callable[[], contextlib.AbstractContextManager[Any]],
    *,
    compiled: bool = False,
    cuda_graph: bool = False,
) -> Callable[[int], dict[str, torch.Tensor]]:
    """One step: teacher sees the clean image, student the synthetic anomaly; cosine loss on 3 levels.
    ``compiled``: the student's forward through ``torch.compile`` (``train.compile``)."""
    student.train()
    forward = maybe_compile(student.forward, compiled)

    def losses(batch: Batch) -> dict[str, torch.Tensor]:
        with amp():
            with torch.no_grad():
                target = teacher(batch["img_origin"])
            return {"loss": cosine_distillation_loss(forward(batch["img_aug"]), target, cfg.loss_reduction)}

    return make_step(optimizer, composer, cfg.batch_size, losses, cuda_graph=cuda_graph)
