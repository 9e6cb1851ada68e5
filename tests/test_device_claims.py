"""Queued experiments on one machine never share a GPU: per-GPU lock files, faked GPU counts, real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

# A stage's view of a machine with PFADSEG_FAKE_GPUS GPUs: it claims one through resolve_device("auto"),
# says which, then holds it until its stdin closes (or it is killed).
WORKER = """
import os, sys, torch
torch.cuda.is_available = lambda: True
torch.cuda.device_count = lambda: int(os.environ["PFADSEG_FAKE_GPUS"])
from pfadseg.device import device_label, resolve_device
device = resolve_device("auto")
assert resolve_device("auto") == device, "a second call claims a second GPU"
print(device_label(device), flush=True)
sys.stdin.read()
"""


def _start(lock_dir: Path, gpus: int, visible: str | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PFADSEG_GPU_LOCK_DIR": str(lock_dir), "PFADSEG_FAKE_GPUS": str(gpus), "OMP_NUM_THREADS": "1"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    return subprocess.Popen([sys.executable, "-c", WORKER], cwd=REPO, env=env, text=True, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def _claimed(worker: subprocess.Popen[str]) -> str:
    assert worker.stdout is not None
    return worker.stdout.readline().strip()


@pytest.fixture
def workers() -> list[subprocess.Popen[str]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for worker in started:
        worker.kill()
        worker.wait()


def test_workers_never_share_a_gpu_and_a_killed_worker_frees_its_own(tmp_path: Path, workers: list) -> None:
    workers += [_start(tmp_path, gpus=3) for _ in range(3)]
    devices = [_claimed(w) for w in workers]
    assert sorted(devices) == ["cuda:0 (GPU 0)", "cuda:1 (GPU 1)", "cuda:2 (GPU 2)"], devices

    waiting = _start(tmp_path, gpus=3)
    workers.append(waiting)
    time.sleep(3)  # it polls every 2 s; every GPU is held, so it has claimed nothing
    assert waiting.poll() is None
    os.kill(workers[1].pid, signal.SIGKILL)  # a crash: no cleanup code runs, the kernel drops the lock
    workers[1].wait()
    assert _claimed(waiting) == devices[1]


def test_a_finished_worker_frees_its_gpu(tmp_path: Path, workers: list) -> None:
    first = _start(tmp_path, gpus=2)
    workers.append(first)
    assert _claimed(first) == "cuda:0 (GPU 0)"
    first.communicate("")  # stdin closed: the process ends normally
    second = _start(tmp_path, gpus=2)
    workers.append(second)
    assert _claimed(second) == "cuda:0 (GPU 0)"


def test_cuda_visible_devices_names_the_locks(tmp_path: Path, workers: list) -> None:
    """Index i of CUDA_VISIBLE_DEVICES=3,5 is machine GPU 3 or 5: the lock names the machine's GPU."""
    holder = _start(tmp_path, gpus=2, visible="3,5")
    workers.append(holder)
    assert _claimed(holder) == "cuda:0 (GPU 3)"
    third = _start(tmp_path, gpus=2, visible="5,3")  # GPU 5 is index 0 for this one
    workers.append(third)
    assert _claimed(third) == "cuda:0 (GPU 5)"
    other = _start(tmp_path, gpus=2, visible="5,3")  # both held: it waits, then takes GPU 3 as its cuda:1
    workers.append(other)
    time.sleep(3)
    assert other.poll() is None
    holder.communicate("")
    assert _claimed(other) == "cuda:1 (GPU 3)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-3.lock", "gpu-5.lock"]


def test_one_gpu_and_no_gpu_claim_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from pfadseg.device import resolve_device

    monkeypatch.setenv("PFADSEG_GPU_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda")
    assert not (tmp_path / "locks").exists()


def test_per_gpu_slots_put_at_most_k_workers_on_a_gpu(tmp_path: Path, workers: list,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """pfadseg ablate --jobs 4 --per-gpu 2 on 2 GPUs: every worker gets a GPU, two per GPU; a fifth waits."""
    monkeypatch.setenv("PFADSEG_JOBS_PER_GPU", "2")
    workers += [_start(tmp_path, gpus=2) for _ in range(4)]
    devices = [_claimed(w) for w in workers]
    assert sorted(devices) == ["cuda:0 (GPU 0)"] * 2 + ["cuda:1 (GPU 1)"] * 2, devices
    fifth = _start(tmp_path, gpus=2)
    workers.append(fifth)
    time.sleep(3)
    assert fifth.poll() is None, "every slot is held"
    workers[0].communicate("")
    assert _claimed(fifth) == devices[0]


def test_the_first_slot_of_every_gpu_fills_first(tmp_path: Path, workers: list,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PFADSEG_JOBS_PER_GPU", "3")
    workers += [_start(tmp_path, gpus=2) for _ in range(2)]
    assert sorted(_claimed(w) for w in workers) == ["cuda:0 (GPU 0)", "cuda:1 (GPU 1)"]


def test_a_bad_jobs_per_gpu_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from pfadseg.device import jobs_per_gpu

    monkeypatch.setenv("PFADSEG_JOBS_PER_GPU", "0")
    with pytest.raises(ValueError, match="PFADSEG_JOBS_PER_GPU='0'"):
        jobs_per_gpu()
