"""DVC stage ``train_student@<category>-<seed>``: DeSTSeg/PFADSeg's denoising student."""

from __future__ import annotations

from pfadseg.arch.destseg import DESTSEG, STUDENT_FILE
from pfadseg.pipeline.training import training_stage
from pfadseg.train.student import train_student

TRAIN_STUDENT = training_stage(DESTSEG, "train_student", train_student, reads=(), writes=STUDENT_FILE)
