"""DVC stages ``train_student@<category>`` and ``train_seg@<category>``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pfadseg.artifacts import SEG_FORMAT, STUDENT_FORMAT, load_model_file, save_model_file
from pfadseg.calibrate import calibrate_run
from pfadseg.config import Config, select_params
from pfadseg.data.images import load_images
from pfadseg.data.layout import scan_category
from pfadseg.models.adps import ADPSDetector, ADPSNet
from pfadseg.models.build import build_adps, build_segnet, build_student, build_teacher
from pfadseg.models.detector import AnomalyDetector
from pfadseg.models.teacher import teacher_identity
from pfadseg.paths import Layout
from pfadseg.seeding import derive_seed, torch_generator
from pfadseg.synth.bank import AnomalyBank
from pfadseg.synth.composer import BatchComposer, make_composer
from pfadseg.synth.draem import make_draem_composer
from pfadseg.train.adps import adps_iterations, adps_optimizer, adps_step_fn
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
    "seed", "data.source", "data.image_size", "bank.opacity_min", "bank.opacity_max", "model.arch", "model.use_aff",
    "model.use_pcar",
    "model.teacher_weights", "model.aff", "model.spr", "model.pcar", "model.decoder_upsample", "train.device",
    "train.amp", "train.channels_last", "train.compile", "train.checkpoint_every", "train.log_every",
    "train.augment",
)
# With model.arch = adps the student stage trains the whole ADPS model (one joint stage, adps-method.md 5).
STUDENT_PARAMS: tuple[str, ...] = (*_COMMON_PARAMS, "train.student", "model.adps", "train.adps")
SEG_PARAMS: tuple[str, ...] = (*_COMMON_PARAMS, "model.use_rcm", "model.rcm", "train.seg", "calibrate",
                               "eval.batch_size", "eval.top_k", "model.adps.score_sigma")


def load_teacher(cfg: Config, device: torch.device) -> nn.Module:
    """The frozen teacher; a ``random`` teacher is seeded from ``seed`` so every stage sees the same one."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, "teacher"))
        teacher = build_teacher(cfg.model)
    return prepare_module(teacher, device, cfg.train)


def teacher_record(cfg: Config) -> dict[str, Any]:
    """Provenance of the teacher weights, with the seed when they are random."""
    identity = teacher_identity(cfg.model.teacher_weights, cfg.model.teacher_backbone)
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
    """Train the denoising student of ``category`` (training seed ``seed``) and write its student.pt.

    With ``model.arch: adps`` this is ADPS's one joint stage: student and post-segmentation module together.
    """
    check_run(cfg, category, seed)
    if cfg.model.arch == "adps":
        _run_train_adps(cfg, layout, category, seed, progress=progress)
        return
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


def _adps_composer(cfg: Config, category: str, images: np.ndarray, bank: AnomalyBank, device: torch.device,
                   generator: torch.Generator) -> BatchComposer:
    make = make_draem_composer if cfg.train.adps.synthesis == "draem" else make_composer
    return make(cfg, category, images, bank, device, generator)


def _trainable_state(net: ADPSNet) -> dict[str, torch.Tensor]:
    """The ADPS weights that training changes: student and post-segmentation module (not the teacher)."""
    return {k: v for k, v in net.state_dict().items() if not k.startswith("teacher.")}


def _run_train_adps(cfg: Config, layout: Layout, category: str, seed: int, *, progress: bool) -> None:
    """ADPS joint training (adps-method.md 4-5) of one run; writes student.pt holding student and PSM."""
    device = resolve_device(cfg.train.device)
    configure_backends(device)
    bank = AnomalyBank.load(layout.bank, cfg)
    teacher = load_teacher(cfg, device)
    with _seeded(derive_seed(seed, category, "adps", "init")):
        net = prepare_module(build_adps(cfg.model, teacher), device, cfg.train)
    generator = torch_generator(seed, category, "adps", "batches", device=device)
    images = train_images(cfg, layout, category)
    composer = _adps_composer(cfg, category, images, bank, device, generator)
    iterations, per_epoch = adps_iterations(len(images), cfg.train.adps)
    optimizer = adps_optimizer(net, cfg.train.adps)
    run_id = fingerprint({"stage": "adps", "category": category, "run_seed": seed,
                          **select_params(cfg, STUDENT_PARAMS)})
    loop = TrainLoop(
        name="adps", device=device, modules={"student": net.student, "psm": net.psm}, optimizer=optimizer,
        generator=generator, iterations=iterations,
        checkpoint_path=layout.checkpoints(category, seed) / "student.ckpt", run_fingerprint=run_id,
        checkpoint_every=cfg.train.checkpoint_every, log_every=cfg.train.log_every,
        live_dir=layout.live(category, seed, "student"), progress=progress,
    )
    step = adps_step_fn(_maybe_compile(net, cfg), optimizer, composer, cfg.train.adps, per_epoch,
                        _amp(device, cfg.train.amp))
    result = loop.run(step)
    save_model_file(layout.student(category, seed), STUDENT_FORMAT, _trainable_state(net), {
        "category": category, "arch": "adps", "stage_params": select_params(cfg, STUDENT_PARAMS),
        "config": cfg.to_dict(), "teacher": teacher_record(cfg), "seed": cfg.seed, "run_seed": seed,
        "device": str(device), "iterations": iterations, "iterations_per_epoch": per_epoch,
        "wall_time_s": result.wall_time_s, "resumed_from": result.resumed_from, "final_losses": result.last_losses,
    })
    layout.checkpoints(category, seed).joinpath("student.ckpt").unlink(missing_ok=True)
    log.info("adps %s seed %d: %d iterations (%d epochs of %d) in %.1f s -> %s", category, seed, iterations,
             cfg.train.adps.epochs, per_epoch, result.wall_time_s, layout.student(category, seed))


