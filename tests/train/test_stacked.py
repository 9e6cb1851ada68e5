"""Stacked parameters train exactly as per-parameter training does, and the module's own tensors stay its state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pfadseg.train.stacked import StackedParameters


def _net() -> nn.Module:
    """Shapes that differ in their first dimension only (stacked), singletons (kept), BN with a momentum (counted)
    and a linear head."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def _groups(net: nn.Module) -> list[dict]:
    head = list(net[-1].parameters())
    body = [p for p in net.parameters() if all(p is not h for h in head)]
    return [{"params": body, "lr": 0.1}, {"params": head, "lr": 0.5}]


def _train(net: nn.Module, stacked: bool, steps: int, *, amp: bool = False, foreach: bool = False,
           channels_last: bool = False) -> nn.Module:
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    groups = _groups(net)
    model = StackedParameters(net, groups, torch.bfloat16 if amp else None) if stacked else net
    optimizer = torch.optim.SGD(model.param_groups() if stacked else groups, lr=0.1, momentum=0.9,
                                weight_decay=1e-4, foreach=foreach or None)
    model.train()
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        images = torch.randn(4, 3, 8, 8, generator=generator)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = model(images).float().square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return net


@pytest.mark.parametrize(("amp", "channels_last"), [(False, False), (True, False), (True, True)],
                         ids=["fp32", "bf16-foreach", "bf16-foreach-channels_last"])
def test_stacked_training_equals_per_parameter_training(amp: bool, channels_last: bool) -> None:
    options = {"amp": amp, "foreach": amp, "channels_last": channels_last}
    reference = _train(_net(), stacked=False, steps=3, **options).state_dict()
    stacked = _train(_net(), stacked=True, steps=3, **options).state_dict()
    assert reference.keys() == stacked.keys()
    for name, value in reference.items():
        assert torch.equal(value, stacked[name]), name
    assert int(stacked["1.num_batches_tracked"]) == 3


def test_stacks_group_repeated_shapes_and_keep_the_optimiser_groups() -> None:
    net = _net()
    stacked = StackedParameters(net, _groups(net))
    shapes = sorted(tuple(s.shape) for s in stacked.parameters())
    # the 8->8 and 8->4 convs in one stack, the nine vectors (conv biases, BN weights and biases) in one; the
    # first conv (3 input channels) alone; the head's weight and bias in the other optimiser group
    assert shapes == [(2,), (2, 4), (8, 3, 3, 3), (12, 8, 3, 3), (60,)]
    assert sum(s.numel() for s in stacked.parameters()) == sum(p.numel() for p in _net().parameters())
    assert [g["lr"] for g in stacked.param_groups()] == [0.1, 0.5]
    assert all(s.requires_grad for s in stacked.parameters())
    # a stacked parameter is a view of its stack; a singleton stays the module's own leaf
    leaves = {id(p) for p in net.parameters() if p.requires_grad}
    assert leaves == {id(net[0].weight), id(net[-1].weight), id(net[-1].bias)}


def test_the_modules_state_dict_reads_and_writes_the_stacks() -> None:
    net = _net()
    stacked = StackedParameters(net, _groups(net))
    with torch.no_grad():
        for stack in stacked.parameters():
            stack.add_(1)
    assert torch.equal(net[3].weight, _net()[3].weight + 1)
    state = {k: v.clone() for k, v in _net().state_dict().items()}
    net.load_state_dict(state)
    assert torch.equal(stacked.tensors()["3.weight"], state["3.weight"])
    images = torch.randn(2, 3, 8, 8)
    assert torch.equal(stacked.train(False).forward(images), _net().eval()(images))


def test_batchnorm_counters_advance_once_per_training_forward_only() -> None:
    net = _net()
    stacked = StackedParameters(net)
    images = torch.randn(2, 3, 8, 8)
    stacked.train()
    stacked(images)
    stacked(images)
    stacked.train(False)
    stacked(images)
    assert [int(bn.num_batches_tracked) for bn in (net[1], net[4], net[7])] == [2, 2, 2]


def test_a_group_tensor_outside_the_module_is_refused() -> None:
    with pytest.raises(ValueError, match="not a parameter of the module"):
        StackedParameters(_net(), [{"params": [nn.Parameter(torch.zeros(3))]}])
