"""DVC stage `train_seg`: see pfadseg.pipeline.destseg.TRAIN_SEG."""

from pfadseg.pipeline.destseg import TRAIN_SEG
from pfadseg.pipeline.entry import run_stage

run_stage(TRAIN_SEG)
