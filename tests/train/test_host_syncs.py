"""The training step never waits for the device: host syncs happen only at log points, one each (losses, NaN guard,
divergence guard)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import pfadseg
from pfadseg.config import Config
from pfadseg.paths import Layout
from pfadseg.pipeline.acquire_images import acquire_images
from pfadseg.pipeline.acquire_textures import acquire_textures
from pfadseg.pipeline.adps import TRAIN_ADPS
from pfadseg.pipeline.bank import run_bank
from pfadseg.pipeline.entry import StageDef
from pfadseg.pipeline.train_seg import TRAIN_SEG
from pfadseg.pipeline.train_student import TRAIN_STUDENT
from pfadseg.train import loop as loop_module

# What copies a tensor's value to the host (a device sync on CUDA).
SYNCING = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")
LOG_EVERY, ITERATIONS = 3, 7
PACKAGE = str(Path(pfadseg.__file__).parent)
OFFLINE = ("data.source=synthetic", "data.textures=procedural", "model.teacher_weights=random",
           "data.categories=[bottle]", "model.use_aff=false", "model.use_pcar=false", "model.use_rcm=false",
           f"train.log_every={LOG_EVERY}", "train.checkpoint_every=100", f"train.student.iterations={ITERATIONS}",
           f"train.seg.iterations={ITERATIONS}", "train.student.batch_size=2", "train.seg.batch_size=2")
ADPS = ("model.arch=adps", "model.adps.k=2", f"train.adps.epochs={ITERATIONS}", "train.adps.milestones=[]",
        "train.adps.batch_size=8")  # 8 training images: one step per epoch


def _syncs_per_step(monkeypatch: pytest.MonkeyPatch) -> dict[int, int]:
    """Counts host-syncing tensor calls made by pfadseg's code while each training step (and the loop's work after
    it) runs. Calls inside torch are not counted: e.g. Adam reads its step counter, a host tensor on CUDA too."""
    counts: dict[int, int] = {}
    current: list[int] = []
    for name in SYNCING:
        original = getattr(torch.Tensor, name)

        def counting(self: torch.Tensor, *args: object, _original: Callable = original, **kwargs: object) -> object:
            if current and PACKAGE in sys._getframe(1).f_code.co_filename:
                counts[current[-1]] = counts.get(current[-1], 0) + 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    run = loop_module.TrainLoop.run

    def tracking(self: loop_module.TrainLoop, step_fn: Callable[[int], dict]) -> object:
        def step(index: int) -> dict:
            current.append(index)
            return step_fn(index)

        try:
            return run(self, step)
        finally:
            current.append(-1)  # after the loop: not counted against a step

    monkeypatch.setattr(loop_module.TrainLoop, "run", tracking)
    return counts


@pytest.mark.parametrize("stages", [(TRAIN_STUDENT,), (TRAIN_STUDENT, TRAIN_SEG), (TRAIN_ADPS,)],
                         ids=["student", "seg", "adps"])
def test_training_steps_sync_only_at_log_points(
    stages: tuple[StageDef, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    tiny_config: Callable[..., Config]
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(*OFFLINE, *(ADPS if stages[0] is TRAIN_ADPS else ()))
    acquire_images(cfg, Layout(), progress=False)
    acquire_textures(cfg, Layout(), progress=False)
    run_bank(cfg, Layout(), progress=False)
    for stage in stages[:-1]:
        stage.invoke(cfg, Layout(), "bottle", 0, progress=False)
    counts = _syncs_per_step(monkeypatch)
    stages[-1].invoke(cfg, Layout(), "bottle", 0, progress=False)
    counts.pop(-1, None)
    log_points = {s for s in range(ITERATIONS) if (s + 1) % LOG_EVERY == 0 or s + 1 == ITERATIONS}
    assert set(counts) <= log_points, f"host syncs in steps {sorted(set(counts) - log_points)}: {counts}"
    assert log_points <= set(counts), "the losses and the NaN guard are read at every log point"
    # one read of losses and guards per log point (after the last step the loop also writes the model file)
    assert all(counts[s] == 1 for s in log_points - {ITERATIONS - 1}), counts
