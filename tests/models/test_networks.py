"""Teacher, student, segmentation net, anomaly maps: weights, shapes, switches, gradients, state dicts."""

from __future__ import annotations

import copy
import hashlib
import itertools
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18

from pfadseg.arch.adps import ADPS
from pfadseg.arch.destseg import DESTSEG
from pfadseg.bench.models import bench_models, count_parameters
from pfadseg.config import Config, ConfigError, ModelConfig
from pfadseg.models.anomaly_map import cosine_distance_maps, dest_map, l2_normalize, seg_input
from pfadseg.models.fold import fold_batchnorm
from pfadseg.models.segnet import SegNet, build_segnet
from pfadseg.models.student import Student, build_student
from pfadseg.models.teacher import Teacher, TeacherWeightsError, build_teacher, imagenet_weights_file, teacher_identity

LEVELS = [(64, 4), (128, 8), (256, 16)]  # (channels, stride) of the three matched levels


@pytest.fixture(scope="module")
def teacher() -> Teacher:
    torch.manual_seed(0)
    return Teacher("random")


def _images(size: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _model_cfg(make_config: Callable[..., Config], *overrides: str) -> ModelConfig:
    return make_config("model.teacher_weights=random", *overrides).model


# ------------------------------------------------------------------------------------------------ teacher


def test_random_teacher_warns_once_and_records_its_identity(caplog: pytest.LogCaptureFixture) -> None:
    with warnings.catch_warnings(record=True) as python_warnings, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        t = Teacher("random")
    assert [r.message for r in python_warnings] == [], "one channel only: the log (a stage printed it twice)"
    assert [r.getMessage() for r in caplog.records if "RANDOM" in r.getMessage()] == [
        "teacher uses RANDOM weights (model.teacher_weights: random): anomaly maps are meaningless beyond smoke "
        "tests; set model.teacher_weights: imagenet for real runs"]
    assert t.identity == {"name": "random", "file": None, "sha256": "random"}
    assert teacher_identity("random")["sha256"] == "random"


def test_imagenet_teacher_without_the_hub_file_names_it(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    expected = tmp_path / "checkpoints" / "resnet18-f37072fd.pth"
    assert imagenet_weights_file() == expected
    with pytest.raises(TeacherWeightsError, match=r"resnet18-f37072fd\.pth") as info:
        Teacher("imagenet")
    assert str(expected) in str(info.value) and "teacher_weights: random" in str(info.value)


def test_imagenet_teacher_refuses_a_corrupt_hub_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    imagenet_weights_file().parent.mkdir(parents=True)
    imagenet_weights_file().write_bytes(b"not the weights")
    with pytest.raises(TeacherWeightsError, match="corrupt"):
        Teacher("imagenet")


def test_teacher_loads_a_state_dict_path(tmp_path: Path) -> None:
    torch.manual_seed(1)
    reference = resnet18().eval()
    path = tmp_path / "r18.pt"
    torch.save(reference.state_dict(), path)  # a full ResNet-18: layer4 and fc are ignored
    t = Teacher(str(path))
    assert t.identity["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    torch.testing.assert_close(t.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)
    x = _images(64)
    with torch.no_grad():
        expected = reference.layer1(reference.maxpool(reference.relu(reference.bn1(reference.conv1(x)))))
    torch.testing.assert_close(t(x)[0], expected)
    torch.save(t.state_dict(), tmp_path / "teacher.pt")  # the teacher's own state dict loads too
    Teacher(str(tmp_path / "teacher.pt"))


def test_wide_resnet_teacher_names_its_own_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert imagenet_weights_file("wide_resnet50_2").name == "wide_resnet50_2-95faca4d.pth"
    with pytest.raises(TeacherWeightsError, match=r"wide_resnet50_2 IMAGENET1K_V1 file wide_resnet50_2-95faca4d\.pth"):
        Teacher("imagenet", "wide_resnet50_2")
    path = tmp_path / "r18.pt"
    torch.save(resnet18().state_dict(), path)
    with pytest.raises(TeacherWeightsError, match="does not fit a torchvision wide_resnet50_2"):
        Teacher(str(path), "wide_resnet50_2")
    assert teacher_identity("random", "wide_resnet50_2")["name"] == "random wide_resnet50_2"


def test_teacher_backbone_follows_the_architecture(make_config: Callable[..., Config]) -> None:
    wide = "model.adps.backbone=wide_resnet50_2"
    assert DESTSEG.teacher_backbone(make_config(wide)) == "resnet18"  # PFADSeg/DeSTSeg: always the protocol's
    assert ADPS.teacher_backbone(make_config(wide, "model.arch=adps")) == "wide_resnet50_2"
    with pytest.raises(ConfigError, match=r"model\.adps\.backbone"):
        make_config("model.adps.backbone=resnet50")


def test_teacher_refuses_missing_and_incompatible_files(tmp_path: Path) -> None:
    with pytest.raises(TeacherWeightsError, match="not found"):
        Teacher(str(tmp_path / "missing.pt"))
    bad = tmp_path / "bad.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(TeacherWeightsError, match="does not fit"):
        Teacher(str(bad))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(TeacherWeightsError, match="not a loadable"):
        Teacher(str(tmp_path / "junk.pt"))
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(TeacherWeightsError, match=r"not a loadable state dict \(the file is empty \(0 bytes\)"):
        Teacher(str(tmp_path / "empty.pt"))


def test_teacher_is_frozen_in_eval_with_detached_outputs(teacher: Teacher) -> None:
    teacher.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    x = _images(64).requires_grad_(True)
    outs = teacher(x)
    assert [tuple(o.shape) for o in outs] == [(2, c, 64 // s, 64 // s) for c, s in LEVELS]
    assert not any(o.requires_grad for o in outs)


def test_build_teacher_reads_model_teacher_weights(make_config: Callable[..., Config],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        build_teacher(_model_cfg(make_config).teacher_weights, "resnet18")
    assert "RANDOM" in caplog.text


# ------------------------------------------------------------------------------------------------- shapes


def test_shapes_at_256_on_meta(make_config: Callable[..., Config]) -> None:
    for overrides in [("model.use_aff=false", "model.use_pcar=false", "model.use_rcm=false"), ()]:
        with torch.device("meta"):
            cfg = _model_cfg(make_config, *overrides)
            t, s, g = Teacher("random"), build_student(cfg), build_segnet(cfg)
            x = torch.empty(2, 3, 256, 256)
            tf, sf = t(x), s(x)
            feats = s.encoder(x)
            seg = g(seg_input(sf, tf))
            dest = dest_map(cosine_distance_maps(sf, tf), tf[0].shape[-2:])
        assert [tuple(f.shape) for f in feats] == [(2, c, 256 // st, 256 // st)
                                                    for c, st in [*LEVELS, (512, 32)]]
        for f in (tf, sf):
            assert [tuple(o.shape) for o in f] == [(2, c, 256 // st, 256 // st) for c, st in LEVELS]
        assert tuple(seg_input(sf, tf).shape) == (2, 448, 64, 64)
        assert tuple(seg.shape) == (2, 1, 64, 64) and tuple(dest.shape) == (2, 1, 64, 64)


# --------------------------------------------------------------------------------- switches and gradients


def _forward_backward(teacher: Teacher, student: Student, segnet: SegNet, size: int = 64) -> torch.Tensor:
    student.train()
    segnet.train()
    x = _images(size)
    tf, sf = teacher(x), student(x)
    assert [tuple(o.shape) for o in sf] == [(2, c, size // s, size // s) for c, s in LEVELS]
    seg = segnet(seg_input(sf, tf))
    assert tuple(seg.shape) == (2, 1, size // 4, size // 4) and seg.dtype == torch.float32
    assert bool(((seg >= 0) & (seg <= 1)).all())
    loss = seg.mean() + sum(d.mean() for d in cosine_distance_maps(sf, tf))
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    for net in (student, segnet):
        grads = [p.grad for p in net.parameters()]
        assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
        assert any(bool(g.abs().sum() > 0) for g in grads)
    return seg


@pytest.fixture(scope="module")
def students() -> dict[tuple[bool, bool], Student]:
    """Students by (use_aff, use_pcar), built once per module (use_rcm does not change the student)."""
    return {}


@pytest.mark.parametrize(("aff", "pcar", "rcm"), list(itertools.product([False, True], repeat=3)))
def test_every_switch_combination_runs_forward_and_backward(
        make_config: Callable[..., Config], teacher: Teacher, students: dict[tuple[bool, bool], Student],
        aff: bool, pcar: bool, rcm: bool) -> None:
    cfg = _model_cfg(make_config, f"model.use_aff={aff}", f"model.use_pcar={pcar}", f"model.use_rcm={rcm}")
    if (aff, pcar) not in students:
        students[aff, pcar] = build_student(cfg)
    student = students[aff, pcar]
    student.zero_grad(set_to_none=True)
    segnet = build_segnet(cfg)
    on = [n for n, flag in (("aff", aff), ("pcar", pcar), ("rcm", rcm)) if flag]
    assert DESTSEG.variant(make_config(f"model.use_aff={aff}", f"model.use_pcar={pcar}", f"model.use_rcm={rcm}")) \
        == ("+".join(on) or "destseg")
    _forward_backward(teacher, student, segnet)
    assert (segnet.rcm_layer_scale() is not None) == rcm


@pytest.mark.parametrize("overrides", [
    ("model.pcar.branches=kernels",),
    ("model.pcar.branches=plain",),
    ("model.pcar.shared_spr=false",),
    ("model.pcar.softmax=pixel",),
    ("model.aff.factor_two=false",),
])
def test_block_options_build_and_run(make_config: Callable[..., Config], overrides: tuple[str, ...]) -> None:
    """The student's blocks are the segnet's: the student is built on meta, the segnet runs for real."""
    cfg = _model_cfg(make_config, *overrides)
    with torch.device("meta"):
        student = build_student(cfg)
        assert [tuple(f.shape) for f in student(torch.empty(2, 3, 64, 64))] == [(2, c, 64 // s, 64 // s)
                                                                                 for c, s in LEVELS]
    segnet = build_segnet(cfg).train()
    seg = segnet(torch.randn(2, 448, 16, 16, generator=torch.Generator().manual_seed(0)))
    assert tuple(seg.shape) == (2, 1, 16, 16)
    seg.mean().backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in segnet.parameters())


def test_in_block_decoder_runs(make_config: Callable[..., Config], teacher: Teacher) -> None:
    cfg = _model_cfg(make_config, "model.decoder_upsample=in_block", "model.use_pcar=false")
    _forward_backward(teacher, build_student(cfg), build_segnet(cfg))


def test_in_block_upsampling_equals_between_stages(make_config: Callable[..., Config]) -> None:
    """Same weights: doubling inside the first block = interpolating to the encoder sizes (H % 32 == 0)."""
    between = build_student(_model_cfg(make_config, "model.use_pcar=false")).eval()
    in_block = build_student(_model_cfg(make_config, "model.use_pcar=false",
                                        "model.decoder_upsample=in_block"))
    in_block.load_state_dict(between.state_dict())
    x = _images(64)
    with torch.no_grad():
        for a, b in zip(between(x), in_block.eval()(x), strict=True):
            torch.testing.assert_close(a, b)


def test_student_init_follows_timm_and_destseg(make_config: Callable[..., Config]) -> None:
    student = build_student(_model_cfg(make_config))
    enc_blocks = [b for layer in (student.encoder.layer1, student.encoder.layer4) for b in layer]
    assert all(bool((b.bn2.weight == 0).all()) for b in enc_blocks)  # timm zero_init_last
    assert bool((student.encoder.bn1.weight == 1).all())
    assert all(bool((b.bn2.weight == 1).all()) for b in student.decoder.layer1)  # no zero-init in the decoder
    std = student.decoder.layer4[0].conv1.weight.std().item()
    assert abs(std - (2 / (512 * 9)) ** 0.5) < 2e-3  # Kaiming normal fan_out


def test_generator_makes_builds_reproducible_without_touching_the_global_rng(
        make_config: Callable[..., Config]) -> None:
    cfg = _model_cfg(make_config, "model.use_pcar=false")
    state = torch.get_rng_state()
    a = build_segnet(cfg, torch.Generator().manual_seed(3))
    b = build_segnet(cfg, torch.Generator().manual_seed(3))
    c = build_segnet(cfg, torch.Generator().manual_seed(4))
    assert torch.equal(torch.get_rng_state(), state)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert not torch.equal(a.head[-1].weight, c.head[-1].weight)


# -------------------------------------------------------------------------------------- state dicts, groups


def test_state_dicts_round_trip_with_weights_only(make_config: Callable[..., Config], tmp_path: Path) -> None:
    cfg = _model_cfg(make_config)
    x = _images(64)
    for build in (build_student, build_segnet):
        net = build(cfg, torch.Generator().manual_seed(0)).eval()
        torch.save(net.state_dict(), tmp_path / "net.pt")
        fresh = build(cfg, torch.Generator().manual_seed(1)).eval()
        fresh.load_state_dict(torch.load(tmp_path / "net.pt", weights_only=True))
        inp = x if build is build_student else torch.randn(2, 448, 16, 16)
        with torch.no_grad():
            out, out_fresh = net(inp), fresh(inp)
        if isinstance(out, torch.Tensor):
            out, out_fresh = (out,), (out_fresh,)
        for a, b in zip(out, out_fresh, strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("rcm", [False, True])
def test_segnet_param_groups_and_layer_scale(make_config: Callable[..., Config], rcm: bool) -> None:
    segnet = build_segnet(_model_cfg(make_config, f"model.use_rcm={rcm}"))
    groups = segnet.param_groups(lr_res=0.1, lr_head=0.01)
    assert [(g["name"], g["lr"]) for g in groups] == [("res", 0.1), ("head", 0.01)]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in segnet.parameters()}
    optimizer = torch.optim.SGD(groups, lr=0.001, momentum=0.9, weight_decay=1e-4)
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.01]
    scale = segnet.rcm_layer_scale()
    assert scale == pytest.approx(1e-6) if rcm else scale is None
    assert sum(p.numel() for g in groups for p in g["params"]) == count_parameters(segnet)


# ------------------------------------------------------------------------------------------- anomaly maps


def test_anomaly_maps() -> None:
    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, c, 64 // s, 64 // s, generator=gen) for c, s in LEVELS]
    unit = l2_normalize(feats[0])
    torch.testing.assert_close(unit.norm(dim=1), torch.ones(2, 16, 16))
    same = cosine_distance_maps(feats, feats)
    opposite = cosine_distance_maps(feats, [-f for f in feats])
    assert [tuple(m.shape) for m in same] == [(2, 1, 64 // s, 64 // s) for _, s in LEVELS]
    for m0, m2 in zip(same, opposite, strict=True):
        torch.testing.assert_close(m0, torch.zeros_like(m0), atol=1e-6, rtol=0)
        torch.testing.assert_close(m2, torch.full_like(m2, 2.0))
    maps = [torch.full((2, 1, 16 // k, 16 // k), float(v)) for k, v in ((1, 2), (2, 3), (4, 0.5))]
    torch.testing.assert_close(dest_map(maps, 16), torch.full((2, 1, 16, 16), 3.0))
    assert dest_map(maps, (16, 16)).shape == (2, 1, 16, 16)
    x = seg_input(feats, feats)  # -(s_hat * t_hat) with s = t: minus the squared unit vectors
    assert tuple(x.shape) == (2, 448, 16, 16)
    torch.testing.assert_close(x[:, :64].sum(dim=1), -torch.ones(2, 16, 16))


def test_anomaly_maps_upcast_and_have_finite_gradients_at_zero_features() -> None:
    s = torch.zeros(1, 64, 4, 4, dtype=torch.bfloat16, requires_grad=True)
    d = cosine_distance_maps([s], [torch.ones(1, 64, 4, 4)])[0]
    assert d.dtype == torch.float32
    d.sum().backward()
    assert bool(torch.isfinite(s.grad).all())


def test_bench_models_reports_both_variants(make_config: Callable[..., Config]) -> None:
    lines: list[str] = []
    result = bench_models(make_config(), image_size=32, batch_size=2, device="cpu", repeats=1,
                          echo=lines.append)
    assert result["destseg"]["student"] == 24_665_024 and result["pfadseg"]["student"] == 51_703_344
    assert result["pfadseg"]["gflops_total"] > 0 and result["destseg"]["ms_batch_n"] > 0
    assert any(line.startswith("pfadseg / destseg") for line in lines)


def _with_running_statistics(net: torch.nn.Module) -> torch.nn.Module:
    """``net`` in eval mode, its BatchNorms holding statistics of their own (as trained networks do)."""
    generator = torch.Generator().manual_seed(3)
    for bn in net.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.running_mean.copy_(torch.rand(bn.num_features, generator=generator) - 0.5)
            bn.running_var.copy_(torch.rand(bn.num_features, generator=generator) + 0.5)
    return net.eval()


@pytest.mark.parametrize("network", ["teacher", "student", "student+aff+pcar"])
def test_batchnorm_folds_into_real_networks_to_rounding(
        make_config: Callable[..., Config], teacher: Teacher, network: str) -> None:
    """What the accelerator path runs for frozen networks (pfadseg.device.prepare_frozen): in fp32 the folded
    network is as close to the fp64 network as the unfolded one (folding rounds the weights once more)."""
    on = network != "student"
    net = copy.deepcopy(teacher) if network == "teacher" else build_student(
        _model_cfg(make_config, f"model.use_aff={on}", f"model.use_pcar={on}"))
    net = _with_running_statistics(net)
    exact = copy.deepcopy(net).double()(_images(64).double())
    unfolded = net(_images(64))
    batchnorms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    fold_batchnorm(net)
    left = sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert left < batchnorms // 2, (left, batchnorms)
    for folded, plain, truth in zip(net(_images(64)), unfolded, exact, strict=True):
        error = (folded.double() - truth).norm() / truth.norm()
        assert error < 2 * (plain.double() - truth).norm() / truth.norm() + 1e-7


def test_batchnorm_folds_only_in_eval_mode(make_config: Callable[..., Config]) -> None:
    with pytest.raises(ValueError, match="training mode"):
        fold_batchnorm(build_student(_model_cfg(make_config)).train())