def _check_arch(path: Path, meta: dict[str, Any], cfg: Config) -> None:
    stored = meta.get("arch", "pfadseg")
    if stored != cfg.model.arch:
        raise ValueError(f"{path}: a model.arch={stored} model, but params.yaml gives model.arch="
                         f"{cfg.model.arch}; retrain it (dvc repro)")


def _load_student_file(cfg: Config, path: Path) -> dict[str, Any]:
    """A student.pt (a DeSTSeg/PFADSeg student or a whole ADPS model), refused if of another arch or teacher."""
    content = load_model_file(path, STUDENT_FORMAT)
    _check_arch(path, content["meta"], cfg)
    if not _same_teacher(content["meta"]["teacher"], teacher_record(cfg)):
        raise ValueError(f"{path}: trained with teacher {content['meta']['teacher']}, but "
                         f"params.yaml gives {teacher_record(cfg)}; retrain it")
    return content


def load_adps(cfg: Config, layout: Layout, category: str, seed: int, device: torch.device
              ) -> tuple[ADPSDetector, dict[str, Any]]:
    """The trained ADPS model of one run as an eval-mode detector, and its file's metadata."""
    content = _load_student_file(cfg, layout.student(category, seed))
    return adps_detector(cfg, load_teacher(cfg, device), content["state_dict"], device), content["meta"]


def adps_detector(cfg: Config, teacher: nn.Module, trained: dict[str, torch.Tensor], device: torch.device
                  ) -> ADPSDetector:
    """An eval-mode ADPS detector from the teacher and a student.pt's state dict (student and PSM weights)."""
    net = build_adps(cfg.model, teacher)
    net.load_state_dict({**net.state_dict(), **trained})
    return ADPSDetector(prepare_module(net, device, cfg.train)).eval()


def load_student(
    cfg: Config, layout: Layout, category: str, seed: int, device: torch.device
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained student of one run (eval mode) and its file's metadata; refuses another teacher's file."""
    content = _load_student_file(cfg, layout.student(category, seed))
    student = build_student(cfg.model)
    student.load_state_dict(content["state_dict"])
    return prepare_module(student, device, cfg.train).eval(), content["meta"]


def load_segnet(
    cfg: Config, layout: Layout, category: str, seed: int, device: torch.device
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained segmentation net of one run (eval mode) and its metadata; refuses another architecture."""
    path = layout.seg(category, seed)
    content = load_model_file(path, SEG_FORMAT)
    _check_arch(path, content["meta"], cfg)
    stored = {k: content["meta"]["stage_params"].get(k) for k in ("model.use_aff", "model.use_pcar", "model.use_rcm")}
    wanted = select_params(cfg, ("model.use_aff", "model.use_pcar", "model.use_rcm"))
    if stored != wanted:
        raise ValueError(f"{path}: trained with {stored}, but params.yaml gives {wanted}; "
                         "retrain the segmentation net")
    segnet = build_segnet(cfg.model)
    segnet.load_state_dict(content["state_dict"])
    return prepare_module(segnet, device, cfg.train).eval(), content["meta"]


def run_train_seg(cfg: Config, layout: Layout, category: str, seed: int, *, progress: bool = True) -> None:
    """Train the segmentation net of ``category`` (training seed ``seed``) on its frozen student.

    With ``model.arch: adps`` there is nothing to train (ADPS trains in one joint stage): the stage only
    calibrates the decision thresholds and writes them in a seg.pt with no weights, so the pipeline keeps one
    shape for every architecture.
    """
    check_run(cfg, category, seed)
    if cfg.model.arch == "adps":
        device = resolve_device(cfg.train.device)
        detector, student_meta = load_adps(cfg, layout, category, seed, device)
        calibration = calibrate_run(cfg, category, seed, detector, train_images(cfg, layout, category),
                                    AnomalyBank.load(layout.bank, cfg), device, n_samples=cfg.calibrate.n_samples)
        save_model_file(layout.seg(category, seed), SEG_FORMAT, {}, {
            "category": category, "arch": "adps", "trained": False, "stage_params": select_params(cfg, SEG_PARAMS),
            "config": cfg.to_dict(), "teacher": student_meta["teacher"], "run_seed": seed, "wall_time_s": 0.0,
            "calibration": calibration,
        })
        layout.live(category, seed, "seg").joinpath("plots").mkdir(parents=True, exist_ok=True)  # no curves: empty
        log.info("seg %s seed %d: nothing to train for ADPS, thresholds calibrated -> %s", category, seed,
                 layout.seg(category, seed))
        return
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
