"""The device: which one to run on, its backend settings, bf16 autocast, memory format and compilation.

Training and inference both use these; nothing here knows about files, stages or training.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from pfadseg.config import TrainConfig


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU is an error naming train.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def configure_backends(device: torch.device) -> None:
    """TF32 matmuls and cuDNN autotuning on CUDA; nothing on CPU."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def _accelerated(device: torch.device, cfg: TrainConfig) -> bool:
    """Whether the accelerator code path runs: on CUDA, or on the CPU with ``train.accelerator_path_on_cpu``."""
    return device.type == "cuda" or cfg.accelerator_path_on_cpu


def amp_enabled(device: torch.device, cfg: TrainConfig) -> bool:
    """bf16 autocast on ``device``: ``train.amp`` on the accelerator path, never otherwise."""
    return cfg.amp and _accelerated(device, cfg)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on ``device`` when ``enabled`` (see :func:`amp_enabled`); fp32 otherwise."""
    if enabled:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_module(module: nn.Module, device: torch.device, cfg: TrainConfig) -> nn.Module:
    """Move to ``device``; channels_last when ``train.channels_last`` on the accelerator path."""
    module = module.to(device)
    if cfg.channels_last and _accelerated(device, cfg):
        module = module.to(memory_format=torch.channels_last)
    return module


def maybe_compile(module: nn.Module, cfg: TrainConfig) -> nn.Module:
    """``torch.compile`` the module when ``train.compile`` (the returned wrapper shares its parameters)."""
    return torch.compile(module) if cfg.compile else module  # type: ignore[return-value]
