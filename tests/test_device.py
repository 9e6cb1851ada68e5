"""The device helpers: frozen networks on the accelerator path, BN folded and cast to bf16 once, give the values
autocast computes at every call (to rounding where BN is folded); off the accelerator path nothing changes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pfadseg.config import Config
from pfadseg.device import CudaGraphed, autocast, cuda_graphed, fewer_kernels, prepare_frozen, prepare_module
from pfadseg.models.pcar import PCAR

CPU = torch.device("cpu")


def _frozen_net(batchnorm: bool = True) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8) if batchnorm else nn.Identity(), nn.ReLU(),
              nn.Conv2d(8, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)]
    net = nn.Sequential(*layers).eval()
    for bn in net.modules():  # statistics of their own, so that folding has something to fold
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            nn.init.uniform_(bn.weight, 0.5, 1.5)
    return net.requires_grad_(False)


def _images() -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_a_frozen_network_cast_once_gives_autocasts_values(make_config) -> None:
    cfg: Config = make_config("train.accelerator_path_on_cpu=true", "train.amp=true")
    reference = _frozen_net(batchnorm=False)
    cast = prepare_frozen(_frozen_net(batchnorm=False), CPU, cfg.train)
    assert cast[0].weight.dtype == torch.bfloat16 and cast[6].weight.dtype == torch.bfloat16
    with autocast(CPU, True):
        assert torch.equal(cast(_images()), reference(_images()))


def test_batchnorm_folds_into_its_conv_on_the_accelerator_path(make_config) -> None:
    cfg: Config = make_config("train.accelerator_path_on_cpu=true", "train.amp=false")
    reference = _frozen_net()
    folded = prepare_frozen(_frozen_net(), CPU, cfg.train)
    assert isinstance(folded[1], nn.Identity) and folded[0].bias is not None
    assert not any(p.requires_grad for p in folded.parameters())
    torch.testing.assert_close(folded(_images()), reference(_images()), rtol=1e-5, atol=1e-5)


def test_nothing_changes_off_the_accelerator_path_or_for_trained_layers(make_config) -> None:
    plain = prepare_frozen(_frozen_net(), CPU, make_config("train.amp=true").train)
    assert isinstance(plain[1], nn.BatchNorm2d) and all(p.dtype == torch.float32 for p in plain.parameters())
    assert torch.equal(plain(_images()), _frozen_net()(_images()))
    trained = _frozen_net(batchnorm=False).requires_grad_(True)
    cfg = make_config("train.accelerator_path_on_cpu=true", "train.amp=true")
    kept = prepare_frozen(trained, CPU, cfg.train)
    assert all(p.dtype == torch.float32 for p in kept.parameters())


def test_fewer_kernels_needs_the_accelerator_path_and_its_switch(make_config) -> None:
    on = make_config("train.accelerator_path_on_cpu=true").train
    off = make_config("train.accelerator_path_on_cpu=true", "train.fewer_kernels=false").train
    assert fewer_kernels(CPU, on) and not fewer_kernels(CPU, off)
    assert not fewer_kernels(CPU, make_config().train), "the fp32 CPU path keeps the per-parameter step"
    assert prepare_module(PCAR(16), CPU, on).fewer_kernels and not prepare_module(PCAR(16), CPU, off).fewer_kernels
    assert isinstance(prepare_frozen(_frozen_net(), CPU, off)[1], nn.BatchNorm2d), "BN stays unfolded"


def test_inference_graphs_need_cuda_and_the_switch(make_config) -> None:
    net = _frozen_net()
    assert cuda_graphed(net, CPU, make_config("train.cuda_graphs=true").train) is net


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("amp", [False, True])
def test_graphed_inference_equals_eager_inference_on_cuda(make_config, amp: bool) -> None:
    cuda = torch.device("cuda")
    net = _frozen_net().to(cuda)
    graphed = cuda_graphed(net, cuda, make_config("train.cuda_graphs=true").train)
    assert isinstance(graphed, CudaGraphed)
    generator = torch.Generator().manual_seed(2)
    batches = [torch.randn(4, 3, 16, 16, generator=generator).to(cuda) for _ in range(4)]
    batches.append(torch.randn(3, 3, 16, 16, generator=generator).to(cuda))  # a short last batch: eager
    with torch.inference_mode(), autocast(cuda, amp):
        for images in batches:
            torch.testing.assert_close(graphed(images), net(images), rtol=0, atol=0)
    assert len(graphed._graphs) == 1, "the full batch's shape was captured once, the short one ran eagerly"
