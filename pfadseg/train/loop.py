"""The shared training loop and step skeleton: resumable checkpoints, NaN guard, progress bar and dvclive curves."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from dvclive import Live
from tqdm.auto import tqdm

from pfadseg.artifacts import load_problem
from pfadseg.fsio import atomic_path
from pfadseg.synth.composer import Batch, BatchComposer

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "pfadseg.checkpoint/1"


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


def fingerprint(data: Mapping[str, Any]) -> str:
    """Stable hash of what a run depends on; a checkpoint resumes only a run with the same fingerprint."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def make_step(
    optimizer: torch.optim.Optimizer,
    composer: BatchComposer,
    batch_size: int,
    losses: Callable[[Batch], dict[str, torch.Tensor]],
    before: Callable[[int], None] | None = None,
) -> Callable[[int], dict[str, torch.Tensor]]:
    """The one step skeleton of every trainer: draw a batch (into the last batch's tensors), compute
    ``losses(batch)`` (``"loss"`` is minimised), take an optimiser step, return the detached losses.

    ``before(step)`` runs first (e.g. a learning-rate schedule).
    """
    batch: Batch | None = None  # the last batch: the next one is written into its tensors

    def step(index: int) -> dict[str, torch.Tensor]:
        nonlocal batch
        if before is not None:
            before(index)
        batch = composer.sample(batch_size, reuse=batch)
        values = losses(batch)
        optimizer.zero_grad(set_to_none=True)
        values["loss"].backward()
        optimizer.step()
        return {k: v.detach() for k, v in values.items()}

    return step


@dataclass
class LoopResult:
    """What a finished loop reports."""

    iterations: int
    resumed_from: int
    wall_time_s: float
    last_losses: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainLoop:
    """Runs ``step_fn(step) -> {name: loss tensor}`` for ``iterations`` steps with checkpoints and logging.

    Host synchronisation happens only every ``log_every`` steps (losses and the NaN guard are
    accumulated on the device in between) and at checkpoints.
    """

    name: str
    device: torch.device
    modules: dict[str, torch.nn.Module]
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    iterations: int
    checkpoint_path: Path
    run_fingerprint: str
    checkpoint_every: int
    log_every: int
    live_dir: Path | None = None
    progress: bool = True
    extra_logs: Callable[[], dict[str, float]] | None = None

    def _state(self, step: int) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.run_fingerprint,
            "step": step,
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
        }

    def _save_checkpoint(self, step: int) -> None:
        with atomic_path(self.checkpoint_path) as tmp:
            torch.save(self._state(step), tmp)
        log.debug("%s: checkpoint at step %d -> %s", self.name, step, self.checkpoint_path)

    def _try_resume(self) -> int:
        if not self.checkpoint_path.is_file():
            return 0
        try:
            state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated or foreign file: start over rather than fail
            log.warning("%s: ignoring unreadable checkpoint %s (%s)", self.name, self.checkpoint_path,
                        load_problem(self.checkpoint_path, exc))
            return 0
        if state.get("format") != CHECKPOINT_FORMAT or state.get("fingerprint") != self.run_fingerprint:
            log.info("%s: checkpoint %s belongs to other settings; starting over", self.name, self.checkpoint_path)
            return 0
        for key, module in self.modules.items():
            module.load_state_dict(state["modules"][key])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        log.info("%s: resuming from checkpoint at step %d", self.name, state["step"])
        return int(state["step"])

    def run(self, step_fn: Callable[[int], dict[str, torch.Tensor]]) -> LoopResult:
        """Train from the last matching checkpoint (or from scratch) to ``iterations``; return a summary."""
        start = self._try_resume()
        device = self.device
        first_bad = torch.full((), -1, dtype=torch.long, device=device)
        sums: dict[str, torch.Tensor] = {}
        count = 0
        last: dict[str, float] = {}
        began = time.perf_counter()
        with self._live(start) as live, tqdm(total=self.iterations, initial=start, desc=self.name,
                                             disable=not self.progress, dynamic_ncols=True) as bar:
            for step in range(start, self.iterations):
                losses = step_fn(step)
                total = losses["loss"]
                bad = ~torch.isfinite(total)
                first_bad = torch.where(bad & (first_bad < 0), torch.full_like(first_bad, step), first_bad)
                for key, value in losses.items():
                    sums[key] = sums.get(key, torch.zeros((), device=device)) + value.detach().float()
                count += 1
                done = step + 1
                if done % self.log_every == 0 or done == self.iterations:
                    self._check_finite(first_bad)
                    last = {k: float(v) / count for k, v in sums.items()}
                    sums, count = {}, 0
                    self._log(live, done, last, bar)
                bar.update(1)
                if done % self.checkpoint_every == 0 and done < self.iterations:
                    self._check_finite(first_bad)
                    self._save_checkpoint(done)
            self._check_finite(first_bad)
        return LoopResult(self.iterations, start, time.perf_counter() - began, last)

    def _check_finite(self, first_bad: torch.Tensor) -> None:
        bad_step = int(first_bad)
        if bad_step >= 0:
            kept = (f"the last good checkpoint {self.checkpoint_path} is kept" if self.checkpoint_path.is_file()
                    else "no checkpoint had been written yet")
            raise NonFiniteLossError(f"{self.name}: non-finite loss at step {bad_step}; {kept}. Lower the learning "
                                     "rate or check the data, then rerun to resume.")

    def _log(self, live: Live | None, step: int, values: dict[str, float], bar: tqdm) -> None:
        extra = self.extra_logs() if self.extra_logs else {}
        bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)
        if live is None:
            return
        live.step = step
        for key, value in {**values, **extra}.items():
            live.log_metric(f"{self.name}/{key}", value)

    @contextlib.contextmanager
    def _live(self, start: int) -> Iterator[Live | None]:
        if self.live_dir is None:
            yield None
            return
        if start > 0:
            _truncate_curves(self.live_dir, start)
        live = Live(str(self.live_dir), resume=start > 0, dvcyaml=False, save_dvc_exp=False)
        try:
            yield live
        finally:
            live.make_summary()


def _truncate_curves(live_dir: Path, start: int) -> None:
    """Drop rows logged after the checkpoint a run resumes from, so curves never hold a step twice."""
    for tsv in (live_dir / "plots").rglob("*.tsv"):
        with tsv.open(newline="") as fh:
            rows = list(csv.reader(fh, delimiter="\t"))
        if not rows or "step" not in rows[0]:
            continue
        col = rows[0].index("step")
        kept = [rows[0]] + [r for r in rows[1:] if int(r[col]) <= start]
        with atomic_path(tsv) as tmp, tmp.open("w", newline="") as fh:
            csv.writer(fh, delimiter="\t", lineterminator="\n").writerows(kept)
