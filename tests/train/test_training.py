"""Both training stages on the offline dataset: learning, determinism, resume, NaN guard, provenance."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18

from pfadseg.arch.adps import ADPS_FILE
from pfadseg.arch.destseg import SEG_FILE, STUDENT_FILE
from pfadseg.artifacts import load_model_file
from pfadseg.config import Config
from pfadseg.paths import Layout
from pfadseg.pipeline.acquire_images import acquire_images
from pfadseg.pipeline.adps import TRAIN_ADPS
from pfadseg.pipeline.calibrate import CALIBRATE
from pfadseg.pipeline.entry import StageDef
from pfadseg.pipeline.evaluate import EVALUATE
from pfadseg.pipeline.report import collect_runs, provenance
from pfadseg.pipeline.train_seg import TRAIN_SEG
from pfadseg.pipeline.train_student import TRAIN_STUDENT
from pfadseg.predict import load_predictor
from pfadseg.train import loop as loop_module
from pfadseg.train.loop import NonFiniteLossError

RANDOM_TEACHER = "model.teacher_weights=random"
# The plain DeSTSeg networks are half the size of PFADSeg's: loop semantics are tested on them, for speed.
BASELINE = ("model.use_aff=false", "model.use_pcar=false", "model.use_rcm=false")


def _cfg(tiny_config: Callable[..., Config], *overrides: str) -> Config:
    return tiny_config("data.source=synthetic", "data.textures=procedural", RANDOM_TEACHER, *overrides)


def _state(path: Path, fmt: str) -> dict[str, torch.Tensor]:
    return load_model_file(path, fmt)["state_dict"]


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_both_stages_run_and_record_provenance(workspace: Path, tiny_config: Callable[..., Config]) -> None:
    cfg = _cfg(tiny_config, "train.seg.iterations=6")
    TRAIN_STUDENT.invoke(cfg, Layout(), "bottle", 0, progress=False)
    TRAIN_SEG.invoke(cfg, Layout(), "bottle", 0, progress=False)
    meta = load_model_file(Layout().model("bottle", 0, SEG_FILE.name), SEG_FILE.format)["meta"]
    assert meta["teacher"]["weights"] == "random" and "seed" in meta["teacher"]
    assert meta["stage_params"]["model.use_rcm"] is True and meta["device"] == "cpu"
    assert meta["rcm_layer_scale"] > 0 and meta["wall_time_s"] > 0
    # the one-off costs: set-up before the loop, the first 4 steps, then the steady rate of the last 2
    assert meta["setup_s"] > 0 and 0 < meta["warmup_s"] < meta["wall_time_s"] and meta["steady_it_s"] > 0
    student = load_model_file(Layout().model("bottle", 0, STUDENT_FILE.name), STUDENT_FILE.format)["meta"]
    assert student["steady_it_s"] is None, "4 iterations: all of them warm-up"
    assert set(meta["final_losses"]) == {"loss", "focal", "l1"}
    CALIBRATE.invoke(cfg, Layout(), "bottle", 0)
    calibration = json.loads(Layout().calibration("bottle", 0).read_text())["calibration"]
    assert calibration["n_normal"] == calibration["n_anomalous"] == cfg.calibrate.n_samples
    assert 0.0 <= calibration["image_threshold"] <= 1.0 and 0.0 <= calibration["pixel_threshold"] <= 1.0
    assert not Layout().checkpoints("bottle", 0).joinpath("seg.ckpt").exists(), "finished runs leave no checkpoint"
    curve = Path("dvclive/bottle/seed0/seg/plots/metrics/seg/loss.tsv").read_text().splitlines()
    assert curve[0].split("\t")[0] == "step" and len(curve) == 1 + cfg.train.seg.iterations


def test_losses_go_down(workspace: Path, tiny_config: Callable[..., Config]) -> None:
    cfg = _cfg(tiny_config, "train.student.iterations=16", "train.seg.iterations=16", "train.log_every=4",
               "train.checkpoint_every=100")
    TRAIN_STUDENT.invoke(cfg, Layout(), "carpet", 0, progress=False)
    TRAIN_SEG.invoke(cfg, Layout(), "carpet", 0, progress=False)
    for stage in ("student", "seg"):
        rows = Path(f"dvclive/carpet/seed0/{stage}/plots/metrics/{stage}/loss.tsv").read_text().splitlines()[1:]
        values = [float(r.split("\t")[-1]) for r in rows]
        assert values[-1] < values[0], f"{stage} loss did not decrease: {values}"


def test_same_seed_gives_identical_weights(workspace: Path, tiny_config: Callable[..., Config]) -> None:
    cfg = _cfg(tiny_config, *BASELINE, "train.student.iterations=3")
    TRAIN_STUDENT.invoke(cfg, Layout(), "bottle", 0, progress=False)
    first = _state(Layout().model("bottle", 0, STUDENT_FILE.name), STUDENT_FILE.format)
    TRAIN_STUDENT.invoke(cfg, Layout(), "bottle", 0, progress=False)
    assert _equal(first, _state(Layout().model("bottle", 0, STUDENT_FILE.name), STUDENT_FILE.format))
    other = _cfg(tiny_config, *BASELINE, "train.student.iterations=3", "seeds=[0,1]")
    TRAIN_STUDENT.invoke(other, Layout(), "bottle", 1, progress=False)
    assert not _equal(first, _state(Layout().model("bottle", 1, STUDENT_FILE.name), STUDENT_FILE.format))


def test_interrupted_run_resumes_to_the_same_weights(
    workspace: Path, tiny_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _cfg(tiny_config, *BASELINE, "train.student.iterations=5", "train.checkpoint_every=2")
    TRAIN_STUDENT.invoke(cfg, Layout(), "bottle", 0, progress=False)
    uninterrupted = _state(Layout().model("bottle", 0, STUDENT_FILE.name), STUDENT_FILE.format)
    Layout().model("bottle", 0, STUDENT_FILE.name).unlink()

    _interrupt_then_resume(cfg, monkeypatch)
    assert _equal(uninterrupted, _state(Layout().model("bottle", 0, STUDENT_FILE.name), STUDENT_FILE.format))


def _interrupt_then_resume(cfg: Config, monkeypatch: pytest.MonkeyPatch, stage: StageDef = TRAIN_STUDENT,
                           file: str = "student.pt") -> None:
    """Run a training stage of bottle with a crash at step 3 (checkpoint at 2), then rerun it to the end."""
    original_run = loop_module.TrainLoop.run

    def crash_at_step_3(self: loop_module.TrainLoop, step_fn: Callable[[int], dict]) -> object:
        def failing(step: int) -> dict:
            if step == 3:
                raise KeyboardInterrupt
            return step_fn(step)

        return original_run(self, failing)

    monkeypatch.setattr(loop_module.TrainLoop, "run", crash_at_step_3)
    path = Layout().model("bottle", 0, file)
    with pytest.raises(KeyboardInterrupt):
        stage.invoke(cfg, Layout(), "bottle", 0, progress=False)
    checkpoint = Layout().checkpoints("bottle", 0) / file.replace(".pt", ".ckpt")
    assert torch.load(checkpoint, weights_only=True)["step"] == 2
    assert not path.exists(), "an interrupted run writes no model file"

    monkeypatch.setattr(loop_module.TrainLoop, "run", original_run)
    stage.invoke(cfg, Layout(), "bottle", 0, progress=False)
    assert torch.load(path, weights_only=True)["meta"]["resumed_from"] == 2


# 8 training images at batch 4: 2 iterations per epoch, 6 in all, the lr decayed after epoch 1.
ADPS = ("model.arch=adps", "model.adps.k=2", "train.adps.epochs=3", "train.adps.milestones=[1]",
        "train.adps.batch_size=4")


def test_adps_trains_in_one_stage_resumes_exactly_and_evaluates(
    workspace: Path, tiny_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _cfg(tiny_config, *ADPS)
    path = Layout().model("bottle", 0, ADPS_FILE.name)
    TRAIN_ADPS.invoke(cfg, Layout(), "bottle", 0, progress=False)
    content = load_model_file(path, ADPS_FILE.format)
    assert content["meta"]["config"]["model"]["arch"] == "adps"
    assert (content["meta"]["iterations"], content["meta"]["iterations_per_epoch"]) == (6, 2)
    assert {k.split(".")[0] for k in content["state_dict"]} == {"student", "psm"}, "the teacher is not stored"
    uninterrupted = content["state_dict"]
    path.unlink()
    _interrupt_then_resume(cfg, monkeypatch, TRAIN_ADPS, ADPS_FILE.name)
    assert _equal(uninterrupted, _state(path, ADPS_FILE.format))

    CALIBRATE.invoke(cfg, Layout(), "bottle", 0)
    calibration = json.loads(Layout().calibration("bottle", 0).read_text())["calibration"]
    assert calibration["image_score"].startswith("max of the Gaussian")
    EVALUATE.invoke(cfg, Layout(), "bottle", 0)
    metrics = json.loads(Layout().metrics("bottle", 0).read_text())
    assert metrics["variant"] == "adps"
    assert metrics["seg"]["image_score"] == "max of the Gaussian-smoothed map (sigma 4)"
    assert 0.0 <= metrics["seg"]["pixel_ap"] <= 1.0
    with pytest.raises(ValueError, match=r"a model\.arch=adps run, but params\.yaml gives model\.arch=pfadseg"):
        EVALUATE.invoke(_cfg(tiny_config), Layout(), "bottle", 0)
    with pytest.raises(ValueError, match=r"stage train_seg belongs to model\.arch=pfadseg.*pfadseg graph"):
        TRAIN_SEG.invoke(cfg, Layout(), "bottle", 0, progress=False)


def test_adps_on_the_wide_resnet_backbone_trains_calibrates_and_predicts(
    workspace: Path, tiny_config: Callable[..., Config]
) -> None:
    cfg = _cfg(tiny_config, *ADPS, "train.adps.epochs=1", "train.adps.milestones=[]",
               "model.adps.backbone=wide_resnet50_2")
    TRAIN_ADPS.invoke(cfg, Layout(), "bottle", 0, progress=False)
    content = load_model_file(Layout().model("bottle", 0, ADPS_FILE.name), ADPS_FILE.format)
    assert content["state_dict"]["student.layer3.0.conv3.weight"].shape[0] == 1024
    CALIBRATE.invoke(cfg, Layout(), "bottle", 0)
    predictor = load_predictor(Layout().run_dir("models", "bottle", 0), device="cpu")
    assert predictor.run.arch.teacher_backbone(predictor.config) == "wide_resnet50_2"
    assert predictor.detector.net.teacher.layer3[0].conv3.out_channels == 1024


def test_checkpoint_of_other_settings_is_not_resumed(workspace: Path, tiny_config: Callable[..., Config]) -> None:
    cfg = _cfg(tiny_config, *BASELINE, "train.student.iterations=3")
    checkpoint = Layout().checkpoints("bottle", 0) / "student.ckpt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"format": loop_module.CHECKPOINT_FORMAT, "fingerprint": "other", "step": 2}, checkpoint)
    TRAIN_STUDENT.invoke(cfg, Layout(), "bottle", 0, progress=False)
    student = load_model_file(Layout().model("bottle", 0, STUDENT_FILE.name), STUDENT_FILE.format)
    assert student["meta"]["resumed_from"] == 0


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    workspace: Path, tiny_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pfadseg.train.student as student_module

    real_loss = student_module.cosine_distillation_loss
    calls = {"n": 0}

    def poisoned(*args: object, **kwargs: object) -> torch.Tensor:
        calls["n"] += 1
        loss = real_loss(*args, **kwargs)  # type: ignore[arg-type]
        return loss * float("nan") if calls["n"] == 4 else loss

    monkeypatch.setattr(student_module, "cosine_distillation_loss", poisoned)
    cfg = _cfg(tiny_config, *BASELINE, "train.student.iterations=6", "train.checkpoint_every=2",
               "train.log_every=1")
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 3; the last good checkpoint .* is kept"):
        TRAIN_STUDENT.invoke(cfg, Layout(), "bottle", 0, progress=False)
    checkpoint = torch.load(Layout().checkpoints("bottle", 0) / "student.ckpt", weights_only=True)
    assert checkpoint["step"] == 2
    assert all(torch.isfinite(v).all() for v in checkpoint["modules"]["student"].values() if v.is_floating_point())
    assert not Layout().model("bottle", 0, STUDENT_FILE.name).exists()


def test_seg_stage_refuses_a_student_of_another_teacher(workspace: Path, tiny_config: Callable[..., Config]) -> None:
    cfg = _cfg(tiny_config, *BASELINE)
    TRAIN_STUDENT.invoke(cfg, Layout(), "bottle", 0, progress=False)
    other_teacher = workspace / "teacher.pt"
    torch.save(resnet18(weights=None).state_dict(), other_teacher)
    with pytest.raises(ValueError, match="trained with teacher"):
        TRAIN_SEG.invoke(_cfg(tiny_config, *BASELINE, f"model.teacher_weights={other_teacher}"), Layout(), "bottle", 0,
                      progress=False)


def test_folder_without_masks_skips_pixel_metrics(
    workspace: Path, tiny_config: Callable[..., Config], tmp_path_factory: pytest.TempPathFactory
) -> None:
    cfg = _cfg(tiny_config, *BASELINE)
    TRAIN_STUDENT.invoke(cfg, Layout(), "bottle", 0, progress=False)
    TRAIN_SEG.invoke(cfg, Layout(), "bottle", 0, progress=False)
    mine = tmp_path_factory.mktemp("mine")
    shutil.copytree(Layout().images / "bottle", mine / "bottle", ignore=shutil.ignore_patterns("ground_truth"))
    folder_cfg = _cfg(tiny_config, *BASELINE, "data.source=folder", f"data.root={mine}", "data.categories=[bottle]")
    acquire_images(folder_cfg, Layout(), progress=False)
    EVALUATE.invoke(folder_cfg, Layout(), "bottle", 0)
    metrics = json.loads(Layout().metrics("bottle", 0).read_text())
    assert metrics["pixel_level"] is False and metrics["n_anomalous"] == 4
    assert metrics["seg"]["pixel_metrics"].startswith("skipped") and "pixel_ap" not in metrics["seg"]
    assert 0.0 <= metrics["seg"]["image_auroc"] <= 1.0
    prov = provenance(folder_cfg, Layout(), collect_runs(folder_cfg, Layout()))
    assert any("Pixel metrics skipped" in w and "bottle (4 of 4 defective test images have no ground-truth mask)" in w
               for w in prov.warnings)
    assert Layout().plots("bottle", 0).is_dir()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_both_stages_run_on_cuda_with_bf16_autocast(workspace: Path, tiny_config: Callable[..., Config]) -> None:
    cfg = _cfg(tiny_config, "train.device=cuda", "train.amp=true", "train.channels_last=true")
    TRAIN_STUDENT.invoke(cfg, Layout(), "bottle", 0, progress=False)
    TRAIN_SEG.invoke(cfg, Layout(), "bottle", 0, progress=False)
    meta = load_model_file(Layout().model("bottle", 0, SEG_FILE.name), SEG_FILE.format)["meta"]
    assert meta["device"].startswith("cuda")
    assert all(torch.isfinite(torch.tensor(v)) for v in meta["final_losses"].values())
    EVALUATE.invoke(cfg, Layout(), "bottle", 0)
    assert json.loads(Layout().metrics("bottle", 0).read_text())["device"].startswith("cuda")
