"""The device: which one to run on, its backend settings, bf16 autocast, memory format and compilation.

Training and inference both use these; nothing here knows about files, stages or training.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_map

from pfadseg.config import TrainConfig
from pfadseg.errors import UsageError
from pfadseg.models.fold import fold_batchnorm

log = logging.getLogger(__name__)
AMP_DTYPE = torch.bfloat16  # what autocast computes convs and matmuls in on the accelerator path
LOCK_DIR_ENV = "PFADSEG_GPU_LOCK_DIR"  # where the per-GPU lock files live (default: the system temp folder)
PER_GPU_ENV = "PFADSEG_JOBS_PER_GPU"  # how many processes may share one GPU (default 1; pfadseg ablate --per-gpu)
_claimed: dict[str, Any] = {}  # this process's claimed device and its open lock file (released at exit)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present (a free GPU of several, see :func:`claim_free_gpu`), else CPU; ``cuda``
    without a GPU is an error naming train.device."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return claim_free_gpu() if torch.cuda.device_count() > 1 else torch.device("cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("train.device is 'cuda' but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def gpu_lock_dir() -> Path:
    """The folder of the per-GPU lock files: ``$PFADSEG_GPU_LOCK_DIR``, else ``<tmp>/pfadseg-gpu-locks``."""
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "pfadseg-gpu-locks")


def physical_gpu_ids() -> list[str]:
    """The visible GPUs' machine-wide ids in CUDA index order: ``CUDA_VISIBLE_DEVICES`` when set, else 0..n-1."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    count = torch.cuda.device_count()
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else [str(i) for i in range(count)]
    return ids[:count]


def jobs_per_gpu() -> int:
    """How many pfadseg processes may claim one GPU: ``$PFADSEG_JOBS_PER_GPU``, default 1."""
    value = os.environ.get(PER_GPU_ENV, "1")
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"{PER_GPU_ENV}={value!r}: give a whole number of processes per GPU, 1 or more")
    return int(value)


def _lock_name(gpu: str, slot: int) -> str:
    return f"gpu-{gpu}.lock" if slot == 0 else f"gpu-{gpu}.slot{slot}.lock"


def claim_free_gpu(poll_s: float = 2.0) -> torch.device:
    """A visible GPU with a free slot, locked for the rest of this process (released on exit or crash).

    Each machine-wide GPU id has :func:`jobs_per_gpu` slots, one ``flock``'d file each in :func:`gpu_lock_dir`, so
    queued experiments on one machine (``pfadseg ablate --jobs N [--per-gpu K]``) put at most K processes on a GPU;
    the first slots of every GPU fill before any second one. Waits while every slot is held. Repeated calls return
    the same device.
    """
    import fcntl  # POSIX; the lock is the kernel's, so a killed process frees its GPU

    if "device" in _claimed:
        return _claimed["device"]
    folder = gpu_lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    ids = physical_gpu_ids()
    slots = jobs_per_gpu()
    waited = False
    while True:
        for slot in range(slots):
            for index, gpu in enumerate(ids):
                handle = (folder / _lock_name(gpu, slot)).open("a+")
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.close()
                    continue
                handle.truncate(0)
                handle.write(f"{os.getpid()}\n")
                handle.flush()
                _claimed.update(device=torch.device(f"cuda:{index}"), handle=handle, gpu=gpu)
                log.info("device: cuda:%d (GPU %s of %d visible, slot %d of %d), lock %s", index, gpu, len(ids),
                         slot + 1, slots, handle.name)
                return _claimed["device"]
        if not waited:
            log.info("device: all %d GPUs are held by other pfadseg processes (%d each; %s); waiting", len(ids),
                     slots, folder)
            waited = True
        time.sleep(poll_s)


def device_label(device: torch.device) -> str:
    """``cpu``, ``cuda:0``; with a claimed GPU also its machine-wide id, e.g. ``cuda:1 (GPU 5)``."""
    if _claimed.get("device") == device:
        return f"{device} (GPU {_claimed['gpu']})"
    return str(device)


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA); nothing on the CPU, which runs synchronously."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def configure_backends(device: torch.device) -> None:
    """TF32 matmuls and cuDNN autotuning on CUDA; nothing on CPU."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def accelerator_path(device: torch.device, cfg: TrainConfig) -> bool:
    """Whether the accelerator code path runs: on CUDA, or on the CPU with ``train.accelerator_path_on_cpu``."""
    return device.type == "cuda" or cfg.accelerator_path_on_cpu


def amp_enabled(device: torch.device, cfg: TrainConfig) -> bool:
    """bf16 autocast on ``device``: ``train.amp`` on the accelerator path, never otherwise."""
    return cfg.amp and accelerator_path(device, cfg)


def fewer_kernels(device: torch.device, cfg: TrainConfig) -> bool:
    """Whether the same functions run in fewer, larger kernels (``train.fewer_kernels``): on the accelerator path
    only, where each kernel launch costs; on the CPU the per-parameter step is the faster one (stacked parameters'
    large buffers are allocated afresh, page by page, at every step)."""
    return cfg.fewer_kernels and accelerator_path(device, cfg)


def amp_dtype(device: torch.device, cfg: TrainConfig) -> torch.dtype | None:
    """The dtype autocast casts conv and linear layers to on ``device`` (bf16), or ``None`` without AMP."""
    return AMP_DTYPE if amp_enabled(device, cfg) else None


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on ``device`` when ``enabled`` (see :func:`amp_enabled`); fp32 otherwise."""
    if enabled:
        return torch.autocast(device.type, dtype=AMP_DTYPE)
    return contextlib.nullcontext()


