"""`pfadseg bench train`: iterations/s and peak memory of both training stages, DeSTSeg vs PFADSeg."""

from __future__ import annotations

import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pfadseg.arch.destseg import DESTSEG
from pfadseg.config import Config, config_from_dict
from pfadseg.data.procedural import make_procedural_textures
from pfadseg.device import (
    accelerator_path,
    amp_dtype,
    amp_enabled,
    autocast,
    configure_backends,
    prepare_frozen,
    prepare_module,
    resolve_device,
)
from pfadseg.models.build import build_segnet, build_student
from pfadseg.seeding import numpy_rng, torch_generator
from pfadseg.synth.bank import AnomalyBank, build_bank
from pfadseg.synth.composer import make_composer
from pfadseg.train.loop import WARMUP_STEPS
from pfadseg.train.seg import seg_optimizer, seg_step_fn, stack_segnet
from pfadseg.train.stacked import StackedParameters
from pfadseg.train.student import student_optimizer, student_step_fn

VARIANTS = {"destseg": (False, False, False), "pfadseg": (True, True, True)}


def _with(cfg: Config, *overrides: str) -> Config:
    return config_from_dict(cfg.to_dict(), overrides)


def _peak_memory_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


class _OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched below autograd (forward, backward and optimizer): one kernel launch or more
    each on a GPU, so the count is a CPU-measurable proxy of a step's launch overhead."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.count += 1
        return func(*args, **(kwargs or {}))


def ops_per_step(step: Any, index: int = 1) -> int:
    """Aten ops of one call of ``step(index)`` (after a warm-up step, so lazily created state is not counted)."""
    step(index - 1)
    with _OpCounter() as counter:
        step(index)
    return counter.count


def _time_steps(step: Any, iterations: int, device: torch.device) -> float:
    for i in range(WARMUP_STEPS + 1):  # warm-up (cuDNN autotuning, allocator) and, with CUDA graphs, the capture
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    began = time.perf_counter()
    for i in range(iterations):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return iterations / (time.perf_counter() - began)


def bench_train(cfg: Config, *, image_size: int, batch_size: int, iterations: int, device: str) -> dict[str, Any]:
    """Measure both stages for both architectures in one run (random teacher, procedural bank); print a table."""
    dev = resolve_device(device)
    configure_backends(dev)
    base = _with(cfg, f"data.image_size={image_size}", "model.teacher_weights=random", "bank.n_masks=256",
                 "bank.n_textures=16", "data.procedural_textures.per_class=2",
                 f"data.procedural_textures.image_size={image_size}")
    images = numpy_rng(base.seed, "bench").integers(0, 256, (32, image_size, image_size, 3), dtype=np.uint8)
    results: dict[str, Any] = {"device": str(dev), "image_size": image_size, "batch_size": batch_size,
                               "bf16": amp_enabled(dev, base.train), "compile": base.train.compile,
                               "cuda_graphs": base.train.cuda_graphs and dev.type == "cuda"}
    with tempfile.TemporaryDirectory() as tmp:
        textures = Path(tmp) / "textures"
        make_procedural_textures(textures, base.data.procedural_textures)
        build_bank(base, textures / "images", Path(tmp) / "bank", progress=False)
        for name, (aff, pcar, rcm) in VARIANTS.items():
            vcfg = _with(base, f"model.use_aff={str(aff).lower()}", f"model.use_pcar={str(pcar).lower()}",
                         f"model.use_rcm={str(rcm).lower()}")
            bank = AnomalyBank.load(Path(tmp) / "bank", vcfg)
            composer = make_composer(vcfg, "bottle", images, bank, dev, torch_generator(0, "bench", device=dev))
            teacher = prepare_frozen(DESTSEG.load_teacher(vcfg, dev), dev, vcfg.train)  # as the stages do
            student = prepare_module(build_student(vcfg.model), dev, vcfg.train)
            segnet = prepare_module(build_segnet(vcfg.model), dev, vcfg.train)
            cast, compiled = amp_dtype(dev, vcfg.train), vcfg.train.compile
            amp = partial(autocast, dev, amp_enabled(dev, vcfg.train))
            scfg = _with(vcfg, f"train.student.batch_size={batch_size}").train.student
            gcfg = _with(vcfg, f"train.seg.batch_size={batch_size}").train.seg
            foreach, graphs = accelerator_path(dev, vcfg.train), vcfg.train.cuda_graphs  # as the stages choose
            trained = StackedParameters(student, cast=cast)
            student_step = student_step_fn(teacher, trained, student_optimizer(trained, scfg, foreach), composer,
                                           scfg, amp, compiled=compiled, cuda_graph=graphs)
            # aten ops are counted on the CPU only: on CUDA, autograd runs the backward pass on another thread
            student_ops = ops_per_step(student_step) if dev.type == "cpu" else None
            student_rate = _time_steps(student_step, iterations, dev)
            student_mem = _peak_memory_mb(dev)
            student = prepare_frozen(student.eval().requires_grad_(False), dev, vcfg.train)  # as train_seg
            trained = stack_segnet(segnet, gcfg, cast)
            seg_step = seg_step_fn(teacher, student, trained, seg_optimizer(trained, gcfg, foreach), composer, gcfg,
                                   amp, compiled=compiled, cuda_graph=graphs)
            seg_ops = ops_per_step(seg_step) if dev.type == "cpu" else None
            seg_rate = _time_steps(seg_step, iterations, dev)
            results[name] = {"student_it_s": student_rate, "student_peak_mb": student_mem, "student_ops": student_ops,
                             "seg_it_s": seg_rate, "seg_peak_mb": _peak_memory_mb(dev), "seg_ops": seg_ops}
    _print(results, cfg)
    return results


def _print(results: dict[str, Any], cfg: Config) -> None:
    print(f"bench train: device {results['device']}, {results['image_size']} px, batch {results['batch_size']}, "
          f"bf16 {results['bf16']}, compile {results['compile']}, CUDA graphs {results['cuda_graphs']}")
    print(f"{'variant':<10} {'student it/s':>13} {'peak MiB':>9} {'ops/step':>9} {'seg it/s':>9} {'peak MiB':>9} "
          f"{'ops/step':>9} {'full category (s)':>18}")
    for name in VARIANTS:
        r = results[name]
        full = cfg.train.student.iterations / r["student_it_s"] + cfg.train.seg.iterations / r["seg_it_s"]
        cells = {k: f"{r[k]:9.0f}" if r[k] is not None else f"{'n/a':>9}"
                 for k in ("student_peak_mb", "student_ops", "seg_peak_mb", "seg_ops")}
        print(f"{name:<10} {r['student_it_s']:13.2f} {cells['student_peak_mb']} {cells['student_ops']} "
              f"{r['seg_it_s']:9.2f} {cells['seg_peak_mb']} {cells['seg_ops']} {full:18.0f}")
    ratio = results["destseg"]["student_it_s"] / results["pfadseg"]["student_it_s"]
    print(f"PFADSeg student step costs {ratio:.2f}x the DeSTSeg one; full category = "
          f"{cfg.train.student.iterations} + {cfg.train.seg.iterations} iterations at these rates")
