"""Model files: a state dict plus the provenance a result needs (config, teacher identity, seed, device, time)."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch

from pfadseg.fsio import atomic_path


class ArtifactError(ValueError):
    """A model file that is missing, unreadable or of the wrong kind."""


def save_model_file(path: Path, fmt: str, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``{format, state_dict, meta}`` atomically; loadable with ``torch.load(weights_only=True)``."""
    cpu_state = {k: v.detach().cpu() for k, v in state_dict.items()}
    meta = {**meta, "torch": str(torch.__version__), "python": platform.python_version()}
    with atomic_path(path) as tmp:
        torch.save({"format": fmt, "state_dict": cpu_state, "meta": meta}, tmp)


def load_model_file(path: Path, fmt: str) -> dict[str, Any]:
    """Read a model file written by :func:`save_model_file`, checking its format."""
    if not path.is_file():
        raise ArtifactError(f"{path}: model file not found; train it first (dvc repro or pfadseg train-...)")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ArtifactError(f"{path}: unreadable model file ({exc}); delete it and train again") from None
    if not isinstance(content, dict) or content.get("format") != fmt:
        found = content.get("format") if isinstance(content, dict) else type(content).__name__
        raise ArtifactError(f"{path}: expected a {fmt} file, found {found}")
    return content
