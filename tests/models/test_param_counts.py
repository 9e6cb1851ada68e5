"""Parameter counts: AFF, SPR, RCM as their official code, PCAR as we read it, whole networks; on the meta device."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from pfadseg.bench.models import count_parameters
from pfadseg.config import Config
from pfadseg.models.aff import AFF
from pfadseg.models.blocks import BasicBlock
from pfadseg.models.pa_block import pa_block_parts
from pfadseg.models.pcar import PCAR
from pfadseg.models.rcm import RCM
from pfadseg.models.segnet import build_segnet
from pfadseg.models.spr import SPR
from pfadseg.models.student import build_student

PLAIN = ("model.use_aff=false", "model.use_pcar=false", "model.use_rcm=false")


def meta_count(factory: Callable[[], nn.Module]) -> int:
    with torch.device("meta"):
        return count_parameters(factory())


@pytest.mark.parametrize(("channels", "reduction", "expected"), [
    (64, 4, 4_576), (128, 4, 17_344), (256, 4, 67_456), (512, 4, 265_984), (64, 16, 1_432)])
def test_aff(channels: int, reduction: int, expected: int) -> None:
    assert meta_count(lambda: AFF(channels, reduction)) == expected


@pytest.mark.parametrize(("channels", "expected"), [(64, 1_604), (128, 6_280), (256, 24_848), (512, 98_848)])
def test_spr(channels: int, expected: int) -> None:
    assert meta_count(lambda: SPR(channels, 16)) == expected


@pytest.mark.parametrize(("channels", "band", "expected"),
                         [(64, 11, 19_072), (128, 11, 70_912), (256, 11, 272_896), (448, 11, 821_632),
                          (512, 11, 1_070_080), (64, 9, 18_816), (256, 9, 271_872)])
def test_rcm(channels: int, band: int, expected: int) -> None:
    assert meta_count(lambda: RCM(channels, band_kernel=band, square_kernel=3, mlp_ratio=2)) == expected


@pytest.mark.parametrize(("channels", "branches", "shared", "expected"), [
    (64, "dilated", True, 112_580), (128, "dilated", True, 449_416), (256, "dilated", True, 1_795_856),
    (512, "dilated", True, 7_179_808), (64, "dilated", False, 115_788), (256, "dilated", False, 1_845_552),
    (64, "kernels", True, 341_956), (256, "kernels", True, 5_465_872), (64, "plain", True, 112_580),
])
def test_pcar(channels: int, branches: str, shared: bool, expected: int) -> None:
    assert meta_count(lambda: PCAR(channels, branches=branches, shared_spr=shared)) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("channels", "pa", "plain"), [
    (64, 154_276, 73_984), (128, 614_728, 295_424), (256, 2_454_160, 1_180_672), (512, 9_807_136, 4_720_640)])
def test_blocks(make_config: Callable[..., Config], channels: int, pa: int, plain: int) -> None:
    parts = pa_block_parts(make_config().model)  # PCAR (A) + AFF r=4
    assert meta_count(lambda: BasicBlock(channels, channels, parts=parts)) == pa
    assert meta_count(lambda: BasicBlock(channels, channels)) == plain


@pytest.mark.parametrize(("overrides", "total", "encoder", "decoder"), [
    (PLAIN, 24.67, 11.18, 13.49),
    (("model.use_pcar=false",), 26.09, None, None),
    (("model.use_aff=false",), 50.28, None, None),
    ((), 51.70, 24.70, 27.01),
    (("model.pcar.branches=kernels",), 129.69, None, None),
])
def test_student(make_config: Callable[..., Config], overrides: tuple[str, ...], total: float,
                 encoder: float | None, decoder: float | None) -> None:
    with torch.device("meta"):
        student = build_student(make_config(*overrides).model)
    assert round(count_parameters(student) / 1e6, 2) == total
    if encoder is not None:
        assert round(count_parameters(student.encoder) / 1e6, 2) == encoder
        assert round(count_parameters(student.decoder) / 1e6, 2) == decoder


def test_student_plain_exact(make_config: Callable[..., Config]) -> None:
    """The plain student is timm resnet18 without fc (11,176,512) + DeSTSeg's decoder (13,488,512)."""
    with torch.device("meta"):
        student = build_student(make_config(*PLAIN).model)
    assert count_parameters(student.encoder) == 11_176_512
    assert count_parameters(student.decoder) == 13_488_512


@pytest.mark.parametrize(("overrides", "res", "head"), [(PLAIN, 2.92, 4.79), ((), 5.47, 0.86)])
def test_segnet(make_config: Callable[..., Config], overrides: tuple[str, ...], res: float,
                head: float) -> None:
    with torch.device("meta"):
        segnet = build_segnet(make_config(*overrides).model)
    assert round(count_parameters(segnet.res) / 1e6, 2) == res
    assert round(count_parameters(segnet.head) / 1e6, 2) == head
    if overrides == ():
        assert count_parameters(segnet.head[0]) == 272_896  # RCM(256), k = 11
