"""Model files and checkpoints: one that cannot be loaded gets a reason and what to do, never advice to load it
unsafely."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest
import torch

from pfadseg.artifacts import ArtifactError, load_model_file, save_model_file
from pfadseg.train.loop import TrainLoop

FORMAT = "pfadseg.test/1"


def _load_error(path: Path) -> str:
    with pytest.raises(ArtifactError) as info:
        load_model_file(path, FORMAT)
    return str(info.value)


def test_a_saved_model_file_loads(tmp_path: Path) -> None:
    save_model_file(tmp_path / "m.pt", FORMAT, {"w": torch.ones(2)}, {"seed": 0})
    content = load_model_file(tmp_path / "m.pt", FORMAT)
    assert torch.equal(content["state_dict"]["w"], torch.ones(2)) and content["meta"]["seed"] == 0


def test_an_empty_model_file_says_it_is_empty(tmp_path: Path) -> None:
    (tmp_path / "seg.pt").write_bytes(b"")
    message = _load_error(tmp_path / "seg.pt")
    assert message.startswith(f"{tmp_path / 'seg.pt'}: unreadable model file: the file is empty (0 bytes)")
    assert "()" not in message and "train it again" in message


def test_a_file_the_safe_loader_refuses_gets_no_advice_to_load_it_unsafely(tmp_path: Path) -> None:
    torch.save({"format": FORMAT, "state_dict": {}, "meta": argparse.Namespace(seed=0)}, tmp_path / "m.pt")
    message = _load_error(tmp_path / "m.pt")
    assert "safe loader refuses: Unsupported global: GLOBAL argparse.Namespace" in message
    assert "weights_only" not in message and "add_safe_globals" not in message and "\x1b" not in message


def test_a_refused_checkpoint_is_ignored_with_the_reason_only(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    module = torch.nn.Linear(1, 1)
    loop = TrainLoop("seg", torch.device("cpu"), {"seg": module}, torch.optim.SGD(module.parameters(), lr=0.1),
                     torch.Generator(), iterations=1, checkpoint_path=tmp_path / "seg.ckpt", run_fingerprint="f",
                     checkpoint_every=1, log_every=1)
    torch.save({"format": "pfadseg.checkpoint/1", "step": argparse.Namespace(step=1)}, tmp_path / "seg.ckpt")
    with caplog.at_level(logging.WARNING):
        assert loop._try_resume() == 0  # starts over
    assert "ignoring unreadable checkpoint" in caplog.text and "argparse.Namespace" in caplog.text
    assert "weights_only" not in caplog.text and "add_safe_globals" not in caplog.text
