"""train.compile: every trained network is one dynamo graph (no graph break) and is not recompiled across training
steps, on the fp32 CPU path and on the accelerator path. Dynamo's ``eager`` backend traces exactly what inductor
would be given, without a C compiler."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
import torch

from pfadseg.config import Config
from pfadseg.device import COMPILE_CACHE_ENV, compile_cache_dir, maybe_compile
from pfadseg.paths import Layout
from pfadseg.pipeline.adps import TRAIN_ADPS
from pfadseg.pipeline.train_seg import TRAIN_SEG
from pfadseg.pipeline.train_student import TRAIN_STUDENT
from tests.train.test_accelerator_path import ACCELERATOR_PATH, OFFLINE

STEPS = ("train.student.iterations=3", "train.seg.iterations=3", "train.compile=true")
ADPS = ("model.arch=adps", "model.adps.k=2", "train.adps.epochs=1", "train.adps.milestones=[]",
        "train.adps.batch_size=4")


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], int]]:
    """torch.compile as fullgraph tracing (a graph break raises) that refuses to recompile; yields the count of
    graphs traced since."""
    monkeypatch.setattr(torch, "compile", partial(torch.compile, backend="eager", fullgraph=True))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with torch._dynamo.config.patch(error_on_recompile=True):
        yield lambda: torch._dynamo.utils.counters["stats"]["unique_graphs"]
    torch._dynamo.reset()


@pytest.mark.parametrize("path", [(), ACCELERATOR_PATH], ids=["fp32", "accelerator"])
def test_both_stages_trace_to_one_graph_each_and_never_recompile(
        workspace: Path, tiny_config: Callable[..., Config], traced: Callable[[], int], path: tuple[str, ...]) -> None:
    cfg = tiny_config(*OFFLINE, *path, *STEPS)
    TRAIN_STUDENT.invoke(cfg, Layout(), "bottle", 0, progress=False)
    assert traced() == 1, "the student's forward is one graph"
    torch._dynamo.reset()  # a new process in the pipeline: the stacked forward's code is dynamo's cache key
    TRAIN_SEG.invoke(cfg, Layout(), "bottle", 0, progress=False)
    assert traced() == 2, "the seg net's forward is one graph"


def test_the_adps_network_traces_to_one_graph_and_never_recompiles(
        workspace: Path, tiny_config: Callable[..., Config], traced: Callable[[], int]) -> None:
    TRAIN_ADPS.invoke(tiny_config(*OFFLINE, *ADPS, *STEPS), Layout(), "bottle", 0, progress=False)
    assert traced() == 1


def test_compiled_graphs_persist_in_a_cache_folder_of_their_own(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv(COMPILE_CACHE_ENV, raising=False)
    assert compile_cache_dir() == tmp_path / ".cache" / "pfadseg" / "inductor"
    maybe_compile(torch.nn.Identity(), enabled=True)
    assert os.environ[COMPILE_CACHE_ENV] == str(tmp_path / ".cache" / "pfadseg" / "inductor"), "inductor reads it"
    monkeypatch.setenv(COMPILE_CACHE_ENV, str(tmp_path / "mine"))
    assert compile_cache_dir() == tmp_path / "mine"
