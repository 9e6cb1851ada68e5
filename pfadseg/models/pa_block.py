"""The PA block's parts (PFADSeg §3.1): PCAR for a BasicBlock's second convolution, AFF for its residual sum, each
as ``model.use_pcar`` and ``model.use_aff`` switch it."""

from __future__ import annotations

from functools import partial

from pfadseg.config import ModelConfig
from pfadseg.models.aff import AFF
from pfadseg.models.blocks import BlockParts
from pfadseg.models.pcar import PCAR


def pa_block_parts(model_cfg: ModelConfig) -> BlockParts:
    """The layer types of ``model_cfg``'s blocks: PCAR and AFF where switched on, torchvision's parts elsewhere."""
    pcar, aff = model_cfg.pcar, model_cfg.aff
    return BlockParts(
        conv2=partial(PCAR, branches=pcar.branches, shared_spr=pcar.shared_spr, softmax=pcar.softmax,
                      spr_reduction=model_cfg.spr.reduction) if model_cfg.use_pcar else None,
        aff=partial(AFF, reduction=aff.reduction, factor_two=aff.factor_two) if model_cfg.use_aff else None,
    )
