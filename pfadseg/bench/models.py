"""`pfadseg bench models`: parameters, analytical GFLOPs and inference time, DeSTSeg vs PFADSeg in one run."""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pfadseg.arch.destseg import BENCH_VARIANTS, DESTSEG
from pfadseg.config import Config
from pfadseg.device import amp_enabled, autocast, configure_backends, prepare_module, resolve_device, synchronize
from pfadseg.models.anomaly_map import seg_input
from pfadseg.models.segnet import build_segnet
from pfadseg.models.student import build_student
from pfadseg.models.teacher import build_teacher
from pfadseg.seeding import torch_generator


def count_parameters(module: nn.Module) -> int:
    """Weights + biases + BN affine (BN running buffers excluded), trainable or not."""
    return sum(p.numel() for p in module.parameters())


def _flops(fn: Callable[[torch.Tensor], Any], x: torch.Tensor) -> int:
    """Analytical FLOPs (a multiply-add counts 2; convs and matmuls only) of one call."""
    with FlopCounterMode(display=False) as counter:
        fn(x)
    return counter.get_total_flops()


def _time_ms(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, repeats: int, device: torch.device) -> float:
    """Median wall time of ``repeats`` calls after one warm-up call, in ms."""
    fn(x)
    synchronize(device)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn(x)
        synchronize(device)
        times.append((time.perf_counter() - began) * 1e3)
    return statistics.median(times)


def bench_models(cfg: Config, *, image_size: int = 256, batch_size: int = 16, device: str = "auto",
                 repeats: int = 3, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Teacher + student + segnet inference, both variants (other model options from ``cfg``); print a table.

    The teacher is random (timing and FLOPs do not depend on its weights). Times are medians, inference mode,
    bf16 autocast and channels_last on CUDA as ``train.amp`` / ``train.channels_last`` say.
    """
    dev = resolve_device(device)
    configure_backends(dev)
    generator = torch_generator(cfg.seed, "bench-models")
    results: dict[str, Any] = {"device": str(dev), "image_size": image_size, "batch_size": batch_size,
                               "repeats": repeats, "threads": torch.get_num_threads()}
    with warnings.catch_warnings():  # the random teacher still logs its warning once
        warnings.simplefilter("ignore")
        teacher = build_teacher("random", DESTSEG.teacher_backbone(cfg))
    for name, variant in BENCH_VARIANTS.items():
        model_cfg = variant.apply(cfg).model
        nets: dict[str, nn.Module] = {"teacher": teacher, "student": build_student(model_cfg, generator),
                                      "segnet": build_segnet(model_cfg, generator)}
        nets = {k: prepare_module(v, dev, cfg.train).eval() for k, v in nets.items()}

        def infer(x: torch.Tensor, nets: dict[str, nn.Module] = nets) -> torch.Tensor:
            # B x 3 x H x W -> B x 1 x H/4 x W/4
            return nets["segnet"](seg_input(nets["student"](x), nets["teacher"](x)))

        row: dict[str, Any] = {k: count_parameters(v) for k, v in nets.items()}
        with torch.inference_mode(), autocast(dev, amp_enabled(dev, cfg.train)):
            x1 = torch.randn(1, 3, image_size, image_size, device=dev)
            feats = (nets["student"](x1), nets["teacher"](x1))
            row["gflops_teacher"] = _flops(nets["teacher"], x1) / 1e9
            row["gflops_student"] = _flops(nets["student"], x1) / 1e9
            row["gflops_segnet"] = _flops(nets["segnet"], seg_input(*feats)) / 1e9
            row["gflops_total"] = row["gflops_teacher"] + row["gflops_student"] + row["gflops_segnet"]
            row["ms_batch_1"] = _time_ms(infer, x1, repeats, dev)
            xb = torch.randn(batch_size, 3, image_size, image_size, device=dev)
            row["ms_batch_n"] = _time_ms(infer, xb, repeats, dev)
        results[name] = row
    _print(results, echo)
    return results


def _print(results: dict[str, Any], echo: Callable[[str], None]) -> None:
    b = results["batch_size"]
    echo(f"bench models: {results['device']} ({results['threads']} threads), {results['image_size']} px, "
         f"median of {results['repeats']}; inference teacher + student + segnet")
    echo(f"{'variant':<8} {'student M':>9} {'segnet M':>9} {'GFLOPs/img':>10} {'ms b=1':>9} "
         f"{f'ms b={b}':>10} {f'ms/img b={b}':>12}")
    for name in BENCH_VARIANTS:
        r = results[name]
        echo(f"{name:<8} {r['student'] / 1e6:9.2f} {r['segnet'] / 1e6:9.2f} {r['gflops_total']:10.1f} "
             f"{r['ms_batch_1']:9.1f} {r['ms_batch_n']:10.1f} {r['ms_batch_n'] / b:12.1f}")
    base, ours = results["destseg"], results["pfadseg"]
    params = (ours["student"] + ours["segnet"]) / (base["student"] + base["segnet"])
    flops = ours["gflops_total"] / base["gflops_total"]
    echo(f"pfadseg / destseg: params x{params:.2f}, GFLOPs x{flops:.2f}, "
         f"time b={b} x{ours['ms_batch_n'] / base['ms_batch_n']:.2f}")
