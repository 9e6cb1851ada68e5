"""The one way a stage runs: from its ``stages/*.py`` script under DVC, or from its ``pfadseg`` command.

A :class:`StageDef` is a stage as DVC sees it: the function, the params it reads (the function runs on a config
view that refuses every other key), its data inputs and outputs. ``pfadseg.pipeline.graph`` writes dvc.yaml
from these and from the stages' import closures.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pfadseg.config import DEFAULT_PARAMS, Config, ConfigError, load_config, scoped_config
from pfadseg.errors import PfadsegError, UsageError
from pfadseg.paths import Layout

ITEM = Layout(Path("."))  # the layout with DVC's relative paths, for the deps and outs of dvc.yaml
CATEGORY, SEED = "${item.category}", "${item.seed}"  # a matrix stage's arguments in dvc.yaml


@dataclass(frozen=True)
class StageDef:
    """One DVC stage: ``run(cfg, layout, *args)`` with ``cfg`` limited to ``params(model.arch)``.

    ``per_run``: one stage per category and training seed (a DVC matrix; args ``category seed``).
    ``arch``: the architecture whose training stage this is (None: every architecture has it).
    Paths are relative to the project root, with ``${item.category}`` / ``${item.seed}`` in matrix stages.
    """

    name: str
    run: Callable[..., Any]
    params: Callable[[str], Sequence[str]]  # model.arch -> the params it reads
    per_run: bool = False
    arch: str | None = None
    deps: Callable[[str], Sequence[str]] = lambda arch: ()
    outs: Callable[[str], Sequence[str]] = lambda arch: ()
    metrics: Sequence[str] = ()  # what users compare between experiments (dvc exp show's columns)
    records: Callable[[str], Sequence[str]] = lambda arch: ()  # small files Git tracks (outs with cache: false)
    plots: Callable[[str], Sequence[str]] = lambda arch: ()
    plots_cached: bool = False  # plots in DVC's cache rather than Git's: see training_stage
    extra_code: Sequence[str] = ()  # non-Python files of the package it reads

    def declared(self, cfg: Config) -> tuple[str, ...]:
        """The params this stage declares for ``cfg``'s architecture, each once, in order."""
        return tuple(dict.fromkeys(self.params(cfg.model.arch)))

    def invoke(self, cfg: Config, layout: Layout, *args: Any, **kwargs: Any) -> Any:
        """Check the arguments against the full config, then run on the declared params only."""
        if self.arch is not None and cfg.model.arch != self.arch:
            raise ConfigError(f"stage {self.name} belongs to model.arch={self.arch}, but params.yaml gives "
                              f"model.arch={cfg.model.arch}; write its pipeline first: pfadseg graph (or pfadseg "
                              f"experiment NAME -S model.arch={cfg.model.arch})")
        if self.per_run:
            category, seed = args
            if category not in cfg.data.categories:
                raise UsageError(f"category {category!r} is not in data.categories "
                                 f"({', '.join(cfg.data.categories)})")
            if seed not in cfg.seeds:
                raise UsageError(f"seed {seed} is not in seeds {cfg.seeds}")
        return self.run(scoped_config(cfg, self.declared(cfg), self.name), layout, *args, **kwargs)


def run_stage(stage: StageDef, argv: Sequence[str] | None = None, params: Path = DEFAULT_PARAMS) -> None:
    """Entry point of a ``stages/*.py`` script: ``stage.invoke`` with params.yaml and the command-line args.

    A :class:`pfadseg.errors.PfadsegError` becomes one line on stderr and its exit status, as on the command line;
    any other exception is a bug and keeps its traceback.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    argv = list(sys.argv[1:] if argv is None else argv)
    args: tuple[Any, ...] = (argv[0], int(argv[1])) if stage.per_run else ()
    try:
        stage.invoke(load_config(params), Layout(), *args)
    except PfadsegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_status) from None
