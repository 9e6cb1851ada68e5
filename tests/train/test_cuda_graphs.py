"""train.cuda_graphs: a captured and replayed training step equals the eager one; without CUDA it stays eager."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from pfadseg.arch.adps import ADPS_FILE
from pfadseg.arch.destseg import SEG_FILE, STUDENT_FILE
from pfadseg.artifacts import load_model_file
from pfadseg.config import Config
from pfadseg.paths import Layout
from pfadseg.pipeline.adps import TRAIN_ADPS
from pfadseg.pipeline.train_seg import TRAIN_SEG
from pfadseg.pipeline.train_student import TRAIN_STUDENT
from pfadseg.synth.composer import BatchComposer
from pfadseg.train.loop import WARMUP_STEPS
from tests.train.conftest import OFFLINE

STEPS = WARMUP_STEPS + 3  # three replays after the eager warm-up
# bottle in the no-rotation group: then every batch tensor is one the composer writes in place
UPRIGHT = ("train.augment.none=[bottle,capsule,metal_nut,pill,toothbrush,transistor]",
           "train.augment.rotate=[grid,hazelnut,leather,tile,carpet,screw]")


def _train(tiny_config: Callable[..., Config], *overrides: str) -> dict[str, dict[str, torch.Tensor]]:
    cfg = tiny_config(*OFFLINE, f"train.student.iterations={STEPS}", f"train.seg.iterations={STEPS}",
                      f"train.checkpoint_every={STEPS}", *overrides)
    TRAIN_STUDENT.invoke(cfg, Layout(), "bottle", 0, progress=False)
    TRAIN_SEG.invoke(cfg, Layout(), "bottle", 0, progress=False)
    return {f.name: load_model_file(Layout().model("bottle", 0, f.name), f.format)["state_dict"]
            for f in (STUDENT_FILE, SEG_FILE)}


def _fresh_run() -> None:
    """Remove the trained run (models, checkpoints, curves) so that the next one starts from scratch."""
    for kind in ("models", "checkpoints", "dvclive"):
        shutil.rmtree(Layout().run_dir(kind, "bottle", 0), ignore_errors=True)


def test_without_cuda_the_option_trains_eagerly_with_identical_weights(
        workspace: Path, tiny_config: Callable[..., Config]) -> None:
    eager = _train(tiny_config, "train.cuda_graphs=false")
    _fresh_run()
    graphs = _train(tiny_config, "train.cuda_graphs=true")
    for name, state in eager.items():
        assert state.keys() == graphs[name].keys()
        assert all(torch.equal(state[k], graphs[name][k]) for k in state), name


def test_the_steps_batch_tensors_keep_their_storage(
        workspace: Path, tiny_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch) -> None:
    """What capture needs: every tensor the step reads is written in place, step after step."""
    pointers: list[dict[str, int]] = []
    sample = BatchComposer.sample

    def recording(self: BatchComposer, batch_size: int, reuse: dict | None = None) -> dict[str, torch.Tensor]:
        batch = sample(self, batch_size, reuse)
        pointers.append({k: v.untyped_storage().data_ptr() for k, v in batch.items()})
        return batch

    monkeypatch.setattr(BatchComposer, "sample", recording)
    _train(tiny_config, *UPRIGHT)
    assert len(pointers) == 2 * STEPS
    for stage in (pointers[:STEPS], pointers[STEPS:]):
        assert all(p == stage[0] for p in stage), stage


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("amp", ["false", "true"])
def test_graphed_steps_equal_eager_steps_on_cuda(
        workspace: Path, tiny_config: Callable[..., Config], amp: str) -> None:
    cuda = ("train.device=cuda", f"train.amp={amp}", "train.channels_last=true")
    eager = _train(tiny_config, *cuda, "train.cuda_graphs=false")
    _fresh_run()
    graphs = _train(tiny_config, *cuda, "train.cuda_graphs=true")
    tolerance = 2e-2 if amp == "true" else 1e-4  # cuDNN may pick other kernels in another run
    for name, state in eager.items():
        for key, value in state.items():
            other = graphs[name][key]
            if value.is_floating_point():
                scale = max(1.0, float(value.abs().max()))
                torch.testing.assert_close(other, value, rtol=tolerance, atol=tolerance * scale,
                                           msg=f"{name} {key}")
            else:
                assert torch.equal(other, value), f"{name} {key}"


def _train_adps(tiny_config: Callable[..., Config], *overrides: str) -> dict[str, torch.Tensor]:
    """ADPS's joint step over 3 epochs of 2 iterations, its lr decayed at epoch 2: a graph captured, then again."""
    cfg = tiny_config(*OFFLINE, *ADPS_RUN, *overrides)
    TRAIN_ADPS.invoke(cfg, Layout(), "bottle", 0, progress=False)
    return load_model_file(Layout().model("bottle", 0, ADPS_FILE.name), ADPS_FILE.format)["state_dict"]


ADPS_RUN = ("model.arch=adps", "model.adps.k=2", "train.adps.epochs=3", "train.adps.milestones=[2]",
            "train.adps.batch_size=4", "data.synthetic.n_train=8", "train.checkpoint_every=100")


def test_without_cuda_adps_trains_eagerly_with_identical_weights(
        workspace: Path, tiny_config: Callable[..., Config]) -> None:
    eager = _train_adps(tiny_config, "train.cuda_graphs=false")
    _fresh_run()
    graphs = _train_adps(tiny_config, "train.cuda_graphs=true")
    assert eager.keys() == graphs.keys() and all(torch.equal(eager[k], graphs[k]) for k in eager)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graphed_adps_steps_equal_eager_steps_across_a_milestone_on_cuda(
        workspace: Path, tiny_config: Callable[..., Config]) -> None:
    cuda = ("train.device=cuda", "train.amp=false", "train.channels_last=true")
    eager = _train_adps(tiny_config, *cuda, "train.cuda_graphs=false")
    _fresh_run()
    graphs = _train_adps(tiny_config, *cuda, "train.cuda_graphs=true")
    for key, value in eager.items():
        if value.is_floating_point():
            scale = max(1.0, float(value.abs().max()))
            torch.testing.assert_close(graphs[key], value, rtol=1e-4, atol=1e-4 * scale, msg=key)
        else:
            assert torch.equal(graphs[key], value), key
