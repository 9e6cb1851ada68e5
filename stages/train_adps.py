"""DVC stage `train_adps`: see pfadseg.pipeline.adps.TRAIN_ADPS."""

from pfadseg.pipeline.adps import TRAIN_ADPS
from pfadseg.pipeline.entry import run_stage

run_stage(TRAIN_ADPS)
