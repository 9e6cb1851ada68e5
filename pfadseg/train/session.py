"""What every training stage does around its step: check the run, set up device, bank, teacher and images,
run the loop with checkpoints, write the model file with its provenance (PFADSeg §3.4, ADPS Sec. IV)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from pfadseg.arch.base import Architecture, ModelFile, same_teacher
from pfadseg.artifacts import ArtifactError, load_model_file, save_model_file
from pfadseg.config import Config, select_params
from pfadseg.data.images import load_train_set
from pfadseg.device import amp_enabled, autocast, configure_backends, device_label, resolve_device
from pfadseg.paths import Layout
from pfadseg.seeding import derive_seed, torch_generator
from pfadseg.synth.bank import AnomalyBank
from pfadseg.train.loop import WARMUP_STEPS, LoopResult, TrainLoop, fingerprint

log = logging.getLogger(__name__)


@dataclass
class TrainingSession:
    """One training stage of one run: its config, layout, run, device, bank, teacher and training images."""

    arch: Architecture
    name: str  # the DVC stage, one of arch.train_stages
    cfg: Config
    layout: Layout
    category: str
    seed: int
    progress: bool = True

    def __post_init__(self) -> None:
        self.began = time.perf_counter()  # the stage's one-off set-up runs from here to the loop's first step
        self.params: Sequence[str] = self.arch.stage_params[self.name]  # fingerprint and stored stage_params
        # names checkpoints, curves, seeds and the progress bar, e.g. "student"
        self.stage = self.arch.curves[self.arch.train_stages.index(self.name)]
        self.device = resolve_device(self.cfg.train.device)
        configure_backends(self.device)
        self.bank = AnomalyBank.load(self.layout.bank, self.cfg)
        self.teacher = self.arch.load_teacher(self.cfg, self.device)
        self.images = load_train_set(self.layout.images, self.category, self.cfg.data.image_size)

    def load_trained(self, file: ModelFile) -> dict[str, Any]:
        """An earlier stage's model file of this run, refused if trained with another teacher."""
        path = self.layout.model(self.category, self.seed, file.name)
        content = load_model_file(path, file.format)
        current = self.arch.teacher_record(self.cfg)
        if not same_teacher(content["meta"].get("teacher", {}), current):
            raise ArtifactError(f"{path}: trained with teacher {content['meta'].get('teacher')}, but params.yaml gives "
                             f"{current}; retrain it")
        return content

    def init_seed(self) -> int:
        """Seed of this stage's weight init."""
        return derive_seed(self.seed, self.category, self.stage, "init")

    def generator(self) -> torch.Generator:
        """This stage's batch stream."""
        return torch_generator(self.seed, self.category, self.stage, "batches", device=self.device)

    def amp(self) -> Callable[[], contextlib.AbstractContextManager[Any]]:
        return partial(autocast, self.device, amp_enabled(self.device, self.cfg.train))

    def run(self, *, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer, generator: torch.Generator,
            iterations: int, step: Callable[[int], dict[str, torch.Tensor]], file: ModelFile,
            state_dict: dict[str, torch.Tensor], divergence_hint: str,
            meta: Callable[[], dict[str, Any]] | None = None,
            extra_logs: Callable[[], dict[str, float]] | None = None) -> None:
        """Train to ``iterations`` (resuming from a matching checkpoint), then write ``file`` into the run folder.

        ``state_dict`` is read after training (the modules' tensors, updated in place); ``meta()``, called after
        training, adds to the stored metadata; ``divergence_hint`` is the likely cause the divergence guard names.
        If training or a write fails, the curves go back to the last checkpoint and no model file is written.
        """
        cfg, layout, category, seed = self.cfg, self.layout, self.category, self.seed
        stage_params = select_params(cfg, self.params)
        checkpoint = layout.checkpoints(category, seed) / f"{file.name.removesuffix('.pt')}.ckpt"
        path = layout.model(category, seed, file.name)

        def save(result: LoopResult) -> None:
            save_model_file(path, file.format, state_dict, {
                "category": category, "stage_params": stage_params, "config": cfg.to_dict(),
                "teacher": self.arch.teacher_record(cfg), "seed": cfg.seed, "run_seed": seed,
                "device": device_label(self.device), "iterations": iterations, "wall_time_s": result.wall_time_s,
                "setup_s": setup_s, "warmup_s": result.warmup_s, "steady_it_s": result.steady_it_s,
                "resumed_from": result.resumed_from,
                "final_losses": result.last_losses, **(meta() if meta else {}),
            })

        loop = TrainLoop(
            name=self.stage, device=self.device, modules=modules, optimizer=optimizer, generator=generator,
            iterations=iterations, checkpoint_path=checkpoint,
            run_fingerprint=fingerprint({"stage": self.stage, "category": category, "run_seed": seed,
                                         **stage_params}),
            checkpoint_every=cfg.train.checkpoint_every, log_every=cfg.train.log_every,
            live_dir=layout.live(category, seed, self.stage), progress=self.progress, extra_logs=extra_logs,
            divergence_hint=divergence_hint, finish=save,
        )
        setup_s = time.perf_counter() - self.began
        result = loop.run(step)
        checkpoint.unlink(missing_ok=True)
        steady = "" if result.steady_it_s is None else f", then {result.steady_it_s:.2f} it/s"
        log.info("%s %s seed %d: %d iterations in %.1f s (one-off: set-up %.1f s, first %d steps %.1f s%s) -> %s",
                 self.stage, category, seed, iterations, result.wall_time_s, setup_s, WARMUP_STEPS + 1,
                 result.warmup_s, steady, path)
