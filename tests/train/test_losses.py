"""Losses against their definitions (DeSTSeg's model/losses.py and train.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pfadseg.train.losses import cosine_distillation_loss, focal_loss, l1_loss, seg_target


def test_focal_loss_equals_the_bce_definition_and_stays_finite_at_saturation() -> None:
    probs = torch.tensor([0.0, 1.0, 0.3, 0.999, 0.02, 0.5], requires_grad=True)
    target = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 1.0])
    p_t = probs * target + (1 - probs) * (1 - target)
    reference = ((1 - p_t) ** 4 * F.binary_cross_entropy(probs, target, reduction="none")).mean()
    loss = focal_loss(probs, target, gamma=4.0)
    assert torch.allclose(loss, reference)
    loss.backward()
    assert torch.isfinite(probs.grad).all()
    assert torch.isnan(focal_loss(torch.tensor([float("nan")]), torch.tensor([1.0]), 4.0)), "NaN must reach the guard"


def test_cosine_loss_sums_or_averages_over_the_batch() -> None:
    gen = torch.Generator().manual_seed(0)
    student = [torch.randn(4, c, s, s, generator=gen) for c, s in ((8, 8), (16, 4), (32, 2))]
    teacher = [torch.randn(4, c, s, s, generator=gen) for c, s in ((8, 8), (16, 4), (32, 2))]
    per_level = [(1 - F.cosine_similarity(s, t, dim=1)).mean(dim=(1, 2)) for s, t in zip(student, teacher, strict=True)]
    expected_sum = sum(level.sum() for level in per_level)
    assert torch.allclose(cosine_distillation_loss(student, teacher, "sum"), expected_sum, atol=1e-5)
    assert torch.allclose(cosine_distillation_loss(student, teacher, "mean"), expected_sum / 4, atol=1e-5)
    assert float(cosine_distillation_loss(teacher, teacher, "sum")) < 1e-5


def test_seg_target_marks_a_cell_when_two_central_pixels_are_set() -> None:
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, 1, 1] = mask[0, 0, 2, 1] = 1  # two of the central 2 x 2 pixels of the first 4 x 4 block
    mask[0, 0, 5, 5] = 1  # one of the central pixels of the last block: 0.25, below 0.5
    assert seg_target(mask, (2, 2)).flatten().tolist() == [1.0, 0.0, 0.0, 0.0]
    assert float(l1_loss(torch.full((1, 1, 2, 2), 0.25), seg_target(mask, (2, 2)))) == 0.375
