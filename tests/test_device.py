"""The device helpers: frozen networks cast to bf16 once give the values autocast computes at every call."""

from __future__ import annotations

import torch
from torch import nn

from pfadseg.config import Config
from pfadseg.device import autocast, cast_frozen_for_amp


def _frozen_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    return net.requires_grad_(False)


def test_a_frozen_network_cast_once_gives_autocasts_values(make_config) -> None:
    cfg: Config = make_config("train.accelerator_path_on_cpu=true", "train.amp=true")
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    reference = _frozen_net()
    cast = cast_frozen_for_amp(_frozen_net(), torch.device("cpu"), cfg.train)
    assert cast[0].weight.dtype == torch.bfloat16 and cast[6].weight.dtype == torch.bfloat16
    assert cast[1].weight.dtype == torch.float32, "BatchNorm keeps its float32 parameters"
    with autocast(torch.device("cpu"), True):
        assert torch.equal(cast(images), reference(images))


def test_nothing_is_cast_without_amp_or_for_trained_layers(make_config) -> None:
    fp32 = cast_frozen_for_amp(_frozen_net(), torch.device("cpu"), make_config().train)
    assert all(p.dtype == torch.float32 for p in fp32.parameters())
    trained = _frozen_net().requires_grad_(True)
    cfg = make_config("train.accelerator_path_on_cpu=true", "train.amp=true")
    kept = cast_frozen_for_amp(trained, torch.device("cpu"), cfg.train)
    assert all(p.dtype == torch.float32 for p in kept.parameters())
