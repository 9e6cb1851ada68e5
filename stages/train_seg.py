"""DVC stage `train_seg`: see pfadseg.pipeline.train_seg.TRAIN_SEG."""

from pfadseg.pipeline.entry import run_stage
from pfadseg.pipeline.train_seg import TRAIN_SEG

run_stage(TRAIN_SEG)
