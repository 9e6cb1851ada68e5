"""DVC stages ``train_student@<category>`` and ``train_seg@<category>``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from pfadseg.artifacts import SEG_FORMAT, STUDENT_FORMAT, load_model_file, save_model_file
from pfadseg.calibrate import calibrate_run
from pfadseg.config import Config, select_params
from pfadseg.data.images import load_images
from pfadseg.data.layout import scan_category
from pfadseg.models.build import build_segnet, build_student, build_teacher
from pfadseg.models.detector import AnomalyDetector
from pfadseg.models.teacher import teacher_identity
from pfadseg.paths import Layout
from pfadseg.seeding import derive_seed, torch_generator
from pfadseg.synth.bank import AnomalyBank
from pfadseg.synth.composer import make_composer
from pfadseg.train.loop import (
    TrainLoop,
    autocast,
    configure_backends,
    fingerprint,
    prepare_module,
    resolve_device,
)
from pfadseg.train.seg import seg_optimizer, seg_step_fn
from pfadseg.train.student import student_optimizer, student_step_fn

log = logging.getLogger(__name__)

# The params each stage reads: dvc.yaml lists exactly these (tests/pipeline checks it), so an ablation that
# changes only model.use_rcm restores every student from DVC's run cache.
_COMMON_PARAMS: tuple[str, ...] = (
    "seed", "data.source", "data.image_size", "bank.opacity_min", "bank.opacity_max", "model.use_aff", "model.use_pcar",
    "model.teacher_weights", "model.aff", "model.spr", "model.pcar", "model.decoder_upsample", "train.device",
    "train.amp", "train.channels_last", "train.compile", "train.checkpoint_every", "train.log_every",
    "train.augment",
)
STUDENT_PARAMS: tuple[str, ...] = (*_COMMON_PARAMS, "train.student")
SEG_PARAMS: tuple[str, ...] = (*_COMMON_PARAMS, "model.use_rcm", "model.rcm", "train.seg", "calibrate",
                               "eval.batch_size", "eval.top_k")


def load_teacher(cfg: Config, device: torch.device) -> nn.Module:
    """The frozen teacher; a ``random`` teacher is seeded from ``seed`` so every stage sees the same one."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, "teacher"))
        teacher = build_teacher(cfg.model)
    return prepare_module(teacher, device, cfg.train)


def teacher_record(cfg: Config) -> dict[str, Any]:
    """Provenance of the teacher weights, with the seed when they are random."""
    identity = teacher_identity(cfg.model.teacher_weights)
    record: dict[str, Any] = {"weights": cfg.model.teacher_weights, "name": identity["name"],
                              "sha256": identity["sha256"]}
    if cfg.model.teacher_weights == "random":
        record["seed"] = derive_seed(cfg.seed, "teacher")
    return record


def _same_teacher(stored: dict[str, Any], current: dict[str, Any]) -> bool:
    """Same weights (by hash) and, for a random teacher, the same seed; file paths may differ across machines."""
    return all(stored.get(k) == current.get(k) for k in ("sha256", "seed"))


def train_images(cfg: Config, layout: Layout, category: str) -> np.ndarray:
    """The category's normal training images, decoded and resized once: uint8 N x H x W x 3."""
    files = scan_category(layout.images, category, masks_required=cfg.data.source != "folder")
    return load_images(files.train, cfg.data.image_size)


def _amp(device: torch.device, enabled: bool) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    return partial(autocast, device, enabled)


def _maybe_compile(module: nn.Module, cfg: Config) -> nn.Module:
    return torch.compile(module) if cfg.train.compile else module  # type: ignore[return-value]


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def check_run(cfg: Config, category: str, seed: int) -> None:
    """Refuse a category or training seed that params.yaml does not list."""
    if category not in cfg.data.categories:
        raise ValueError(f"category {category!r} is not in data.categories ({', '.join(cfg.data.categories)})")
    if seed not in cfg.seeds:
        raise ValueError(f"seed {seed} is not in seeds {cfg.seeds}")


def run_train_student(cfg: Config, layout: Layout, category: str, seed: int, *, progress: bool = True) -> None:
    """Train the denoising student of ``category`` (training seed ``seed``) and write its student.pt."""
    check_run(cfg, category, seed)
    device = resolve_device(cfg.train.device)
    configure_backends(device)
    bank = AnomalyBank.load(layout.bank, cfg)
    teacher = load_teacher(cfg, device)
    with _seeded(derive_seed(seed, category, "student", "init")):
        student = prepare_module(build_student(cfg.model), device, cfg.train)
    generator = torch_generator(seed, category, "student", "batches", device=device)
    composer = make_composer(cfg, category, train_images(cfg, layout, category), bank, device, generator)
    optimizer = student_optimizer(student, cfg.train.student)
    run_id = fingerprint({"stage": "student", "category": category, "run_seed": seed,
                          **select_params(cfg, STUDENT_PARAMS)})
    loop = TrainLoop(
        name="student", device=device, modules={"student": student}, optimizer=optimizer, generator=generator,
        iterations=cfg.train.student.iterations, checkpoint_path=layout.checkpoints(category, seed) / "student.ckpt",
        run_fingerprint=run_id, checkpoint_every=cfg.train.checkpoint_every, log_every=cfg.train.log_every,
        live_dir=layout.live(category, seed, "student"), progress=progress,
    )
    step = student_step_fn(teacher, _maybe_compile(student, cfg), optimizer, composer, cfg.train.student,
                           _amp(device, cfg.train.amp))
    result = loop.run(step)
    save_model_file(layout.student(category, seed), STUDENT_FORMAT, student.state_dict(), {
        "category": category, "stage_params": select_params(cfg, STUDENT_PARAMS), "config": cfg.to_dict(),
        "teacher": teacher_record(cfg), "seed": cfg.seed, "run_seed": seed, "device": str(device),
        "wall_time_s": result.wall_time_s, "resumed_from": result.resumed_from, "final_losses": result.last_losses,
    })
    layout.checkpoints(category, seed).joinpath("student.ckpt").unlink(missing_ok=True)
    log.info("student %s seed %d: %d iterations in %.1f s -> %s", category, seed, result.iterations,
             result.wall_time_s, layout.student(category, seed))