def prepare_module(module: nn.Module, device: torch.device, cfg: TrainConfig) -> nn.Module:
    """Move to ``device``; on the accelerator path channels_last (``train.channels_last``); with
    :func:`fewer_kernels` every layer with a ``fewer_kernels`` form (the same function in fewer, larger kernels,
    equal to rounding) switched to it."""
    module = module.to(device)
    if cfg.channels_last and accelerator_path(device, cfg):
        module = module.to(memory_format=torch.channels_last)
    for layer in module.modules():
        if hasattr(layer, "fewer_kernels") and fewer_kernels(device, cfg):
            layer.fewer_kernels = True
    return module


def prepare_frozen(module: nn.Module, device: torch.device, cfg: TrainConfig) -> nn.Module:
    """A frozen network in eval mode that only ever runs in the training stages: on the accelerator path, with
    :func:`fewer_kernels` its BatchNorms folded into their convs (:func:`pfadseg.models.fold.fold_batchnorm`,
    equal to rounding), then with
    AMP its conv and linear weights in bf16 once, where autocast would cast them at every call (its cache keeps only
    casts of weights that require grad): the values autocast computes, without the per-step copies."""
    if not accelerator_path(device, cfg):
        return module
    if fewer_kernels(device, cfg):
        fold_batchnorm(module)
    if amp_enabled(device, cfg):
        for layer in module.modules():
            if isinstance(layer, nn.Conv2d | nn.Linear) and not any(p.requires_grad for p in layer.parameters()):
                layer.to(AMP_DTYPE)
    return module


class CudaGraphed(nn.Module):
    """A frozen network's inference replayed from CUDA graphs, one per input shape (up to ``max_graphs``).

    A shape's first call runs eagerly (cuDNN autotuning, lazily created state), its second is captured and every
    later one replays the graph on a static copy of the input; the outputs are returned as copies. Other shapes (a
    short last batch), calls with gradients and exports run eagerly. The same kernels on the same inputs: the same
    values as eager calls.
    """

    def __init__(self, net: nn.Module, max_graphs: int = 2) -> None:
        super().__init__()
        self.net = net
        self.max_graphs = max_graphs
        self._graphs: dict[tuple[Any, ...], tuple[torch.cuda.CUDAGraph, torch.Tensor, Any]] = {}
        self._seen: set[tuple[Any, ...]] = set()

    def forward(self, images: torch.Tensor) -> Any:
        if torch.is_grad_enabled() or torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():
            return self.net(images)
        key = (tuple(images.shape), images.dtype, torch.is_autocast_enabled(images.device.type))
        if key not in self._graphs:
            if key not in self._seen or len(self._graphs) >= self.max_graphs:
                self._seen.add(key)
                return self.net(images)
            static = images.clone()
            side = torch.cuda.Stream(images.device)
            side.wait_stream(torch.cuda.current_stream(images.device))
            with torch.cuda.stream(side):  # capture wants a warm network on a side stream
                self.net(static)
            torch.cuda.current_stream(images.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                outputs = self.net(static)
            self._graphs[key] = (graph, static, outputs)
        graph, static, outputs = self._graphs[key]
        static.copy_(images)
        graph.replay()
        return tree_map(torch.clone, outputs)


def cuda_graphed(net: nn.Module, device: torch.device, cfg: TrainConfig) -> nn.Module:
    """``net`` (an eval-mode detector) in :class:`CudaGraphed` on CUDA with ``train.cuda_graphs``; else itself."""
    return CudaGraphed(net).eval() if device.type == "cuda" and cfg.cuda_graphs else net


COMPILE_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"  # inductor's on-disk cache of compiled graphs and autotuning


def compile_cache_dir() -> Path:
    """Where compiled kernels persist between stage processes: ``$TORCHINDUCTOR_CACHE_DIR``, else
    ``~/.cache/pfadseg/inductor`` (inductor's own default lives in the temp folder, gone at reboot)."""
    return Path(os.environ.get(COMPILE_CACHE_ENV) or Path.home() / ".cache" / "pfadseg" / "inductor")


def maybe_compile(forward: Callable[..., Any], enabled: bool) -> Callable[..., Any]:
    """``torch.compile(forward)`` when ``enabled`` (``train.compile``; a module's wrapper shares its parameters),
    its compiled graphs cached in :func:`compile_cache_dir`, so a later stage or run with the same networks loads
    them instead of compiling again."""
    if not enabled:
        return forward
    os.environ[COMPILE_CACHE_ENV] = str(compile_cache_dir())
    log.info("train.compile: compiled graphs cached in %s (%s)", os.environ[COMPILE_CACHE_ENV], COMPILE_CACHE_ENV)
    return torch.compile(forward)
