"""DVC stage ``bank``: the category-independent synthetic-anomaly bank (pfadseg.synth.bank)."""

from __future__ import annotations

from pfadseg.config import Config
from pfadseg.paths import Layout
from pfadseg.pipeline.entry import ITEM, StageDef
from pfadseg.synth.bank import BANK_PARAMS, build_bank


def run_bank(cfg: Config, layout: Layout, *, progress: bool = True) -> None:
    """Build ``layout.bank`` (masks.npy, textures.npy, bank.json) from the textures in ``layout.textures``."""
    build_bank(cfg, layout.textures, layout.bank, progress=progress)


BANK = StageDef("bank", run_bank, params=lambda arch: BANK_PARAMS, deps=lambda arch: (str(ITEM.textures),),
                outs=lambda arch: (str(ITEM.bank),))
