"""DVC stage `train_student`: see pfadseg.pipeline.destseg.TRAIN_STUDENT."""

from pfadseg.pipeline.destseg import TRAIN_STUDENT
from pfadseg.pipeline.entry import run_stage

run_stage(TRAIN_STUDENT)
