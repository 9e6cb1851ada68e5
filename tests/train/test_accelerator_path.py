"""The GPU code path on the CPU (train.accelerator_path_on_cpu): bf16 autocast and channels_last networks through
every stage, predict and export, so that dtype and memory-format bugs fail in CI, not on a user's GPU."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from pfadseg.arch.adps import ADPS_FILE
from pfadseg.arch.destseg import SEG_FILE, STUDENT_FILE
from pfadseg.artifacts import load_model_file
from pfadseg.bench.train import bench_train
from pfadseg.config import Config
from pfadseg.device import amp_enabled, autocast, prepare_module
from pfadseg.paths import Layout
from pfadseg.pipeline.adps import TRAIN_ADPS
from pfadseg.pipeline.calibrate import CALIBRATE
from pfadseg.pipeline.evaluate import EVALUATE
from pfadseg.pipeline.train_seg import TRAIN_SEG
from pfadseg.pipeline.train_student import TRAIN_STUDENT
from pfadseg.predict import load_predictor
from pfadseg.train import loop as loop_module

ACCELERATOR_PATH = ("train.amp=true", "train.channels_last=true", "train.accelerator_path_on_cpu=true")
# Small seg batches and few calibration samples: bf16 convolutions are emulated on CPUs without bf16 units (slow).
# The student keeps batch 4: at 2, its BatchNorm and lr 0.5 blow its weights up within two steps (fp32 too).
OFFLINE = ("data.source=synthetic", "data.textures=procedural", "model.teacher_weights=random",
           "data.categories=[bottle]", "train.student.iterations=2", "train.seg.iterations=2", "train.log_every=1",
           "train.seg.batch_size=2", "calibrate.n_samples=4")


def test_the_accelerator_path_is_off_on_the_cpu_unless_asked(tiny_config: Callable[..., Config]) -> None:
    cpu = torch.device("cpu")
    assert not amp_enabled(cpu, tiny_config("train.amp=true").train), "the CPU default stays fp32"
    assert amp_enabled(cpu, tiny_config(*ACCELERATOR_PATH).train)
    conv = torch.nn.Conv2d(3, 4, 3)
    assert prepare_module(conv, cpu, tiny_config(*ACCELERATOR_PATH).train).weight.is_contiguous(
        memory_format=torch.channels_last)
    with autocast(cpu, True):
        assert conv(torch.randn(1, 3, 8, 8)).dtype == torch.bfloat16


def _losses_seen(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, torch.Tensor]]:
    """Records what every training step returns."""
    seen: list[dict[str, torch.Tensor]] = []
    original = loop_module.TrainLoop.run

    def run(self: loop_module.TrainLoop, step_fn: Callable[[int], dict]) -> object:
        def recording(step: int) -> dict:
            seen.append(out := step_fn(step))
            return out

        return original(self, recording)

    monkeypatch.setattr(loop_module.TrainLoop, "run", run)
    return seen


def _assert_fp32_state(state: dict[str, torch.Tensor]) -> None:
    """Weights and BN statistics stay float32 and finite under autocast."""
    for key, value in state.items():
        if value.is_floating_point():
            assert value.dtype == torch.float32, key
            assert torch.isfinite(value).all(), key


def test_every_stage_runs_in_bf16_with_channels_last(
    workspace: Path, tiny_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_config(*OFFLINE, *ACCELERATOR_PATH)
    seen = _losses_seen(monkeypatch)
    TRAIN_STUDENT.invoke(cfg, Layout(), "bottle", 0, progress=False)
    TRAIN_SEG.invoke(cfg, Layout(), "bottle", 0, progress=False)
    CALIBRATE.invoke(cfg, Layout(), "bottle", 0)
    EVALUATE.invoke(cfg, Layout(), "bottle", 0)
    assert len(seen) == 4 and all(v.dtype == torch.float32 and torch.isfinite(v) for s in seen for v in s.values())
    for file in (STUDENT_FILE, SEG_FILE):
        _assert_fp32_state(load_model_file(Layout().model("bottle", 0, file.name), file.format)["state_dict"])
    metrics = json.loads(Layout().metrics("bottle", 0).read_text())
    assert 0.0 <= metrics["seg"]["image_auroc"] <= 1.0 and 0.0 <= metrics["seg"]["pixel_ap"] <= 1.0
    calibration = json.loads(Layout().calibration("bottle", 0).read_text())["calibration"]
    assert 0.0 <= calibration["image_threshold"] <= 1.0

    predictor = load_predictor(Layout().run_dir("models", "bottle", 0), device="cpu")
    assert amp_enabled(predictor.device, predictor.config.train)
    images = sorted((Layout().images / "bottle" / "test").rglob("*.png"))[:3]
    report = predictor.predict(images, workspace / "out", progress=False)
    assert report.n_ok == 3 and not report.failed

    pytest.importorskip("onnxruntime")
    from pfadseg.export import export_predictor, verify_onnx

    export_predictor(predictor, workspace / "model.onnx")
    fp32 = load_predictor(Layout().run_dir("models", "bottle", 0), device="cpu", require_threshold=False)
    diff = verify_onnx(workspace / "model.onnx", fp32.detector, image_size=fp32.image_size)
    assert max(diff.values()) < 1e-4, "the export of a bf16-trained run is an fp32 graph"


def test_adps_runs_in_bf16_with_channels_last(workspace: Path, tiny_config: Callable[..., Config]) -> None:
    cfg = tiny_config(*OFFLINE, *ACCELERATOR_PATH, "model.arch=adps", "model.adps.k=2", "train.adps.epochs=1",
                      "train.adps.milestones=[]", "train.adps.batch_size=4")
    TRAIN_ADPS.invoke(cfg, Layout(), "bottle", 0, progress=False)
    CALIBRATE.invoke(cfg, Layout(), "bottle", 0)
    EVALUATE.invoke(cfg, Layout(), "bottle", 0)
    content = load_model_file(Layout().model("bottle", 0, ADPS_FILE.name), ADPS_FILE.format)
    _assert_fp32_state(content["state_dict"])
    assert all(torch.isfinite(torch.tensor(v)) for v in content["meta"]["final_losses"].values())
    assert 0.0 <= json.loads(Layout().metrics("bottle", 0).read_text())["seg"]["image_auroc"] <= 1.0


def test_a_compiled_seg_net_trains(workspace: Path, tiny_config: Callable[..., Config],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """train.compile: inductor on the CPU (needs a C compiler), the same stage code as on a GPU. The seg net (the
    smaller graph: a quicker compile) is compiled; its student is trained plainly first."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(workspace / "inductor"))
    baseline = (*OFFLINE, "model.use_aff=false", "model.use_pcar=false", "model.use_rcm=false")
    cfg = tiny_config(*baseline, "train.compile=true")
    torch._dynamo.reset()
    TRAIN_STUDENT.invoke(tiny_config(*baseline), Layout(), "bottle", 0, progress=False)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 0
    TRAIN_SEG.invoke(cfg, Layout(), "bottle", 0, progress=False)
    content = load_model_file(Layout().model("bottle", 0, SEG_FILE.name), SEG_FILE.format)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0, "the seg net ran compiled"
    assert any((workspace / "inductor").iterdir()), "its compiled graphs persist in the cache folder"
    assert not any(k.startswith("_orig_mod.") for k in content["state_dict"]), "the plain module's weights"
    _assert_fp32_state(content["state_dict"])
    assert all(torch.isfinite(torch.tensor(v)) for v in content["meta"]["final_losses"].values())


def test_fewer_kernels_cuts_the_ops_of_every_step_the_bench_measures(make_config: Callable[..., Config]) -> None:
    """`pfadseg bench train` on the accelerator path: both stages' steps in the fewer-kernels form dispatch far
    fewer aten ops (and kernels) than the per-parameter form it measures beside them."""
    cfg = make_config(*ACCELERATOR_PATH)
    results = bench_train(cfg, image_size=64, batch_size=4, iterations=1, device="cpu", variants=("pfadseg",))
    for stage, most in (("student", 0.6), ("seg", 0.7)):
        fewer, per_parameter = results["pfadseg"][stage], results["pfadseg (per-parameter)"][stage]
        assert fewer["ops"] < most * per_parameter["ops"], stage
        assert fewer["kernel_ops"] < most * per_parameter["kernel_ops"], stage
        assert 0 < fewer["kernel_ops"] < fewer["ops"]
