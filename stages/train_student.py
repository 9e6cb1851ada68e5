"""DVC stage `train_student`: see pfadseg.pipeline.train_student.TRAIN_STUDENT."""

from pfadseg.pipeline.entry import run_stage
from pfadseg.pipeline.train_student import TRAIN_STUDENT

run_stage(TRAIN_STUDENT)
