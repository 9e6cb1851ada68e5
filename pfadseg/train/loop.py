"""The shared training loop and step skeleton: resumable checkpoints, NaN and divergence guards, progress bar and
dvclive curves."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from pfadseg.artifacts import load_problem, save_torch
from pfadseg.errors import PfadsegError
from pfadseg.fsio import writing
from pfadseg.synth.composer import Batch, BatchComposer

if TYPE_CHECKING:
    from dvclive import Live

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "pfadseg.checkpoint/2"  # 2: optimiser state over stacked parameters
# Divergence limits, read at log points and checkpoints. Sound student runs (PFADSeg, random teacher, lr 0.5, sum) peak
# at 1.9e3 (weights) and 4.7e11 (BN variances) at 64 px, batch 3-16, and at 2.9e2 and 5.2e7 at 256 px, batch 16 (bf16);
# a batch-2 student at 64 px passes 1e7 (weights) by step 1 on the demo's data, 1e14 (variances) by step 10 on others.
WEIGHT_LIMIT = 1e5  # largest |weight| of the trained modules: 50x the largest sound weight seen
RUNNING_VAR_LIMIT = 1e14  # largest BatchNorm running variance: 200x the largest sound variance seen


class TrainingStoppedError(PfadsegError, RuntimeError):
    """Training stopped on a bad state (NaN loss, diverged weights); the last good checkpoint is kept."""


class NonFiniteLossError(TrainingStoppedError):
    """A loss became NaN or infinite."""


class DivergenceError(TrainingStoppedError):
    """The weights or BatchNorm statistics grew past the divergence limits (the loss may still fall)."""


def fingerprint(data: Mapping[str, Any]) -> str:
    """Stable hash of what a run depends on; a checkpoint resumes only a run with the same fingerprint."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


WARMUP_STEPS = 3  # eager steps before a CUDA graph is captured (cuDNN autotuning, lazily created state)


def make_step(
    optimizer: torch.optim.Optimizer,
    composer: BatchComposer,
    batch_size: int,
    losses: Callable[[Batch], dict[str, torch.Tensor]],
    before: Callable[[int], Hashable] | None = None,
    cuda_graph: bool = False,
) -> Callable[[int], dict[str, torch.Tensor]]:
    """The one step skeleton of every trainer: draw a batch (into the last batch's tensors), compute
    ``losses(batch)`` (``"loss"`` is minimised), take an optimiser step, return the detached losses.

    ``before(step)`` runs first (e.g. a learning-rate schedule) and returns the step's phase (e.g. its learning
    rate). ``cuda_graph`` (``train.cuda_graphs``, CUDA only): after :data:`WARMUP_STEPS` eager steps on a side
    stream, the whole step (batch composition, forward, losses, backward, optimiser step) is captured as a CUDA
    graph and replayed for every later step of the same phase (a new phase, a new capture: what the graph holds as
    constants, such as the learning rate, reaches it), with the composer's generator registered so that its random
    draws continue exactly as in eager mode. The returned losses are then the graph's static outputs, overwritten
    by the next replay.
    """
    batch: Batch | None = None  # the last batch: the next one is written into its tensors

    def eager(index: int) -> dict[str, torch.Tensor]:
        nonlocal batch
        if before is not None:
            before(index)
        batch = composer.sample(batch_size, reuse=batch)
        values = losses(batch)
        optimizer.zero_grad(set_to_none=True)
        values["loss"].backward()
        optimizer.step()
        return {k: v.detach() for k, v in values.items()}

    if not cuda_graph:
        return eager
    if composer.device.type != "cuda":
        log.info("train.cuda_graphs: eager steps (it needs CUDA)")
        return eager

    graph: torch.cuda.CUDAGraph | None = None
    outputs: dict[str, torch.Tensor] = {}
    eager_steps = 0
    captured: Hashable = None  # the phase the graph was captured in
    side = torch.cuda.Stream(composer.device)

    def graphed(index: int) -> dict[str, torch.Tensor]:
        nonlocal batch, graph, outputs, eager_steps, captured
        if graph is None and eager_steps < WARMUP_STEPS:  # on a side stream, as capture requires
            eager_steps += 1
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                values = eager(index)
            torch.cuda.current_stream().wait_stream(side)
            return values
        phase = before(index) if before is not None else None
        if graph is None or phase != captured:
            if graph is not None:
                log.info("train.cuda_graphs: step %d starts a new phase (%s): capturing its step", index, phase)
            captured = phase
            graph = torch.cuda.CUDAGraph()
            graph.register_generator_state(composer.generator)
            optimizer.zero_grad(set_to_none=True)  # backward then writes the gradients into the graph's own tensors
            with torch.cuda.graph(graph):
                batch = composer.sample(batch_size, reuse=batch)
                values = losses(batch)
                values["loss"].backward()
                optimizer.step()
                outputs = {k: v.detach() for k, v in values.items()}
        graph.replay()  # capture ran nothing: the first replay is this step
        return outputs

    return graphed


