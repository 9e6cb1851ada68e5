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

from pfadseg.arch.destseg import BENCH_VARIANTS, DESTSEG
from pfadseg.bench.profile import matmul_peak_flops, profile_step, step_flops
from pfadseg.config import Config, config_from_dict
from pfadseg.data.procedural.textures import make_procedural_textures
from pfadseg.device import (
    accelerator_path,
    amp_dtype,
    amp_enabled,
    autocast,
    configure_backends,
    fewer_kernels,
    prepare_frozen,
    prepare_module,
    resolve_device,
    synchronize,
)
from pfadseg.models.segnet import build_segnet
from pfadseg.models.student import build_student
from pfadseg.seeding import numpy_rng, torch_generator
from pfadseg.synth.bank import AnomalyBank, build_bank
from pfadseg.synth.composer import make_composer
from pfadseg.train.loop import WARMUP_STEPS
from pfadseg.train.seg import seg_optimizer, seg_step_fn, stack_segnet
from pfadseg.train.stacked import StackedParameters
from pfadseg.train.student import student_optimizer, student_step_fn

REFERENCE = " (per-parameter)"  # the suffix of the variants measured with train.fewer_kernels false


def _with(cfg: Config, *overrides: str) -> Config:
    return config_from_dict(cfg.to_dict(), overrides)


def _peak_memory_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


# Aten ops that launch no kernel: allocations and reinterpretations of a tensor's memory (views, detach).
_NO_KERNEL = (torch.ops.aten.empty, torch.ops.aten.empty_strided, torch.ops.aten._unsafe_view)


class _OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched below autograd (forward, backward and optimizer): one kernel launch or more
    each on a GPU, so the count is a CPU-measurable proxy of a step's launch overhead. ``kernels`` leaves out the
    ops that launch none (views, detach, allocations). Under a dispatch mode autograd also detaches every output it
    saves for backward (a detach a step outside the mode does not make): counted in ``count``, not in ``kernels``."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.kernels = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.count += 1
        self.kernels += not (func.is_view or func.overloadpacket in _NO_KERNEL)
        return func(*args, **(kwargs or {}))


def ops_per_step(step: Any, index: int = 1) -> tuple[int, int]:
    """Aten ops and kernel ops (see :class:`_OpCounter`) of one call of ``step(index)``, after a warm-up step (so
    lazily created state is not counted)."""
    step(index - 1)
    with _OpCounter() as counter:
        step(index)
    return counter.count, counter.kernels


def _time_steps(step: Any, iterations: int, device: torch.device) -> tuple[float, float]:
    """Iterations/s after the warm-up, and the warm-up's seconds (with train.compile: the compile time)."""
    began = time.perf_counter()
    for i in range(WARMUP_STEPS + 1):  # warm-up (cuDNN autotuning, allocator, compile) and, with CUDA graphs, capture
        step(i)
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warmup_s = time.perf_counter() - began
    began = time.perf_counter()
    for i in range(iterations):
        step(i)
    synchronize(device)
    return iterations / (time.perf_counter() - began), warmup_s


def _measure(step: Any, iterations: int, device: torch.device, peak_flops: float | None) -> dict[str, Any]:
    """One stage's figures: it/s, warm-up seconds, peak memory and (on the CPU) ops per step; with ``peak_flops``
    also the profile (:func:`pfadseg.bench.profile.profile_step`), FLOPs per step and MFU against that peak.
    Aten ops are counted on the CPU only: on CUDA, autograd runs the backward pass on another thread."""
    flops = step_flops(step) if peak_flops else None  # an eager step even where CUDA graphs replay later ones
    rate, warmup_s = _time_steps(step, iterations, device)
    ops, kernels = ops_per_step(step) if device.type == "cpu" else (None, None)
    figures = {"it_s": rate, "warmup_s": warmup_s, "peak_mb": _peak_memory_mb(device), "ops": ops,
               "kernel_ops": kernels}
    if peak_flops and flops is not None:
        figures.update(profile=profile_step(step, device, start=iterations), gflop_per_step=flops / 1e9,
                       mfu_pct=100 * flops * rate / peak_flops)
    return figures


def _measure_variant(cfg: Config, images: np.ndarray, bank: AnomalyBank, dev: torch.device, *, batch_size: int,
                     iterations: int, peak_flops: float | None) -> dict[str, dict[str, Any]]:
    """Both stages of one variant as the stages build them (same networks, optimisers and forms), measured."""
    composer = make_composer(cfg, "bottle", images, bank, dev, torch_generator(0, "bench", device=dev))
    torch._dynamo.reset()  # with train.compile each network compiles afresh, as in its own stage's process
    teacher = prepare_frozen(DESTSEG.load_teacher(cfg, dev), dev, cfg.train)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        student = prepare_module(build_student(cfg.model), dev, cfg.train)
        segnet = prepare_module(build_segnet(cfg.model), dev, cfg.train)
    cast, compiled, stacked = amp_dtype(dev, cfg.train), cfg.train.compile, fewer_kernels(dev, cfg.train)
    amp = partial(autocast, dev, amp_enabled(dev, cfg.train))
    scfg = _with(cfg, f"train.student.batch_size={batch_size}").train.student
    gcfg = _with(cfg, f"train.seg.batch_size={batch_size}").train.seg
    foreach, graphs = accelerator_path(dev, cfg.train), cfg.train.cuda_graphs
    trained = StackedParameters(student, cast=cast, stacked=stacked)
    step = student_step_fn(teacher, trained, student_optimizer(trained, scfg, foreach), composer, scfg, amp,
                           compiled=compiled, cuda_graph=graphs)
    figures = {"student": _measure(step, iterations, dev, peak_flops)}
    student = prepare_frozen(student.eval().requires_grad_(False), dev, cfg.train)  # as train_seg
    trained = stack_segnet(segnet, gcfg, cast, stacked)
    step = seg_step_fn(teacher, student, trained, seg_optimizer(trained, gcfg, foreach), composer, gcfg, amp,
                       compiled=compiled, cuda_graph=graphs)
    figures["seg"] = _measure(step, iterations, dev, peak_flops)
    return figures


