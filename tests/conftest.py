"""Shared fixtures: the project's params with overrides, tiny settings for fast CPU tests, real samples."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

# With pytest-xdist's N workers, each process (and every stage it starts) computes with cores / N threads, so that
# the workers never oversubscribe the cores; set before torch reads it.
THREADS = max(1, min(2, os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.update(dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS"), str(THREADS)))

import torch  # noqa: E402

from pfadseg.config import Config, config_from_dict, read_params  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# Small enough for a 2-core CPU; every test that trains or builds data starts from these.
TINY = (
    "data.image_size=64",
    "data.categories=[bottle,carpet]",
    "data.synthetic.image_size=64",
    "data.synthetic.n_train=8",
    "data.synthetic.n_test_good=3",
    "data.synthetic.n_test_per_defect=2",
    "data.synthetic.n_defect_types=2",
    "data.procedural_textures.n_classes=2",
    "data.procedural_textures.per_class=3",
    "data.procedural_textures.image_size=64",
    "bank.n_masks=64",
    "bank.n_textures=8",
    "train.student.iterations=4",
    "train.student.batch_size=4",
    "train.seg.iterations=4",
    "train.seg.batch_size=4",
    "train.checkpoint_every=2",
    "train.log_every=1",
    "calibrate.n_samples=8",
    "eval.batch_size=8",
    "eval.top_k=10",
)


@pytest.fixture(autouse=True, scope="session")
def _deterministic_torch() -> None:
    torch.set_num_threads(THREADS)


@pytest.fixture
def make_config() -> Callable[..., Config]:
    """``make_config("model.use_rcm=false", ...)``: the repository's params.yaml plus overrides."""

    def _make(*overrides: str) -> Config:
        return config_from_dict(read_params(REPO / "params.yaml"), overrides)

    return _make


@pytest.fixture
def tiny_config(make_config: Callable[..., Config]) -> Callable[..., Config]:
    """Like ``make_config`` but starting from the tiny CPU settings in ``TINY``."""

    def _make(*overrides: str) -> Config:
        return make_config(*TINY, *overrides)

    return _make


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $PFADSEG_SHARED_DATA); tests using it skip when it is absent."""
    path = Path(os.environ.get("PFADSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"real data samples not found at {path} (set PFADSEG_SHARED_DATA)")
    return path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with slow (end-to-end) tests first, in-file order kept: pytest-xdist's workers then start on the long
    files and fill their tails with the short ones."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)
