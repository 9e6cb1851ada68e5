"""DVC stage ``train_adps@<category>-<seed>``: ADPS's one joint training stage."""

from __future__ import annotations

from pfadseg.arch.adps import ADPS, ADPS_FILE
from pfadseg.pipeline.training import training_stage
from pfadseg.train.adps import train_adps

TRAIN_ADPS = training_stage(ADPS, "train_adps", train_adps, reads=(), writes=ADPS_FILE)
