"""A trained network's parameters in stacks: one tensor per shape family for autograd, AMP casts and the optimiser.

PyTorch keeps one leaf tensor per parameter, and each costs its own ops at every step: bf16 autocast casts every
conv weight and bias forward and casts its gradient back, autograd stores every gradient, the optimiser walks
every tensor. PFADSeg's student has 565 parameters of 47 shapes, so a step spends more kernel launches on this
bookkeeping than on its convolutions. Here the parameters that differ only in their first dimension (and share
the layout of the rest, dtype and optimiser group: every 1-D bias of a network, every conv weight of one input
width and kernel) are concatenated along it into one leaf, 19 for that student; each step casts a stack once and
splits it into the network's tensors in one op (``torch.func.functional_call``). The module's own parameters
become views of the stacks, so its ``state_dict``, ``load_state_dict`` and checkpoints read and write the trained
values in place.

BatchNorm's step counters (``num_batches_tracked``, read only when its momentum is ``None``) are likewise
counted in one op per step, not one per layer.

The values are those of the per-parameter code: the same casts, gradients, element-wise optimiser updates and
counters.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

# Layers whose weights and biases bf16 autocast casts (conv and linear ops); every other parameter stays fp32.
AUTOCAST_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


def _dense_strides(p: torch.Tensor) -> bool:
    return p.is_contiguous() or (p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last))


def _family(p: torch.Tensor) -> tuple[Any, ...]:
    """What parameters concatenated along their first dimension share: the shape and strides of the rest (a
    scalar stays alone: it has no first dimension)."""
    return (tuple(p.shape[1:]), p.stride()[1:]) if p.dim() else ("scalar", id(p))


class StackedParameters:
    """``module``'s trained parameters concatenated along their first dimension by (optimiser group, shape and
    strides of the other dimensions, dtype, cast); call it as the module. ``param_groups`` are the optimiser's
    groups over ``module``'s parameters (default: one group of all that require grad); ``cast`` is the dtype
    autocast computes conv and linear layers in (``None``: no AMP).
    ``stacked=False`` (``train.fewer_kernels: false``) keeps one leaf per parameter: the per-parameter code."""

    def __init__(self, module: nn.Module, param_groups: Iterable[Mapping[str, Any]] | None = None,
                 cast: torch.dtype | None = None, *, stacked: bool = True) -> None:
        self.module = module
        self.cast = cast
        self.stacked = stacked
        groups = list(param_groups) if param_groups is not None else [
            {"params": [p for p in module.parameters() if p.requires_grad]}]
        names = {id(p): n for n, p in module.named_parameters()}
        cast_names = {f"{prefix}.{n}".lstrip(".") for prefix, layer in module.named_modules()
                      if isinstance(layer, AUTOCAST_LAYERS) for n, _ in layer.named_parameters(recurse=False)}
        keyed: dict[tuple[Any, ...], list[str]] = {}
        casts_of: dict[tuple[Any, ...], bool] = {}
        params = dict(module.named_parameters())
        for index, group in enumerate(groups):
            for p in group["params"]:
                if id(p) not in names:
                    raise ValueError("StackedParameters: an optimiser group holds a tensor that is not a parameter "
                                     "of the module")
                if not _dense_strides(p):
                    raise ValueError(f"StackedParameters: parameter {names[id(p)]} is neither contiguous nor "
                                     "channels_last")
                name = names[id(p)]
                casts = cast is not None and name in cast_names
                key = (index, *_family(p), p.dtype, p.device, casts) if stacked else (index, name)
                keyed.setdefault(key, []).append(name)
                casts_of[key] = casts
        self.group_options = [{k: v for k, v in group.items() if k != "params"} for group in groups]
        # BatchNorm layers with a momentum keep their step counter for the record only: counted here in one op
        self.counters = {f"{name}.num_batches_tracked".lstrip("."): layer.num_batches_tracked
                         for name, layer in module.named_modules()
                         if stacked and isinstance(layer, nn.modules.batchnorm._BatchNorm)
                         and layer.momentum is not None and layer.num_batches_tracked is not None}
        self.stacks: list[nn.Parameter] = []
        self.names: list[list[str]] = []
        self.sizes: list[list[int]] = []  # the first dimension of each parameter in a stack ([] for one alone)
        self.casts: list[bool] = []
        self.group_of: list[int] = []  # the optimiser group of each stack
        for key, group_names in keyed.items():
            index, casts, first = key[0], casts_of[key], params[group_names[0]]
            if len(group_names) == 1:  # alone in its family: the parameter itself (a stack of one costs more ops)
                self._add(first, group_names, [], casts, index)
                continue
            sizes = [len(params[name]) for name in group_names]
            data = torch.empty_strided((sum(sizes), *first.shape[1:]),
                                       (math.prod(first.shape[1:]), *first.stride()[1:]),
                                       dtype=first.dtype, device=first.device)
            for name, part in zip(group_names, data.split(sizes), strict=True):  # each parameter: a view of its part
                with torch.no_grad():
                    part.copy_(params[name])
                owner, _, leaf = name.rpartition(".")
                module.get_submodule(owner)._parameters[leaf] = nn.Parameter(part, requires_grad=False)
            self._add(nn.Parameter(data), group_names, sizes, casts, index)

    def _add(self, stack: nn.Parameter, names: list[str], sizes: list[int], casts: bool, group: int) -> None:
        self.stacks.append(stack)
        self.names.append(names)
        self.sizes.append(sizes)
        self.casts.append(casts)
        self.group_of.append(group)

    def param_groups(self) -> list[dict[str, Any]]:
        """The optimiser's groups over the stacks, with the options of the groups they were made from."""
        groups = [{**options, "params": []} for options in self.group_options]
        for stack, index in zip(self.stacks, self.group_of, strict=True):
            groups[index]["params"].append(stack)
        return [group for group in groups if group["params"]]

    def parameters(self) -> list[nn.Parameter]:
        return list(self.stacks)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every stacked parameter by name, cast where autocast would cast it: one cast and one split per stack."""
        out: dict[str, torch.Tensor] = {}
        for stack, names, sizes, casts in zip(self.stacks, self.names, self.sizes, self.casts, strict=True):
            source = stack.to(self.cast) if casts else stack
            out.update(zip(names, source.split(sizes) if len(names) > 1 else [source], strict=True))
        return out

    def train(self, mode: bool = True) -> StackedParameters:
        self.module.train(mode)
        return self

    def forward(self, *args: Any) -> Any:
        """The module's forward on the stacked parameters (gradients reach the stacks); in training mode the
        BatchNorm counters advance by one, together. Without ``stacked``, the module's own forward."""
        if not self.stacked:
            return self.module(*args)
        tensors: dict[str, torch.Tensor | None] = dict(self.tensors())
        if self.module.training and self.counters:
            torch._foreach_add_(list(self.counters.values()), 1)
            tensors.update(dict.fromkeys(self.counters))  # a None counter: the layer skips its own increment
        return torch.func.functional_call(self.module, tensors, args)

    __call__ = forward