def load_student(
    cfg: Config, layout: Layout, category: str, seed: int, device: torch.device
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained student of one run (eval mode) and its file's metadata; refuses another teacher's file."""
    path = layout.student(category, seed)
    content = load_model_file(path, STUDENT_FORMAT)
    if not _same_teacher(content["meta"]["teacher"], teacher_record(cfg)):
        raise ValueError(f"{path}: trained with teacher {content['meta']['teacher']}, but "
                         f"params.yaml gives {teacher_record(cfg)}; retrain the student")
    student = build_student(cfg.model)
    student.load_state_dict(content["state_dict"])
    return prepare_module(student, device, cfg.train).eval(), content["meta"]


def load_segnet(
    cfg: Config, layout: Layout, category: str, seed: int, device: torch.device
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained segmentation net of one run (eval mode) and its metadata; refuses another architecture."""
    path = layout.seg(category, seed)
    content = load_model_file(path, SEG_FORMAT)
    stored = {k: content["meta"]["stage_params"].get(k) for k in ("model.use_aff", "model.use_pcar", "model.use_rcm")}
    wanted = select_params(cfg, ("model.use_aff", "model.use_pcar", "model.use_rcm"))
    if stored != wanted:
        raise ValueError(f"{path}: trained with {stored}, but params.yaml gives {wanted}; "
                         "retrain the segmentation net")
    segnet = build_segnet(cfg.model)
    segnet.load_state_dict(content["state_dict"])
    return prepare_module(segnet, device, cfg.train).eval(), content["meta"]


def run_train_seg(cfg: Config, layout: Layout, category: str, seed: int, *, progress: bool = True) -> None:
    """Train the segmentation net of ``category`` (training seed ``seed``) on its frozen student."""
    check_run(cfg, category, seed)
    device = resolve_device(cfg.train.device)
    configure_backends(device)
    bank = AnomalyBank.load(layout.bank, cfg)
    teacher = load_teacher(cfg, device)
    student, _ = load_student(cfg, layout, category, seed, device)
    for p in student.parameters():
        p.requires_grad_(False)
    with _seeded(derive_seed(seed, category, "seg", "init")):
        segnet = prepare_module(build_segnet(cfg.model), device, cfg.train)
    generator = torch_generator(seed, category, "seg", "batches", device=device)
    images = train_images(cfg, layout, category)
    composer = make_composer(cfg, category, images, bank, device, generator)
    optimizer = seg_optimizer(segnet, cfg.train.seg)
    run_id = fingerprint({"stage": "seg", "category": category, "run_seed": seed, **select_params(cfg, SEG_PARAMS)})
    layer_scale = getattr(segnet, "rcm_layer_scale", None)
    loop = TrainLoop(
        name="seg", device=device, modules={"segnet": segnet}, optimizer=optimizer, generator=generator,
        iterations=cfg.train.seg.iterations, checkpoint_path=layout.checkpoints(category, seed) / "seg.ckpt",
        run_fingerprint=run_id, checkpoint_every=cfg.train.checkpoint_every, log_every=cfg.train.log_every,
        live_dir=layout.live(category, seed, "seg"), progress=progress,
        extra_logs=(lambda: {"rcm_layer_scale": float(layer_scale())}) if cfg.model.use_rcm and layer_scale else None,
    )
    step = seg_step_fn(teacher, student, _maybe_compile(segnet, cfg), optimizer, composer, cfg.train.seg,
                       _amp(device, cfg.train.amp))
    result = loop.run(step)
    meta = {
        "category": category, "stage_params": select_params(cfg, SEG_PARAMS), "config": cfg.to_dict(),
        "teacher": teacher_record(cfg), "seed": cfg.seed, "run_seed": seed, "device": str(device),
        "wall_time_s": result.wall_time_s, "resumed_from": result.resumed_from, "final_losses": result.last_losses,
    }
    if cfg.model.use_rcm and layer_scale:
        meta["rcm_layer_scale"] = float(layer_scale())
    detector = AnomalyDetector(teacher, student, segnet).eval()
    meta["calibration"] = calibrate_run(cfg, category, seed, detector, images, bank, device,
                                        n_samples=cfg.calibrate.n_samples)
    save_model_file(layout.seg(category, seed), SEG_FORMAT, segnet.state_dict(), meta)
    layout.checkpoints(category, seed).joinpath("seg.ckpt").unlink(missing_ok=True)
    log.info("seg %s seed %d: %d iterations in %.1f s -> %s", category, seed, result.iterations,
             result.wall_time_s, layout.seg(category, seed))
