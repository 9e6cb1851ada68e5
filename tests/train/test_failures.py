"""A training stage that fails (full disk, divergence, interrupt) names the cause, keeps its last checkpoint, leaves no
curve, summary or model file of the unfinished run, and a rerun resumes to what an uninterrupted run gives."""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from dvclive.plots.metric import Metric

from pfadseg import fsio
from pfadseg.arch.destseg import STUDENT_FILE
from pfadseg.artifacts import load_model_file
from pfadseg.config import Config
from pfadseg.fsio import WriteError
from pfadseg.paths import Layout
from pfadseg.pipeline.train_seg import TRAIN_SEG
from pfadseg.pipeline.train_student import TRAIN_STUDENT
from pfadseg.train import loop as loop_module
from pfadseg.train.loop import RUNNING_VAR_LIMIT, WEIGHT_LIMIT, DivergenceError
from tests.train.conftest import OFFLINE

BASELINE = ("model.use_aff=false", "model.use_pcar=false", "model.use_rcm=false")  # half PFADSeg's size: faster
# 6 steps, a checkpoint at 2 and 4, a logged point at each step.
RUN = (*BASELINE, "train.student.iterations=6", "train.checkpoint_every=2", "train.log_every=1")
LIVE = Path("dvclive/bottle/seed0/student")
CURVE = LIVE / "plots/metrics/student/loss.tsv"


def _model() -> Path:
    return Layout().model("bottle", 0, STUDENT_FILE.name)


def _checkpoint() -> Path:
    return Layout().checkpoints("bottle", 0) / "student.ckpt"


def _steps() -> list[int]:
    """The steps of the student's loss curve (none if it was never written)."""
    return [int(row.split("\t")[0]) for row in CURVE.read_text().splitlines()[1:]] if CURVE.exists() else []


def _outputs() -> dict[str, bytes | dict[str, torch.Tensor]]:
    """The curves and summary, byte for byte, and the model's weights."""
    files: dict[str, bytes | dict[str, torch.Tensor]] = {
        str(p.relative_to(LIVE)): p.read_bytes() for p in sorted(LIVE.rglob("*")) if p.is_file()}
    files["weights"] = load_model_file(_model(), STUDENT_FILE.format)["state_dict"]
    return files


def _same(a: dict[str, bytes | dict[str, torch.Tensor]], b: dict[str, bytes | dict[str, torch.Tensor]]) -> bool:
    wa, wb = a["weights"], b["weights"]
    assert isinstance(wa, dict) and isinstance(wb, dict)
    return ({k: v for k, v in a.items() if k != "weights"} == {k: v for k, v in b.items() if k != "weights"}
            and wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa))


def _temporaries() -> list[Path]:
    return list(Path().rglob(".*.tmp"))


