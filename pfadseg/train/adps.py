"""ADPS joint training of student and PSM: Eq. 7 + lambda * Eq. 8, Adam, MultiStep schedule (ADPS Sec. III-IV)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch

from pfadseg.arch.adps import ADPS, ADPS_FILE
from pfadseg.config import ADPSTrainConfig, Config
from pfadseg.device import maybe_compile, prepare_module
from pfadseg.errors import UsageError
from pfadseg.models.adps import ADPSNet, build_adps
from pfadseg.paths import Layout
from pfadseg.seeding import seeded
from pfadseg.synth.composer import Batch, BatchComposer, make_composer
from pfadseg.synth.draem import make_draem_composer
from pfadseg.train.loop import make_step
from pfadseg.train.losses import focal_loss, signed_distillation_loss
from pfadseg.train.session import TrainingSession


def adps_optimizer(net: ADPSNet, cfg: ADPSTrainConfig, capturable: bool = False) -> torch.optim.Optimizer:
    """Adam (betas 0.9/0.999, no weight decay) over the student and PSM; the teacher stays frozen. ``capturable``:
    its step counts kept on the device, as a CUDA graph needs (the same update)."""
    return torch.optim.Adam([*net.student.parameters(), *net.psm.parameters()], lr=cfg.lr, weight_decay=0.0,
                            capturable=capturable)


def adps_iterations(n_train: int, cfg: ADPSTrainConfig) -> tuple[int, int]:
    """(total iterations, iterations per epoch); an epoch is ceil(n_train / batch_size) composed batches."""
    if n_train < 1:
        raise UsageError(f"adps_iterations: need at least one training image, got {n_train}")
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
    *,
    cuda_graph: bool = False,
) -> Callable[[int], dict[str, torch.Tensor]]:
    """One step: teacher and patch student both see the synthetic image; signed distillation + focal on M.
    ``cuda_graph``: as :func:`pfadseg.train.loop.make_step`, captured again at each milestone."""
    net.train()  # student and PSM; the teacher stays in eval mode whatever it is told

    def schedule(index: int) -> float:
        lr = adps_lr(index, cfg, iterations_per_epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def losses(batch: Batch) -> dict[str, torch.Tensor]:
        with amp():
            out = net(batch["img_aug"])
        mask = batch["mask"]
        distill = signed_distillation_loss(out.student_feats, out.teacher_feats, mask,
                                           target_resize=net.cfg.target_resize, clamp=net.cfg.clamp_anomalous_cos)
        focal = focal_loss(out.probs[:, 1:2], (mask >= 0.5).float(), cfg.focal_gamma)
        return {"loss": distill + cfg.seg_weight * focal, "distill": distill, "focal": focal}

    return make_step(optimizer, composer, cfg.batch_size, losses, before=schedule, cuda_graph=cuda_graph)


def train_adps(cfg: Config, layout: Layout, category: str, seed: int, *, progress: bool = True) -> None:
    """ADPS joint training (ADPS Eqs. 7-9, Sec. IV) of one run; writes adps.pt (student and PSM, not the teacher)."""
    session = TrainingSession(ADPS, "train_adps", cfg, layout, category, seed, progress)
    with seeded(session.init_seed()):
        net = prepare_module(build_adps(cfg.model, session.teacher), session.device, cfg.train)
    generator = session.generator()
    make = make_draem_composer if cfg.train.adps.synthesis == "draem" else make_composer
    composer = make(cfg, category, session.images, session.bank, session.device, generator)
    iterations, per_epoch = adps_iterations(len(session.images), cfg.train.adps)
    graphs = cfg.train.cuda_graphs and session.device.type == "cuda"
    optimizer = adps_optimizer(net, cfg.train.adps, capturable=graphs)
    step = adps_step_fn(maybe_compile(net, cfg.train.compile), optimizer, composer, cfg.train.adps, per_epoch,
                        session.amp(), cuda_graph=graphs)
    trainable = {k: v for k, v in net.state_dict().items() if not k.startswith("teacher.")}
    session.run(modules={"student": net.student, "psm": net.psm}, optimizer=optimizer, generator=generator,
                iterations=iterations, step=step, file=ADPS_FILE, state_dict=trainable,
                divergence_hint=f"train.adps.batch_size {cfg.train.adps.batch_size} at lr {cfg.train.adps.lr:g}; raise "
                "the batch size or lower train.adps.lr",
                meta=lambda: {"iterations_per_epoch": per_epoch})
