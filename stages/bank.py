"""DVC stage `bank`: see pfadseg.pipeline.bank.BANK."""

from pfadseg.pipeline.bank import BANK
from pfadseg.pipeline.entry import run_stage

run_stage(BANK)
