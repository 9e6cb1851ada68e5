"""Where a training step's time goes: kernels per step, the top kernels, how busy the device is, FLOPs and MFU.

``torch.profiler`` gives the kernels (on CUDA the device's kernels; on the CPU the top-level aten ops, each of which
runs its kernels), ``torch.utils.flop_counter`` the FLOPs of a step, and a large matmul in the step's precision the
device's attainable peak, so MFU = step FLOPs x steps/s / that peak, all measured in the same run. The FLOPs are
the model's (direct convolution); a library's Winograd or FFT convolutions do fewer, so MFU can pass 100 %.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from pfadseg.device import synchronize

Step = Callable[[int], Any]



def step_flops(step: Step, index: int = 0) -> int:
    """FLOPs of one call of ``step(index)`` (convolutions and matmuls, forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        step(index)
    return counter.get_total_flops()


def matmul_peak_flops(device: torch.device, dtype: torch.dtype, seconds: float = 0.5) -> float:
    """FLOP/s of a large square matmul in ``dtype`` on ``device`` over ``seconds`` after a warm-up of as long: the
    attainable peak that MFU is relative to."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    rate = 0.0
    for _ in range(2):  # the first round warms up (clocks, library selection)
        synchronize(device)
        began, repeats = time.perf_counter(), 0
        while time.perf_counter() - began < seconds:
            for _ in range(5):
                a @ b
            synchronize(device)
            repeats += 5
        rate = 2 * n**3 * repeats / (time.perf_counter() - began)
    return rate


def _kernels(prof: profile, device: torch.device) -> list[tuple[str, float]]:
    """(name, microseconds) of every kernel the profile saw."""
    if device.type == "cuda":
        return [(e.name, e.device_time) for e in prof.events() if e.device_type == DeviceType.CUDA]
    return [(e.name, e.cpu_time) for e in prof.events()
            if e.name.startswith("aten::") and not (e.cpu_parent and e.cpu_parent.name.startswith("aten::"))]


def profile_step(step: Step, device: torch.device, *, start: int, steps: int = 3, top: int = 8) -> dict[str, Any]:
    """Kernels per step, their time, the wall time, device busy % (CUDA) and the ``top`` kernels by time, over
    ``steps`` calls of ``step`` from index ``start`` (after the caller's warm-up)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    synchronize(device)
    with profile(activities=activities) as prof:
        began = time.perf_counter()
        for i in range(start, start + steps):
            step(i)
        synchronize(device)
        wall_us = (time.perf_counter() - began) * 1e6
    kernels = _kernels(prof, device)
    by_name: dict[str, list[float]] = defaultdict(list)
    for name, us in kernels:
        by_name[name].append(us)
    busy_us = sum(us for _, us in kernels)
    ranked = sorted(by_name.items(), key=lambda item: -sum(item[1]))[:top]
    return {"kernels_per_step": len(kernels) / steps, "kernel_ms_per_step": busy_us / steps / 1e3,
            "wall_ms_per_step": wall_us / steps / 1e3,
            "busy_pct": 100 * busy_us / wall_us if device.type == "cuda" else None,
            "top": [{"name": name[:80], "calls_per_step": len(times) / steps, "ms_per_step": sum(times) / steps / 1e3}
                    for name, times in ranked]}
