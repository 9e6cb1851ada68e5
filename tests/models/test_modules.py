"""Module shapes and semantics on hand-made tensors: AFF, SPR, PCAR, RCM, ASPP, BasicBlock."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock as TorchvisionBasicBlock

from pfadseg.config import Config
from pfadseg.models.aff import AFF
from pfadseg.models.aspp import ASPP
from pfadseg.models.blocks import BasicBlock
from pfadseg.models.pa_block import pa_block_parts
from pfadseg.models.pcar import PCAR
from pfadseg.models.rcm import RCA, RCM
from pfadseg.models.spr import SPR


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed))


# --------------------------------------------------------------------------------------------------- AFF


def _force_half_gate(aff: AFF) -> None:
    """Zero the last BN of both MS-CAM branches: local + global = 0, so the gate is sigmoid(0) = 0.5."""
    for branch in (aff.gate.local_att, aff.gate.global_att):
        nn.init.zeros_(branch[-1].weight)
        nn.init.zeros_(branch[-1].bias)


@pytest.mark.parametrize("train", [True, False])
def test_aff_half_gate_is_the_residual_sum(train: bool) -> None:
    x, y = _randn(2, 64, 8, 8, seed=1), _randn(2, 64, 8, 8, seed=2)
    with_two, without = AFF(64, 4, factor_two=True), AFF(64, 4, factor_two=False)
    for aff in (with_two, without):
        _force_half_gate(aff)
        aff.train(train)
    torch.testing.assert_close(with_two(x, y), x + y)
    torch.testing.assert_close(without(x, y), (x + y) / 2)


def test_aff_matches_the_official_formula() -> None:
    aff = AFF(32, 4).eval()
    x, y = _randn(2, 32, 5, 7, seed=3), _randn(2, 32, 5, 7, seed=4)
    w = aff.gate(x + y)
    assert w.shape == (2, 32, 5, 7) and bool(((w > 0) & (w < 1)).all())
    torch.testing.assert_close(aff(x, y), 2 * x * w + 2 * y * (1 - w))


def test_aff_rejects_an_empty_bottleneck() -> None:
    with pytest.raises(ValueError, match="bottleneck"):
        AFF(2, 4)


# --------------------------------------------------------------------------------------------------- SPR


@pytest.mark.parametrize(("channels", "size"), [(64, 64), (256, 16), (64, 1)])
def test_spr_weights_shape_and_range(channels: int, size: int) -> None:
    w = SPR(channels)(_randn(2, channels, size, size))
    assert w.shape == (2, channels, 1, 1)
    assert bool(((w > 0) & (w < 1)).all())


def test_spr_pools_global_then_local_channel_major() -> None:
    spr = SPR(32).eval()
    x = _randn(2, 32, 6, 6, seed=5)
    pooled = [x.mean(dim=(2, 3))]  # B x C
    local = torch.stack([x[:, :, 3 * i:3 * i + 3, 3 * j:3 * j + 3].mean(dim=(2, 3))
                         for i in range(2) for j in range(2)], dim=2)  # B x C x 4, index 2i + j
    pooled.append(local.reshape(2, -1))  # index c * 4 + 2i + j
    z = torch.cat(pooled, dim=1)[..., None, None]
    expected = torch.sigmoid(spr.fc2(torch.relu(spr.fc1(z))))
    torch.testing.assert_close(spr(x), expected)


# -------------------------------------------------------------------------------------------------- PCAR


@pytest.mark.parametrize("branches", ["dilated", "kernels", "plain"])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("softmax", ["branch", "pixel"])
def test_pcar_shape(branches: str, shared: bool, softmax: str) -> None:
    pcar = PCAR(32, branches=branches, shared_spr=shared, softmax=softmax)  # type: ignore[arg-type]
    assert pcar(_randn(2, 32, 8, 8)).shape == (2, 32, 8, 8)
    assert len(pcar.sprs) == (1 if shared else 3)


def test_pcar_branch_weights_sum_to_one_per_channel() -> None:
    """Identical branches: a per-channel convex combination returns the branch map unchanged."""
    pcar = PCAR(32, branches="plain", shared_spr=False, softmax="branch").eval()
    for branch in pcar.branches[1:]:
        branch.load_state_dict(pcar.branches[0].state_dict())
    x = _randn(2, 32, 8, 8, seed=6)
    torch.testing.assert_close(pcar(x), pcar.branches[0](x))


@pytest.mark.parametrize("softmax", ["branch", "pixel"])
def test_pcar_output_is_a_convex_combination(softmax: str) -> None:
    pcar = PCAR(32, branches="dilated", softmax=softmax).eval()  # type: ignore[arg-type]
    x = _randn(2, 32, 8, 8, seed=7)
    out = pcar(x)
    feats = torch.stack([b(x) for b in pcar.branches], dim=1)  # B x 3 x C x H x W
    if softmax == "pixel":
        feats = feats * torch.stack([pcar.sprs[0](feats[:, i]) for i in range(3)], dim=1)
    assert bool((out >= feats.amin(dim=1) - 1e-5).all()) and bool((out <= feats.amax(dim=1) + 1e-5).all())


@pytest.mark.parametrize("softmax", ["branch", "pixel"])
def test_pcar_fewer_kernels_is_the_same_function_and_gradients(softmax: str) -> None:
    """The accelerator path's form (one SPR call on the three branches) equals the per-branch form to rounding."""
    torch.manual_seed(0)
    reference = PCAR(16, softmax=softmax).train()  # type: ignore[arg-type]
    batched = copy.deepcopy(reference)
    batched.fewer_kernels = True
    outputs = []
    for pcar in (reference, batched):
        x = _randn(2, 16, 8, 8, seed=9).requires_grad_(True)
        out = pcar(x)
        (out * _randn(2, 16, 8, 8, seed=10)).sum().backward()
        outputs.append((out, x.grad, [p.grad for p in pcar.parameters()]))
    (out_a, grad_a, params_a), (out_b, grad_b, params_b) = outputs
    torch.testing.assert_close(out_b, out_a)
    torch.testing.assert_close(grad_b, grad_a)
    for a, b in zip(params_a, params_b, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    for bn_a, bn_b in zip(reference.modules(), batched.modules(), strict=True):
        if isinstance(bn_a, nn.BatchNorm2d):
            torch.testing.assert_close(bn_b.running_var, bn_a.running_var)


def test_pcar_branch_convs() -> None:
    convs = [b[0] for b in PCAR(16, branches="dilated").branches]
    expected = [((3, 3), (d, d), (d, d)) for d in (1, 2, 3)]
    assert [(c.kernel_size, c.dilation, c.padding) for c in convs] == expected
    assert all(c.bias is None for c in convs)
    convs = [b[0] for b in PCAR(16, branches="kernels").branches]
    assert [(c.kernel_size[0], c.padding[0], c.dilation[0]) for c in convs] == [(3, 1, 1), (5, 2, 1),
                                                                                (7, 3, 1)]


# --------------------------------------------------------------------------------------------------- RCM


@pytest.mark.parametrize("train", [True, False])
def test_rcm_with_zero_layer_scale_is_the_identity(train: bool) -> None:
    rcm = RCM(64, layer_scale_init=0.0).train(train)
    x = _randn(2, 64, 16, 16, seed=8)
    torch.testing.assert_close(rcm(x), x)


@pytest.mark.parametrize(("channels", "size"), [(256, 64), (256, 16), (64, 16)])
def test_rcm_shape(channels: int, size: int) -> None:
    x = _randn(2, channels, size, size)
    assert RCA(channels)(x).shape == x.shape
    out = RCM(channels, layer_scale_init=1.0)(x)
    assert out.shape == x.shape and not torch.allclose(out, x)


def test_rcm_rejects_even_kernels() -> None:
    with pytest.raises(ValueError, match="odd"):
        RCM(16, square_kernel=2)


def test_rca_strip_convs_are_depthwise_bands() -> None:
    rca = RCA(16, band_kernel=11, square_kernel=3)
    horizontal, vertical = rca.excite[0], rca.excite[3]
    assert (horizontal.kernel_size, vertical.kernel_size) == ((1, 11), (11, 1))
    assert horizontal.groups == vertical.groups == rca.dwconv_hw.groups == 16


# -------------------------------------------------------------------------------------------------- ASPP


def test_aspp_has_a_pool_branch_and_three_dilated_3x3_branches_only() -> None:
    aspp = ASPP(256, 256, (6, 12, 18))
    assert [(b[0].kernel_size, b[0].dilation) for b in aspp.atrous] == [((3, 3), (r, r)) for r in (6, 12, 18)]
    assert isinstance(aspp.pool[0], nn.AdaptiveAvgPool2d) and aspp.pool[1].kernel_size == (1, 1)
    one_by_one = [m for m in aspp.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert one_by_one == [aspp.pool[1]]  # no 1x1 rate-1 branch
    assert aspp.project[0].in_channels == 4 * 256
    assert all(m.bias is None for m in aspp.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("size", [64, 16])
def test_aspp_shape(size: int) -> None:
    assert ASPP(32, 32)(_randn(2, 32, size, size)).shape == (2, 32, size, size)


# -------------------------------------------------------------------------------------------- BasicBlock


@pytest.mark.parametrize(("inplanes", "planes", "stride"), [(64, 64, 1), (64, 128, 2), (448, 256, 1)])
def test_plain_block_is_torchvision_basic_block(inplanes: int, planes: int, stride: int) -> None:
    ours = BasicBlock(inplanes, planes, stride)
    downsample = None
    if ours.downsample is not None:
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
    reference = TorchvisionBasicBlock(inplanes, planes, stride, downsample)
    ours.load_state_dict(reference.state_dict())  # same parameter names and shapes
    x = _randn(2, inplanes, 8, 8, seed=9)
    torch.testing.assert_close(ours(x), reference(x))


def test_pa_block_parts(make_config: Callable[..., Config]) -> None:
    block = BasicBlock(64, 128, 2, parts=pa_block_parts(make_config().model))
    assert isinstance(block.conv2, PCAR) and isinstance(block.aff, AFF)
    assert isinstance(block.bn2, nn.BatchNorm2d)
    assert block(_randn(2, 64, 16, 16)).shape == (2, 128, 8, 8)


def test_pa_block_with_half_gate_is_the_residual_sum(make_config: Callable[..., Config]) -> None:
    parts = pa_block_parts(make_config("model.use_pcar=false").model)
    pa, plain = BasicBlock(32, 64, parts=parts).eval(), BasicBlock(32, 64).eval()
    plain.load_state_dict({k: v for k, v in pa.state_dict().items() if not k.startswith("aff.")})
    _force_half_gate(pa.aff)
    x = _randn(2, 32, 8, 8, seed=10)
    torch.testing.assert_close(pa(x), plain(x))


def test_block_upsample_doubles_before_conv1_and_shortcut() -> None:
    block = BasicBlock(128, 64, upsample=True)
    assert block(_randn(2, 128, 4, 4)).shape == (2, 64, 8, 8)


def test_the_pa_block_parts_follow_the_switches_and_their_settings(make_config: Callable[..., Config]) -> None:
    block = BasicBlock(32, 32, parts=pa_block_parts(make_config("model.use_aff=false", "model.spr.reduction=8",
                                                                 "model.pcar.branches=plain").model))
    assert isinstance(block.conv2, PCAR) and block.aff is None
    assert block.conv2.sprs[0].fc1.out_channels == 32 // 8
    assert all(b[0].dilation == (1, 1) for b in block.conv2.branches), "plain branches"


@pytest.mark.parametrize(("h", "w"), [(64, 64), (8, 16), (2, 2), (7, 9)])
def test_pooling_rewrites_equal_the_adaptive_pools(h: int, w: int) -> None:
    """SPR's, AFF's and RCM's means and average pools compute exactly the adaptive pools they replace (fp32,
    the CPU's layout), and the same up to rounding on channels_last tensors."""
    import torch.nn.functional as F

    from pfadseg.models.aff import GlobalMean
    from pfadseg.models.rcm import axis_means
    from pfadseg.models.spr import quadrant_means

    x = torch.randn(2, 5, h, w, generator=torch.Generator().manual_seed(h * w))
    pairs = [(GlobalMean(), lambda t: F.adaptive_avg_pool2d(t, 1)),
             (axis_means, lambda t: F.adaptive_avg_pool2d(t, (None, 1)) + F.adaptive_avg_pool2d(t, (1, None))),
             (quadrant_means, lambda t: F.adaptive_avg_pool2d(t, 2))]
    for ours, adaptive in pairs:
        assert torch.equal(ours(x), adaptive(x)), ours
        last = x.contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(ours(last), adaptive(last), rtol=1e-6, atol=1e-6)