@dataclass
class LoopResult:
    """What a finished loop reports. ``warmup_s``: the first :data:`WARMUP_STEPS` + 1 steps of this run (cuDNN
    autotuning, compilation, CUDA graph capture); ``steady_it_s``: the rate of the steps after them (``None`` when
    the run had no steps after them)."""

    iterations: int
    resumed_from: int
    wall_time_s: float
    last_losses: dict[str, float] = field(default_factory=dict)
    warmup_s: float = 0.0
    steady_it_s: float | None = None


class _Clock:
    """Seconds since the loop began, read without a host sync: CUDA events on CUDA, read after the last step."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.began = self.mark()

    def mark(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, mark: Any) -> float:
        if not self.cuda:
            return mark - self.began
        mark.synchronize()
        return self.began.elapsed_time(mark) / 1e3


@dataclass
class TrainLoop:
    """Runs ``step_fn(step) -> {name: loss tensor}`` for ``iterations`` steps with checkpoints and logging.

    Host synchronisation happens only every ``log_every`` steps (losses and the NaN guard are
    accumulated on the device in between) and at checkpoints, where the losses, the NaN guard and the
    divergence guard's magnitudes are read at once. ``divergence_hint`` is the likely cause a
    :class:`DivergenceError` names; ``finish(result)`` writes what the finished run leaves (the model file).
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
    divergence_hint: str = "a learning rate too high for the batch size: lower it or raise the batch size"
    finish: Callable[[LoopResult], None] | None = None
    kept_step: int = field(default=0, init=False)  # step of this run's checkpoint on disk; 0: none

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
        save_torch(self._state(step), self.checkpoint_path)
        self.kept_step = step
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
        """Train from the last matching checkpoint (or from scratch) to ``iterations``, write the curves' summary,
        then call ``finish(result)``; return the result.

        If any of it fails, the curves are cut back to the last checkpoint's step and the summary is removed: no
        curve or metric describes the unfinished run, and a rerun resumes to the same curves.
        """
        self.kept_step = start = self._try_resume()
        began = time.perf_counter()
        with self._live(start) as live:
            clock = _Clock(self.device)
            last, warm = self._train(step_fn, start, live, clock)
            end = clock.seconds(clock.mark())
            warm_s = clock.seconds(warm) if warm is not None else end
            steady = self.iterations - start - (WARMUP_STEPS + 1)
            result = LoopResult(self.iterations, start, time.perf_counter() - began, last, warmup_s=warm_s,
                                steady_it_s=steady / (end - warm_s) if warm is not None and steady > 0 else None)
            if live is not None:
                with writing(live.metrics_file):
                    live.make_summary()
            if self.finish is not None:
                self.finish(result)
        return result

    def _train(self, step_fn: Callable[[int], dict[str, torch.Tensor]], start: int, live: Live | None,
               clock: _Clock) -> tuple[dict[str, float], Any]:
        """Steps ``start`` to ``iterations`` with logs, guards and checkpoints; the mean losses of the last log and
        the clock's mark after the warm-up steps (``None`` if the run ended first)."""
        warm = None
        device = self.device
        first_bad = torch.full((), self.iterations, dtype=torch.long, device=device)  # iterations: none yet
        weights = [p for m in self.modules.values() for p in m.parameters()]
        running_vars = [b for m in self.modules.values() for name, b in m.named_buffers()
                        if name.endswith("running_var")]
        sums: dict[str, torch.Tensor] = {}
        count = 0
        last: dict[str, float] = {}
        with tqdm(total=self.iterations, initial=start, desc=self.name, disable=not self.progress,
                  dynamic_ncols=True) as bar:
            for step in range(start, self.iterations):
                losses = step_fn(step)
                # three small kernels, no host sync: the first step whose loss is not finite
                first_bad = torch.where(torch.isfinite(losses["loss"]), first_bad, first_bad.clamp_max(step))
                for key, value in losses.items():  # the step returns detached losses
                    sums[key] = sums[key] + value.float() if key in sums else value.float().clone()
                count += 1
                done = step + 1
                if done - start == WARMUP_STEPS + 1:
                    warm = clock.mark()
                log_point = done % self.log_every == 0 or done == self.iterations
                checkpoint = done % self.checkpoint_every == 0 and done < self.iterations
                if log_point or checkpoint:
                    read = self._read_and_check(done, first_bad, sums, _largest(weights, device),
                                                _largest(running_vars, device))
                if log_point:
                    last = {k: v / count for k, v in read.items()}
                    sums, count = {}, 0
                    self._log(live, done, last, bar)
                bar.update(1)
                if checkpoint:
                    self._save_checkpoint(done)
        return last, warm

    def _read_and_check(self, step: int, first_bad: torch.Tensor, sums: dict[str, torch.Tensor],
                        weight: torch.Tensor, running_var: torch.Tensor) -> dict[str, float]:
        """The one host sync of a log point or checkpoint: read the NaN guard, the loss sums and the largest weight
        and BN running variance together; stop on a bad state, else return the sums."""
        bad_step, w, var, *values = torch.stack([t.double() for t in (first_bad, weight, running_var,
                                                                       *sums.values())]).tolist()
        if bad_step < self.iterations:
            raise NonFiniteLossError(f"{self.name}: non-finite loss at step {int(bad_step)}; {self._kept()}. Lower "
                                     "the learning rate or check the data, then rerun to resume.")
        if not (w <= WEIGHT_LIMIT and var <= RUNNING_VAR_LIMIT):  # NaN magnitudes count as diverged
            raise DivergenceError(
                f"{self.name}: training diverged by step {step}: largest |weight| {w:.3g} (limit {WEIGHT_LIMIT:.0e}), "
                f"largest BatchNorm running variance {var:.3g} (limit {RUNNING_VAR_LIMIT:.0e}); the loss can still "
                f"fall while the maps become meaningless; {self._kept()}. Likely cause: {self.divergence_hint}; "
                "a run with changed settings starts over.")
        return dict(zip(sums, values, strict=True))

    def _kept(self) -> str:
        if self.kept_step:
            return f"the last good checkpoint {self.checkpoint_path} (step {self.kept_step}) is kept"
        return "no checkpoint had been written yet"

    def _log(self, live: Live | None, step: int, values: dict[str, float], bar: tqdm) -> None:
        extra = self.extra_logs() if self.extra_logs else {}
        bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)
        if live is None:
            return
        live.step = step
        for key, value in {**values, **extra}.items():
            name = f"{self.name}/{key}"
            with writing(Path(live.plots_dir, "metrics", f"{name}.tsv")):
                live.log_metric(name, value)

    @contextlib.contextmanager
    def _live(self, start: int) -> Iterator[Live | None]:
        """dvclive's logger of this run; if the block fails, the curves go back to the kept checkpoint and the
        summary is removed."""
        if self.live_dir is None:
            yield None
            return
        try:  # imported here: dvclive pulls in dvc and ~20 packages that training itself does not need
            from dvclive import Live
        except ImportError:
            log.warning("%s: dvclive is not installed: training without curves (pip install dvclive to log them)",
                        self.name)
            yield None
            return
        if start > 0:
            _truncate_curves(self.live_dir, start)
        live = Live(str(self.live_dir), resume=start > 0, dvcyaml=False, save_dvc_exp=False)
        try:
            yield live
        except BaseException:
            try:
                _truncate_curves(self.live_dir, self.kept_step)
                Path(live.metrics_file).unlink(missing_ok=True)
            except OSError as exc:  # the original error matters more
                log.warning("%s: could not cut the curves in %s back to step %d: %s", self.name, self.live_dir,
                            self.kept_step, exc)
            raise


def _largest(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """The largest absolute value over ``tensors`` (on ``device``, without a host sync; 0 for none)."""
    if not tensors:
        return torch.zeros((), device=device)
    return torch.stack([t.detach().abs().amax() for t in tensors]).amax()


def _truncate_curves(live_dir: Path, step: int) -> None:
    """Cut the curves back to ``step``: drop the rows logged after it and a row cut short by a failed write, so
    curves never hold a step twice. In place (truncating needs no free space); a file whose header was cut short
    is removed."""
    for tsv in (live_dir / "plots").rglob("*.tsv"):
        with tsv.open("rb+") as fh:
            header = fh.readline()
            columns = header.rstrip(b"\r\n").split(b"\t")
            complete = header.endswith(b"\n")
            if complete and b"step" in columns:
                col, end = columns.index(b"step"), fh.tell()
                for row in iter(fh.readline, b""):
                    cells = row.rstrip(b"\r\n").split(b"\t")
                    if not row.endswith(b"\n") or len(cells) != len(columns) or int(cells[col]) > step:
                        break
                    end = fh.tell()
                fh.truncate(end)
        if not complete:
            tsv.unlink()
