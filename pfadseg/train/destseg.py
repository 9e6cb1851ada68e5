"""DeSTSeg/PFADSeg's two training stages: the denoising student, then the segmentation net (PFADSeg §3.4)."""

from __future__ import annotations

from pfadseg.arch.destseg import DESTSEG, SEG_FILE, STUDENT_FILE
from pfadseg.config import Config
from pfadseg.device import accelerator_path, amp_dtype, fewer_kernels, prepare_frozen, prepare_module
from pfadseg.models.build import build_segnet, build_student
from pfadseg.paths import Layout
from pfadseg.seeding import seeded
from pfadseg.synth.composer import make_composer
from pfadseg.train.seg import seg_divergence_hint, seg_optimizer, seg_step_fn, stack_segnet
from pfadseg.train.session import TrainingSession
from pfadseg.train.stacked import StackedParameters
from pfadseg.train.student import student_divergence_hint, student_optimizer, student_step_fn


def train_student(cfg: Config, layout: Layout, category: str, seed: int, *, progress: bool = True) -> None:
    """Train the denoising student of ``category`` (training seed ``seed``) and write its student.pt."""
    session = TrainingSession(DESTSEG, "train_student", cfg, layout, category, seed, progress)
    with seeded(session.init_seed()):
        student = prepare_module(build_student(cfg.model), session.device, cfg.train)
    trained = StackedParameters(student, cast=amp_dtype(session.device, cfg.train),
                                by_shape=fewer_kernels(session.device, cfg.train))
    generator = session.generator()
    composer = make_composer(cfg, category, session.images, session.bank, session.device, generator)
    optimizer = student_optimizer(trained, cfg.train.student, accelerator_path(session.device, cfg.train))
    teacher = prepare_frozen(session.teacher, session.device, cfg.train)
    step = student_step_fn(teacher, trained, optimizer, composer, cfg.train.student, session.amp(),
                           compiled=cfg.train.compile, cuda_graph=cfg.train.cuda_graphs)
    session.run(modules={"student": student}, optimizer=optimizer, generator=generator,
                iterations=cfg.train.student.iterations, step=step, file=STUDENT_FILE,
                state_dict=student.state_dict(), divergence_hint=student_divergence_hint(cfg.train.student))


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

