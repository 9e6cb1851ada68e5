"""The architectures' training stages as DVC stages: what each reads and writes (one StageDef per stage)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pfadseg.arch.base import Architecture, ModelFile
from pfadseg.pipeline.entry import CATEGORY, ITEM, SEED, StageDef

RUN_DATA = (str(ITEM.bank), str(ITEM.images / CATEGORY))  # what every training stage reads besides models


def run_file(file: ModelFile) -> str:
    """A model file's path in dvc.yaml's matrix stages."""
    return str(ITEM.model(CATEGORY, SEED, file.name))  # type: ignore[arg-type]


def training_stage(arch: Architecture, name: str, run: Callable[..., Any], *, reads: Sequence[ModelFile],
                   writes: ModelFile) -> StageDef:
    """Stage ``name`` of ``arch``: reads the bank, the category's images and ``reads``; writes ``writes``."""
    live = arch.curves[arch.train_stages.index(name)]
    return StageDef(
        name, run, params=lambda _: arch.stage_params[name], per_run=True, arch=arch.name,
        deps=lambda _: (*RUN_DATA, *map(run_file, reads)), outs=lambda _: (run_file(writes),),
        plots=lambda _: (str(ITEM.live(CATEGORY, SEED, live) / "plots"),),  # type: ignore[arg-type]
        # Every output in DVC's cache: a remote then carries all that the stage's run-cache entry restores, so
        # another machine restores the training rather than redoing it (DVC pushes no cache: false output).
        plots_cached=True,
    )
