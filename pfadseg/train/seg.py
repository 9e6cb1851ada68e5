"""Stage 2: train the segmentation net on the frozen teacher/student pair (PFADSeg §3.3-3.4; focal + L1)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pfadseg.arch.destseg import DESTSEG, SEG_FILE, STUDENT_FILE
from pfadseg.config import Config, SegTrainConfig
from pfadseg.device import accelerator_path, amp_dtype, fewer_kernels, maybe_compile, prepare_frozen, prepare_module
from pfadseg.models.anomaly_map import seg_input
from pfadseg.models.segnet import SegNet, build_segnet
from pfadseg.models.student import build_student
from pfadseg.paths import Layout
from pfadseg.seeding import seeded
from pfadseg.synth.composer import Batch, BatchComposer, make_composer
from pfadseg.train.loop import make_step
from pfadseg.train.losses import focal_loss, l1_loss, seg_target
from pfadseg.train.session import TrainingSession
from pfadseg.train.stacked import StackedParameters


def stack_segnet(segnet: SegNet, cfg: SegTrainConfig, cast: torch.dtype | None, stacked: bool
                 ) -> StackedParameters:
    """The segmentation net's parameters stacked in its two optimiser groups: residual blocks at lr_res, the head
    (ASPP or RCM and the classifier) at lr_head (``cast``, ``stacked``: as :class:`StackedParameters`)."""
    return StackedParameters(segnet, segnet.param_groups(cfg.lr_res, cfg.lr_head), cast, stacked=stacked)


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


def train_seg(cfg: Config, layout: Layout, category: str, seed: int, *, progress: bool = True) -> None:
    """Train the segmentation net of ``category`` (training seed ``seed``) on its frozen student; write seg.pt."""
    session = TrainingSession(DESTSEG, "train_seg", cfg, layout, category, seed, progress)
    device = session.device
    student = build_student(cfg.model)
    student.load_state_dict(session.load_trained(STUDENT_FILE)["state_dict"])
    student = prepare_module(student, device, cfg.train).eval()
    for p in student.parameters():
        p.requires_grad_(False)
    student = prepare_frozen(student, device, cfg.train)
    with seeded(session.init_seed()):
        segnet = prepare_module(build_segnet(cfg.model), device, cfg.train)
    trained = stack_segnet(segnet, cfg.train.seg, amp_dtype(device, cfg.train), fewer_kernels(device, cfg.train))
    generator = session.generator()
    composer = make_composer(cfg, category, session.images, session.bank, device, generator)
    optimizer = seg_optimizer(trained, cfg.train.seg, accelerator_path(device, cfg.train))
    layer_scale = getattr(segnet, "rcm_layer_scale", None) if cfg.model.use_rcm else None
    teacher = prepare_frozen(session.teacher, device, cfg.train)
    step = seg_step_fn(teacher, student, trained, optimizer, composer, cfg.train.seg, session.amp(),
                       compiled=cfg.train.compile, cuda_graph=cfg.train.cuda_graphs)
    session.run(modules={"segnet": segnet}, optimizer=optimizer, generator=generator,
                iterations=cfg.train.seg.iterations, step=step, file=SEG_FILE, state_dict=segnet.state_dict(),
                divergence_hint=seg_divergence_hint(cfg.train.seg),
                extra_logs=(lambda: {"rcm_layer_scale": float(layer_scale())}) if layer_scale else None,
                meta=(lambda: {"rcm_layer_scale": float(layer_scale())}) if layer_scale else None)