def bench_train(cfg: Config, *, image_size: int, batch_size: int, iterations: int, device: str,
                reference: bool = True, profile: bool = False, variants: tuple[str, ...] = tuple(BENCH_VARIANTS)
                ) -> dict[str, Any]:
    """Measure both stages of ``variants`` in one run (random teacher, procedural bank); print a table.

    With ``train.fewer_kernels`` and ``reference``, each variant is measured again in the per-parameter form
    (``train.fewer_kernels: false``), the code before that rewrite, in the same run. ``profile``: also kernels,
    FLOPs and MFU per step (:mod:`pfadseg.bench.profile`)."""
    dev = resolve_device(device)
    configure_backends(dev)
    base = _with(cfg, f"data.image_size={image_size}", "model.teacher_weights=random", "bank.n_masks=256",
                 "bank.n_textures=16", "data.procedural_textures.per_class=2",
                 f"data.procedural_textures.image_size={image_size}")
    images = numpy_rng(base.seed, "bench").integers(0, 256, (32, image_size, image_size, 3), dtype=np.uint8)
    results: dict[str, Any] = {"device": str(dev), "image_size": image_size, "batch_size": batch_size,
                               "bf16": amp_enabled(dev, base.train), "compile": base.train.compile,
                               "cuda_graphs": base.train.cuda_graphs and dev.type == "cuda",
                               "fewer_kernels": fewer_kernels(dev, base.train)}
    peak = matmul_peak_flops(dev, torch.bfloat16 if results["bf16"] else torch.float32) if profile else None
    if peak is not None:
        results["peak_tflop_s"] = peak / 1e12
    forms = {"": ()}
    if reference and results["fewer_kernels"]:
        forms[REFERENCE] = ("train.fewer_kernels=false",)
    with tempfile.TemporaryDirectory() as tmp:
        textures = Path(tmp) / "textures"
        make_procedural_textures(textures, base.data.procedural_textures)
        build_bank(base, textures / "images", Path(tmp) / "bank", progress=False)
        for name in variants:
            vcfg = BENCH_VARIANTS[name].apply(base)
            bank = AnomalyBank.load(Path(tmp) / "bank", vcfg)
            for form, overrides in forms.items():
                results[name + form] = _measure_variant(_with(vcfg, *overrides), images, bank, dev,
                                                        batch_size=batch_size, iterations=iterations,
                                                        peak_flops=peak)
    _print(results, cfg)
    return results


def _cell(value: float | None, width: int, digits: int = 0) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:{width},.{digits}f}"


def _print(results: dict[str, Any], cfg: Config) -> None:
    print(f"bench train: device {results['device']}, {results['image_size']} px, batch {results['batch_size']}, "
          f"bf16 {results['bf16']}, compile {results['compile']}, CUDA graphs {results['cuda_graphs']}, "
          f"fewer kernels {results['fewer_kernels']}")
    stage_head = "{0} it/s  warm-up s  peak MiB  ops/step  kernels/step"
    print(f"{'variant':<25} {stage_head.format('student')}  {stage_head.format('seg')}  full category (s)")
    for name in (n for n in results if isinstance(results[n], dict)):
        cells = []
        for stage in ("student", "seg"):
            r = results[name][stage]
            cells.append(f"{_cell(r['it_s'], len(stage) + 5, 2)} {_cell(r['warmup_s'], 10, 1)} "
                         f"{_cell(r['peak_mb'], 9)} {_cell(r['ops'], 9)} {_cell(r['kernel_ops'], 13)}")
        full = (cfg.train.student.iterations / results[name]["student"]["it_s"]
                + cfg.train.seg.iterations / results[name]["seg"]["it_s"])
        print(f"{name:<25} {cells[0]}  {cells[1]}  {full:17,.0f}")
    if any(name.endswith(REFERENCE) for name in results):
        print(f"{REFERENCE.strip()}: train.fewer_kernels false (one leaf per parameter, BN unfolded, SPR per "
              "branch), measured in this run")
    for name in (n for n in results if isinstance(results[n], dict)):
        for stage in ("student", "seg"):
            if prof := results[name][stage].get("profile"):
                busy = "" if prof["busy_pct"] is None else f", device busy {prof['busy_pct']:.0f} %"
                print(f"{name} {stage}: {prof['kernels_per_step']:,.0f} kernels/step, {prof['kernel_ms_per_step']:.1f}"
                      f" ms kernel time in {prof['wall_ms_per_step']:.1f} ms{busy}, "
                      f"{results[name][stage]['gflop_per_step']:,.1f} GFLOP/step, MFU "
                      f"{results[name][stage]['mfu_pct']:.1f} % of {results['peak_tflop_s']:,.1f} TFLOP/s (matmul); "
                      "top: " + ", ".join(f"{t['name']} {t['ms_per_step']:.2f} ms" for t in prof["top"][:4]))
    if {"destseg", "pfadseg"} <= results.keys():
        ratio = results["destseg"]["student"]["it_s"] / results["pfadseg"]["student"]["it_s"]
        print(f"PFADSeg student step costs {ratio:.2f}x the DeSTSeg one; full category = "
              f"{cfg.train.student.iterations} + {cfg.train.seg.iterations} iterations at these rates")
