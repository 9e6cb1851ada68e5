"""ADPS training: signed distillation loss (Eq. 7), MultiStep schedule, iterations, one joint step."""

from __future__ import annotations

import contextlib
import math
import warnings

import pytest
import torch

from pfadseg.config import ADPSConfig, ADPSTrainConfig
from pfadseg.models.adps import ADPSNet
from pfadseg.models.teacher import Teacher
from pfadseg.train.adps import adps_iterations, adps_lr, adps_optimizer, adps_step_fn
from pfadseg.train.losses import signed_distillation_loss


def _train_cfg(**changes: object) -> ADPSTrainConfig:
    values: dict[str, object] = {"epochs": 300, "batch_size": 32, "lr": 1e-4, "milestones": [240, 270],
                                 "lr_decay": 0.2, "focal_gamma": 2.0, "seg_weight": 1.0, "synthesis": "draem",
                                 "clean_probability": 0.5, "rotate_probability": 0.3, "rotate_degrees": 90.0}
    return ADPSTrainConfig(**{**values, **changes})  # type: ignore[arg-type]


def _feats(seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(2, c, s, s, generator=gen) for c, s in ((8, 8), (16, 4), (32, 2))]


# --------------------------------------------------------------------------------------------- Eq. 7


@pytest.mark.parametrize("resize", ["bilinear", "maxpool"])
def test_signed_loss_on_identical_features(resize: str) -> None:
    feats = _feats()
    kw = {"target_resize": resize, "clamp": False}
    normal, anomalous = torch.zeros(2, 1, 16, 16), torch.ones(2, 1, 16, 16)
    assert float(signed_distillation_loss(feats, feats, normal, **kw)) == pytest.approx(0.0, abs=1e-5)
    assert float(signed_distillation_loss(feats, feats, anomalous, **kw)) == pytest.approx(3.0, abs=1e-5)


def test_signed_loss_on_opposite_features_and_the_clamp() -> None:
    feats = _feats()
    opposite = [-f for f in feats]
    anomalous = torch.ones(2, 1, 16, 16)
    assert float(signed_distillation_loss(opposite, feats, anomalous, target_resize="bilinear", clamp=False)) == \
        pytest.approx(-3.0, abs=1e-5)
    assert float(signed_distillation_loss(opposite, feats, anomalous, target_resize="bilinear", clamp=True)) == \
        pytest.approx(0.0, abs=1e-5)
    normal = torch.zeros(2, 1, 16, 16)
    assert float(signed_distillation_loss(opposite, feats, normal, target_resize="bilinear", clamp=True)) == \
        pytest.approx(6.0, abs=1e-5)


def test_signed_loss_weights_each_level_by_its_resized_mask() -> None:
    feats = _feats()
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 0, 0] = 1.0  # one pixel: maxpool marks the corner cell of every level, bilinear none
    kw = {"clamp": False}
    assert float(signed_distillation_loss(feats, feats, mask, target_resize="bilinear", **kw)) == \
        pytest.approx(0.0, abs=1e-5)
    expected = 1 / 64 + 1 / 16 + 1 / 4  # identical features: cos = 1 on the marked cell of each level
    assert float(signed_distillation_loss(feats, feats, mask, target_resize="maxpool", **kw)) == \
        pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError, match="target_resize"):
        signed_distillation_loss(feats, feats, mask, target_resize="nearest", **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ schedule


def test_adps_lr_decays_at_the_milestone_epochs() -> None:
    cfg = _train_cfg()
    per_epoch = 7
    assert adps_lr(0, cfg, per_epoch) == adps_lr(240 * per_epoch - 1, cfg, per_epoch) == 1e-4
    assert adps_lr(240 * per_epoch, cfg, per_epoch) == pytest.approx(2e-5)
    assert adps_lr(270 * per_epoch - 1, cfg, per_epoch) == pytest.approx(2e-5)
    assert adps_lr(270 * per_epoch, cfg, per_epoch) == pytest.approx(4e-6)
    assert adps_lr(300 * per_epoch - 1, cfg, per_epoch) == pytest.approx(4e-6)


def test_adps_iterations_round_the_epoch_up() -> None:
    cfg = _train_cfg()
    assert adps_iterations(60, cfg) == (300 * 2, 2)
    assert adps_iterations(64, cfg) == (300 * 2, 2)
    assert adps_iterations(65, cfg) == (300 * 3, 3)
    assert adps_iterations(391, cfg) == (300 * math.ceil(391 / 32), 13)
    with pytest.raises(ValueError):
        adps_iterations(0, cfg)


# ---------------------------------------------------------------------------------------- joint step


class _FakeComposer:
    """Fixed-seed batches with a square anomaly in half of the images."""

    def __init__(self, size: int) -> None:
        self.size, self.gen = size, torch.Generator().manual_seed(0)

    def sample(self, batch_size: int, reuse: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        img = torch.randn(batch_size, 3, self.size, self.size, generator=self.gen)
        mask = torch.zeros(batch_size, 1, self.size, self.size)
        mask[::2, :, 8:40, 16:48] = 1.0
        return {"img_aug": img + mask, "img_origin": img, "mask": mask}


def test_one_step_trains_student_and_psm_and_leaves_the_teacher() -> None:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        teacher = Teacher("random")
    net = ADPSNet(teacher, ADPSConfig(backbone="resnet18", k=2, split_at="input", wmb_detach_student=False,
                                      psm_widths=[16, 8, 8, 4],
                                      target_resize="bilinear", clamp_anomalous_cos=False, score_sigma=4.0))
    cfg = _train_cfg(batch_size=4, lr=1e-3, epochs=3, milestones=[1])
    optimizer = adps_optimizer(net, cfg)
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == \
        {id(p) for p in [*net.student.parameters(), *net.psm.parameters()]}
    before = {k: v.clone() for k, v in net.state_dict().items()}
    step = adps_step_fn(net, optimizer, _FakeComposer(64), cfg, iterations_per_epoch=2, amp=contextlib.nullcontext)
    assert net.student.training and net.psm.training and not net.teacher.training
    losses = step(2)  # first step of epoch 1: past the milestone
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.2)
    assert set(losses) == {"loss", "distill", "focal"} and all(torch.isfinite(v) for v in losses.values())
    assert not any(v.requires_grad for v in losses.values())
    assert float(losses["loss"]) == pytest.approx(float(losses["distill"] + losses["focal"]), rel=1e-6)
    after = net.state_dict()
    for prefix in ("student.", "psm."):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix)), prefix
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("teacher."))
