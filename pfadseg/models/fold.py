"""BatchNorm folded into the convolution before it, for frozen networks in eval mode (one kernel instead of two)."""

from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

# Attribute pairs where the BatchNorm is applied directly to the conv's output: the stems and blocks of our
# student (pfadseg.models.blocks, .student) and of torchvision's ResNets (the teacher).
NAMED_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))


def _foldable(conv: object, bn: object) -> bool:
    return (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats
            and conv.out_channels == bn.num_features)


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm that follows a conv into it, in place: in an ``nn.Sequential`` (conv, BN)
    neighbours, in other modules the :data:`NAMED_PAIRS`; the BN becomes ``nn.Identity``. The function is the
    same to rounding (the folded weights are rounded once more); for frozen networks only."""
    if module.training:
        raise ValueError("fold_batchnorm: the network is in training mode; BatchNorm folds only in eval mode")
    for layer in module.modules():
        if isinstance(layer, nn.Sequential):
            for i in range(len(layer) - 1):
                if _foldable(layer[i], layer[i + 1]):
                    layer[i], layer[i + 1] = fuse_conv_bn_eval(layer[i], layer[i + 1]), nn.Identity()
        for conv_name, bn_name in NAMED_PAIRS:
            conv, bn = getattr(layer, conv_name, None), getattr(layer, bn_name, None)
            if _foldable(conv, bn):
                setattr(layer, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(layer, bn_name, nn.Identity())
    return module
