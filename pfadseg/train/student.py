"""Stage 1: distil the teacher into the denoising student on synthetic anomalies (PFADSeg §3.4, Eq. 4)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pfadseg.arch.destseg import DESTSEG, STUDENT_FILE
from pfadseg.config import STUDENT_SAFE_BATCH, Config, StudentTrainConfig
from pfadseg.device import accelerator_path, amp_dtype, fewer_kernels, maybe_compile, prepare_frozen, prepare_module
from pfadseg.models.student import build_student
from pfadseg.paths import Layout
from pfadseg.seeding import seeded
from pfadseg.synth.composer import Batch, BatchComposer, make_composer
from pfadseg.train.loop import make_step
from pfadseg.train.losses import cosine_distillation_loss
from pfadseg.train.session import TrainingSession
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


def train_student(cfg: Config, layout: Layout, category: str, seed: int, *, progress: bool = True) -> None:
    """Train the denoising student of ``category`` (training seed ``seed``) and write its student.pt."""
    session = TrainingSession(DESTSEG, "train_student", cfg, layout, category, seed, progress)
    with seeded(session.init_seed()):
        student = prepare_module(build_student(cfg.model), session.device, cfg.train)
    trained = StackedParameters(student, cast=amp_dtype(session.device, cfg.train),
                                stacked=fewer_kernels(session.device, cfg.train))
    generator = session.generator()
    composer = make_composer(cfg, category, session.images, session.bank, session.device, generator)
    optimizer = student_optimizer(trained, cfg.train.student, accelerator_path(session.device, cfg.train))
    teacher = prepare_frozen(session.teacher, session.device, cfg.train)
    step = student_step_fn(teacher, trained, optimizer, composer, cfg.train.student, session.amp(),
                           compiled=cfg.train.compile, cuda_graph=cfg.train.cuda_graphs)
    session.run(modules={"student": student}, optimizer=optimizer, generator=generator,
                iterations=cfg.train.student.iterations, step=step, file=STUDENT_FILE,
                state_dict=student.state_dict(), divergence_hint=student_divergence_hint(cfg.train.student))