def _fail_write(monkeypatch: pytest.MonkeyPatch, name: str, nth: int) -> None:
    """The ``nth`` atomic write of a file called ``name`` lands on /dev/full: a real ENOSPC from the OS."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    real, seen = tempfile.mkstemp, {"n": 0}

    def mkstemp(*args: object, prefix: str = "", **kwargs: object) -> tuple[int, str]:
        fd, tmp = real(*args, prefix=prefix, **kwargs)  # type: ignore[call-overload]
        if prefix == f".{name}.":
            seen["n"] += 1
            if seen["n"] == nth:
                os.close(fd)
                os.unlink(tmp)
                os.symlink("/dev/full", tmp)  # atomic_path unlinks the link, never /dev/full
                fd = os.open(tmp, os.O_WRONLY)
        return fd, tmp

    monkeypatch.setattr(fsio.tempfile, "mkstemp", mkstemp)


def _fail_curve_at_step_3(monkeypatch: pytest.MonkeyPatch) -> None:
    """The curve write of step 3 stops half-way through its row with ENOSPC."""
    real = Metric.dump

    def dump(self: Metric, val: object, **kwargs: object) -> None:
        if self.step == 3:
            with self.output_path.open("a") as fh:
                fh.write("3\t0.")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(self, val, **kwargs)

    monkeypatch.setattr(Metric, "dump", dump)


def _interrupt_at_step_3(monkeypatch: pytest.MonkeyPatch) -> None:
    real = loop_module.TrainLoop.run

    def run(self: loop_module.TrainLoop, step_fn: Callable[[int], dict]) -> object:
        def step(index: int) -> dict:
            if index == 3:
                raise KeyboardInterrupt
            return step_fn(index)

        return real(self, step)

    monkeypatch.setattr(loop_module.TrainLoop, "run", run)


# (how the run fails, the error and message, the checkpoint step kept)
FAILURES = {
    "checkpoint": (lambda mp: _fail_write(mp, "student.ckpt", 2), WriteError,
                   r"checkpoints/bottle/seed0/student\.ckpt: cannot write: No space left on device; free some space",
                   2),
    "model": (lambda mp: _fail_write(mp, "student.pt", 1), WriteError,
              r"models/bottle/seed0/student\.pt: cannot write: No space left on device", 4),
    "curve": (_fail_curve_at_step_3, WriteError,
              r"dvclive/bottle/seed0/student/plots/metrics/student/loss\.tsv: cannot write: No space left", 2),
    "interrupt": (_interrupt_at_step_3, KeyboardInterrupt, None, 2),
}


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failed_stage_leaves_nothing_of_the_unfinished_run_and_resumes_exactly(
    failure: str, workspace: Path, tiny_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_config(*OFFLINE, *RUN)
    TRAIN_STUDENT.invoke(cfg, Layout(), "bottle", 0, progress=False)
    uninterrupted = _outputs()
    _model().unlink()

    fail, error, message, kept = FAILURES[failure]
    with monkeypatch.context() as mp:
        fail(mp)
        with pytest.raises(error, match=message):
            TRAIN_STUDENT.invoke(cfg, Layout(), "bottle", 0, progress=False)
    assert torch.load(_checkpoint(), weights_only=True)["step"] == kept
    assert _steps() == list(range(1, kept + 1)), "the curves end at the kept checkpoint"
    assert not (LIVE / "metrics.json").exists(), "no summary of a run that did not finish"
    assert not _model().exists() and _temporaries() == []

    TRAIN_STUDENT.invoke(cfg, Layout(), "bottle", 0, progress=False)
    assert load_model_file(_model(), STUDENT_FILE.format)["meta"]["resumed_from"] == kept
    assert _same(uninterrupted, _outputs()), "the resumed run's curves, summary and weights are the uninterrupted ones"


def test_the_stage_entry_prints_a_full_disk_as_one_line(
    workspace: Path, tiny_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    from pfadseg.pipeline import entry

    cfg = tiny_config(*OFFLINE, *RUN)
    monkeypatch.setattr(entry, "load_config", lambda path: cfg)
    _fail_write(monkeypatch, "student.ckpt", 1)
    with pytest.raises(SystemExit):
        entry.run_stage(TRAIN_STUDENT, ["bottle", "0"])
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (f"error: {_checkpoint()}: cannot write: No space left on device; free some space, then "
                       "rerun"), err


def test_batch_2_diverges_and_stops_with_the_likely_cause(
    workspace: Path, tiny_config: Callable[..., Config]
) -> None:
    """PFADSeg's student at batch 2 (AFF/PCAR): its largest weight passes 1e7 at step 1 (DeSTSeg's stays ~3)."""
    cfg = tiny_config(*OFFLINE, "train.student.batch_size=2", "train.student.iterations=4", "train.log_every=2",
                      "train.checkpoint_every=100")
    expected = (r"^student: training diverged by step 2: largest \|weight\| \S+ \(limit 1e\+05\), largest BatchNorm "
                r"running variance \S+ \(limit 1e\+14\); .*no checkpoint had been written yet\. Likely cause: "
                r"train\.student\.batch_size 2 at lr 0\.5 with loss_reduction: sum \(with sum at the protocol's lr "
                r"0\.5, PFADSeg's student diverges at batches under 3\).*train\.student\.loss_reduction: mean")
    with pytest.raises(DivergenceError, match=expected) as err:
        TRAIN_STUDENT.invoke(cfg, Layout(), "bottle", 0, progress=False)
    weight = float(re.search(r"\|weight\| (\S+)", str(err.value)).group(1))  # type: ignore[union-attr]
    assert weight > WEIGHT_LIMIT
    assert _steps() == [] and not (LIVE / "metrics.json").exists() and not _model().exists()


@pytest.mark.parametrize("buffer", ["weight", "running_var"])
def test_divergence_keeps_the_last_good_checkpoint(
    buffer: str, workspace: Path, tiny_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A weight or BN running variance past its limit after step 3 (index 2) stops the run at its next read, step 3;
    the checkpoint of step 2 stays, the curves end there."""
    real = loop_module.TrainLoop.run

    def run(self: loop_module.TrainLoop, step_fn: Callable[[int], dict]) -> object:
        def step(index: int) -> dict:
            losses = step_fn(index)
            if index == 2:
                tensors = dict(self.modules["student"].named_parameters() if buffer == "weight"
                               else self.modules["student"].named_buffers())
                name = next(k for k in tensors if k.endswith(buffer))
                with torch.no_grad():
                    tensors[name].view(-1)[0] = 10 * (WEIGHT_LIMIT if buffer == "weight" else RUNNING_VAR_LIMIT)
            return losses

        return real(self, step)

    monkeypatch.setattr(loop_module.TrainLoop, "run", run)
    cfg = tiny_config(*OFFLINE, *RUN)
    kept = re.escape(f"the last good checkpoint {_checkpoint()} (step 2) is kept")
    with pytest.raises(DivergenceError, match=rf"^student: training diverged by step 3: .*; {kept}\. Likely cause"):
        TRAIN_STUDENT.invoke(cfg, Layout(), "bottle", 0, progress=False)
    assert torch.load(_checkpoint(), weights_only=True)["step"] == 2
    assert _steps() == [1, 2] and not (LIVE / "metrics.json").exists() and not _model().exists()


def test_the_protocols_batch_size_does_not_trip_the_guard(
    workspace: Path, tiny_config: Callable[..., Config]
) -> None:
    """params.yaml's PFADSeg at batch 16 for both stages, at 64 px: the student's magnitudes stay ~1e3 (weights) and
    ~2e10 (BN variances) over 200 steps, far under the limits."""
    cfg = tiny_config(*OFFLINE, "train.student.batch_size=16", "train.seg.batch_size=16", "train.student.iterations=6",
                      "train.seg.iterations=6", "train.log_every=2", "train.checkpoint_every=100")
    TRAIN_STUDENT.invoke(cfg, Layout(), "bottle", 0, progress=False)
    TRAIN_SEG.invoke(cfg, Layout(), "bottle", 0, progress=False)
    assert _model().is_file() and _steps() == [2, 4, 6]
