"""Model files: a state dict plus the provenance a result needs (config, teacher identity, seed, device, time)."""

from __future__ import annotations

import pickle
import platform
import re
from pathlib import Path
from typing import Any

import torch

from pfadseg.errors import PfadsegError
from pfadseg.fsio import atomic_path


class ArtifactError(PfadsegError, ValueError):
    """A model file that is missing, unreadable or of the wrong kind."""


def save_torch(obj: Any, path: Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically; a failed write raises a :class:`~pfadseg.fsio.WriteError` naming
    ``path`` and the OS's reason (e.g. no space left on device), not the zip writer's "unexpected pos"."""
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        try:
            torch.save(obj, fh)  # a Python file: the OS error of a failed write surfaces in Python
        except RuntimeError as exc:  # the zip writer's end-of-file check, failing after the write error it hides
            cause = exc.__context__
            while cause is not None and not isinstance(cause, OSError):
                cause = cause.__context__
            if cause is None:
                raise
            raise cause from None


def save_model_file(path: Path, fmt: str, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``{format, state_dict, meta}`` atomically; loadable with ``torch.load(weights_only=True)``."""
    cpu_state = {k: v.detach().cpu() for k, v in state_dict.items()}
    meta = {**meta, "torch": str(torch.__version__), "python": platform.python_version()}
    save_torch({"format": fmt, "state_dict": cpu_state, "meta": meta}, path)


def load_problem(path: Path, exc: Exception) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in words, without torch's advice to disable the safe
    loader (``weights_only=False`` runs whatever code the file holds)."""
    if path.stat().st_size == 0:
        return "the file is empty (0 bytes): cut short by an interrupted write or copy"
    if isinstance(exc, pickle.UnpicklingError):
        found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\s+Please use|\s+Check the documentation|$)", str(exc),
                          re.DOTALL)
        detail = f": {' '.join(found.group(1).split()).rstrip('.')}" if found else ""
        return f"it holds more than tensors and plain values, which the safe loader refuses{detail}"
    return f"not a readable PyTorch file, or a truncated one ({type(exc).__name__}: {exc})"


def load_model_file(path: Path, fmt: str) -> dict[str, Any]:
    """Read a model file written by :func:`save_model_file`, checking its format."""
    if not path.is_file():
        raise ArtifactError(f"{path}: model file not found; train it first (dvc repro or pfadseg train-...)")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise ArtifactError(f"{path}: unreadable model file: {load_problem(path, exc)}; train it again "
                            "(dvc repro or pfadseg train-...) or copy it again") from None
    if not isinstance(content, dict) or content.get("format") != fmt:
        found = content.get("format") if isinstance(content, dict) else type(content).__name__
        raise ArtifactError(f"{path}: expected a {fmt} file, found {found}")
    return content
