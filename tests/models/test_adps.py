"""ADPS networks: patchify/stitch, patch student, WMB, post-segmentation module, detector, builder."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch

from pfadseg.config import ADPSConfig, Config
from pfadseg.models.adps import ADPSNet, build_adps
from pfadseg.models.anomaly_map import cosine_distance_maps, dest_map
from pfadseg.models.detector import ADPSDetector
from pfadseg.models.patchify import PatchStudent, patchify, stitch
from pfadseg.models.psm import PostSegmentation
from pfadseg.models.teacher import Teacher
from pfadseg.models.wmb import weight_mask
from pfadseg.score.maps import score_maps, score_module
from pfadseg.score.rule import ScoreRule

SPLITS = ("input", "stage1", "stage2")


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _quiet_random_teacher(backbone: str = "resnet18") -> Teacher:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Teacher("random", backbone)  # type: ignore[arg-type]


def _adps_cfg(**changes: object) -> ADPSConfig:
    values: dict[str, object] = {"backbone": "resnet18", "k": 2, "split_at": "input", "wmb_detach_student": False,
                                 "psm_widths": [16, 8, 8, 4], "target_resize": "bilinear",
                                 "clamp_anomalous_cos": False, "score_sigma": 4.0}
    return ADPSConfig(**{**values, **changes})  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- patchify


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_stitch_inverts_patchify_exactly(k: int) -> None:
    x = _randn(3, 5, 8 * k, 4 * k)  # non-square maps, odd channel count
    patches = patchify(x, k)
    assert patches.shape == (3 * k * k, 5, 8, 4)
    assert torch.equal(stitch(patches, k), x)
    assert torch.equal(patchify(stitch(patches, k), k), patches)


def test_patchify_orders_patches_row_major_per_image() -> None:
    x = _randn(2, 3, 12, 12)
    patches = patchify(x, 3)
    assert torch.equal(patches[1 * 9 + 1 * 3 + 2], x[1, :, 4:8, 8:12])  # image 1, row 1, column 2
    assert torch.equal(patches[2], x[0, :, 0:4, 8:12])


def test_stitch_accepts_another_per_patch_size_and_checks_counts() -> None:
    assert stitch(_randn(8, 7, 3, 2), 2).shape == (2, 7, 6, 4)
    with pytest.raises(ValueError, match="3 x 3"):
        stitch(_randn(8, 7, 3, 2), 3)
    with pytest.raises(ValueError, match="cannot be cut"):
        patchify(_randn(1, 3, 10, 12), 4)


# --------------------------------------------------------------------------------------- patch student


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("split_at", SPLITS)
def test_patch_student_returns_full_image_levels(k: int, split_at: str) -> None:
    feats = PatchStudent(k, split_at).eval()(_randn(2, 3, 64, 64))  # type: ignore[arg-type]
    assert [tuple(f.shape) for f in feats] == [(2, 64, 16, 16), (2, 128, 8, 8), (2, 256, 4, 4)]


def test_patch_student_at_256_px_with_k_8() -> None:
    student = PatchStudent(8)
    assert not hasattr(student, "layer4")
    with torch.no_grad():
        feats = student.eval()(_randn(1, 3, 256, 256))
    assert [tuple(f.shape) for f in feats] == [(1, 64, 64, 64), (1, 128, 32, 32), (1, 256, 16, 16)]


def test_patch_student_rejects_sizes_that_do_not_split_and_bad_options() -> None:
    with pytest.raises(ValueError, match="multiple of 16 \\* k = 64"):
        PatchStudent(4)(_randn(1, 3, 96, 96))
    with pytest.raises(ValueError, match="split_at"):
        PatchStudent(2, "stage3")  # type: ignore[arg-type]


def _with_live_blocks(student: PatchStudent) -> PatchStudent:
    """Non-zero BN scales, so that every residual branch (3x3 context) contributes."""
    torch.manual_seed(0)
    for m in student.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
    return student


@pytest.mark.parametrize("backbone", ["resnet18", "wide_resnet50_2"])
def test_each_stitched_patch_is_the_student_on_that_crop_alone(backbone: str) -> None:
    student = _with_live_blocks(PatchStudent(2, "input", backbone)).eval()  # type: ignore[arg-type]
    crop = PatchStudent(1, backbone=backbone).eval()  # type: ignore[arg-type]
    crop.load_state_dict(student.state_dict())
    x = _randn(1, 3, 64, 64, seed=1)
    with torch.no_grad():
        feats = student(x)
        for i in range(2):
            for j in range(2):
                alone = crop(x[:, :, 32 * i:32 * (i + 1), 32 * j:32 * (j + 1)])
                for level, (full, part) in enumerate(zip(feats, alone, strict=True)):
                    h, w = part.shape[-2:]
                    patch = full[..., h * i:h * (i + 1), w * j:w * (j + 1)]
                    assert torch.allclose(patch, part, atol=1e-4, rtol=1e-4), level  # WRN values reach ~100


def test_split_before_stage2_keeps_level_one_whole() -> None:
    x = _randn(1, 3, 64, 64)
    with torch.no_grad():
        split = _with_live_blocks(PatchStudent(2, "stage2")).eval()
        whole = PatchStudent(1).eval()
        whole.load_state_dict(split.state_dict())
        a, b = split(x), whole(x)
    assert torch.allclose(a[0], b[0], atol=1e-6), "layer1 runs on the whole image before the cut"
    assert not torch.allclose(a[2], b[2], atol=1e-4), "layer3 runs on patches: borders differ"


def test_patch_student_init_zeroes_the_last_bn_of_every_block() -> None:
    student = PatchStudent(2)
    layers = (student.layer1, student.layer2, student.layer3)
    assert all(int(torch.count_nonzero(block.bn2.weight)) == 0 for layer in layers for block in layer)
    wide = PatchStudent(2, backbone="wide_resnet50_2")
    layers = (wide.layer1, wide.layer2, wide.layer3)
    assert all(int(torch.count_nonzero(block.bn3.weight)) == 0 for layer in layers for block in layer)
    assert not hasattr(wide, "layer4") and not hasattr(wide, "fc")


def test_wide_resnet_student_and_teacher_give_the_same_pyramid() -> None:
    x = _randn(2, 3, 64, 64)
    with torch.no_grad():
        student = PatchStudent(2, "stage1", "wide_resnet50_2").eval()(x)
        teacher = _quiet_random_teacher("wide_resnet50_2")(x)
    expected = [(2, 256, 16, 16), (2, 512, 8, 8), (2, 1024, 4, 4)]
    assert [tuple(f.shape) for f in student] == [tuple(f.shape) for f in teacher] == expected
    with pytest.raises(ValueError, match="backbone"):
        PatchStudent(2, backbone="resnet50")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------- WMB


def test_weight_mask_on_identical_and_orthogonal_features() -> None:
    t = _randn(2, 8, 4, 4)
    c, w = weight_mask(t, t.clone(), detach_student=False)
    assert w.shape == (2, 1, 4, 4) and c.shape == t.shape and c.dtype == w.dtype == torch.float32
    assert torch.allclose(w, torch.ones_like(w), atol=1e-6) and torch.allclose(c, torch.zeros_like(c), atol=1e-5)
    t[:, 4:] = 0.0  # disjoint channel supports: cosine 0
    s = _randn(2, 8, 4, 4, seed=1)
    s[:, :4] = 0.0
    c, w = weight_mask(t, s, detach_student=False)
    assert torch.allclose(w, torch.zeros_like(w), atol=1e-6) and torch.allclose(c, t)


@pytest.mark.parametrize("detach", [False, True])
def test_weight_mask_detach_stops_the_gradient_to_the_student(detach: bool) -> None:
    t = _randn(1, 4, 3, 3)
    s = _randn(1, 4, 3, 3, seed=1).requires_grad_(True)
    c, _ = weight_mask(t, s, detach_student=detach)
    if detach:
        assert not c.requires_grad
    else:
        c.sum().backward()
        assert s.grad is not None and float(s.grad.abs().sum()) > 0


# ------------------------------------------------------------------------------------------------- PSM


def test_psm_gives_a_two_class_softmax_at_the_input_size_with_the_given_widths() -> None:
    psm = PostSegmentation([12, 10, 6, 5])
    feats = [_randn(2, 64, 16, 16), _randn(2, 128, 8, 8), _randn(2, 256, 4, 4)]
    probs = psm(feats)
    assert probs.shape == (2, 2, 64, 64) and probs.dtype == torch.float32
    assert torch.allclose(probs.sum(dim=1), torch.ones(2, 64, 64), atol=1e-6)
    assert (psm.up1.up.in_channels, psm.up1.up.out_channels, psm.up1.conv[0].in_channels) == (256, 12, 12 + 128)
    assert (psm.up2.up.out_channels, psm.up2.conv[0].in_channels) == (10, 10 + 64)
    assert (psm.up3.conv[0].in_channels, psm.up4.conv[3].out_channels) == (6, 5)
    assert (psm.head.in_channels, psm.head.out_channels) == (5, 2)


# --------------------------------------------------------------------------------- network and detector


@pytest.fixture(scope="module")
def net() -> ADPSNet:
    torch.manual_seed(0)
    return ADPSNet(_quiet_random_teacher(), _adps_cfg()).eval()


def test_adps_net_returns_both_pyramids_and_the_mask(net: ADPSNet) -> None:
    with torch.no_grad():
        out = net(_randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in out.teacher_feats] == [tuple(f.shape) for f in out.student_feats]
    assert out.probs.shape == (2, 2, 64, 64)
    assert not any(p.requires_grad for p in net.teacher.parameters())


def test_adps_detector_matches_the_anomaly_detector_interface(net: ADPSNet) -> None:
    x = _randn(2, 3, 64, 64, seed=3)
    rule = ScoreRule(10, sigma=4.0)
    with torch.no_grad():
        seg, score, dest = ADPSDetector(net, score_module(rule)).eval()(x)
        out = net(x)
    assert seg.shape == dest.shape == (2, 1, 64, 64) and seg.dtype == dest.dtype == torch.float32
    np.testing.assert_allclose(score.numpy(), score_maps(rule, seg[:, 0].numpy()), rtol=1e-12)
    assert float(seg.min()) >= 0 and float(seg.max()) <= 1 and torch.equal(seg, out.probs[:, 1:2])
    small = dest_map(cosine_distance_maps(out.student_feats, out.teacher_feats), size=(16, 16))
    assert torch.allclose(torch.nn.functional.interpolate(small, size=(64, 64), mode="bilinear"), dest)


def test_adps_net_on_the_wide_resnet_backbone() -> None:
    torch.manual_seed(0)
    net = ADPSNet(_quiet_random_teacher("wide_resnet50_2"), _adps_cfg(backbone="wide_resnet50_2")).eval()
    assert (net.psm.up1.up.in_channels, net.psm.up1.conv[0].in_channels, net.psm.up2.conv[0].in_channels) == \
        (1024, 16 + 512, 8 + 256)
    with torch.no_grad():
        out = net(_randn(1, 3, 64, 64))
    assert out.probs.shape == (1, 2, 64, 64)
    assert [f.shape[1] for f in out.student_feats] == [256, 512, 1024]


def test_build_adps_is_seeded_by_the_generator(make_config: Callable[..., Config]) -> None:
    model_cfg = make_config("model.teacher_weights=random", "model.arch=adps", "model.adps.k=4").model
    teacher = _quiet_random_teacher()
    a = build_adps(model_cfg, teacher, torch.Generator().manual_seed(5))
    b = build_adps(model_cfg, teacher, torch.Generator().manual_seed(5))
    assert a.student.k == 4 and a.psm.up1.up.out_channels == model_cfg.adps.psm_widths[0]
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
