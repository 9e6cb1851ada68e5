"""Explicit, derived random generators: library code never touches a global RNG."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import numpy as np
import torch


def derive_seed(seed: int, *keys: str | int) -> int:
    """A 63-bit seed derived from a base seed and any labels (category, stage, ...), stable across runs."""
    text = "/".join([str(seed), *map(str, keys)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def numpy_rng(seed: int, *keys: str | int) -> np.random.Generator:
    """A numpy Generator seeded from ``derive_seed(seed, *keys)``."""
    return np.random.default_rng(derive_seed(seed, *keys))


def torch_generator(seed: int, *keys: str | int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch Generator on ``device`` seeded from ``derive_seed(seed, *keys)``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, *keys))
    return gen


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Code that draws from torch's global CPU RNG (module init) runs seeded; the RNG is restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def seeded_from(generator: torch.Generator | None) -> Iterator[None]:
    """Module init draws from torch's global CPU RNG: with a generator, from a copy seeded by it; else unchanged."""
    if generator is None:
        yield
        return
    with seeded(int(torch.randint(0, 2**62, (1,), generator=generator))):
        yield
