"""DVC stages ``train_student@<category>-<seed>`` and ``train_seg@<category>-<seed>`` (DeSTSeg/PFADSeg)."""

from __future__ import annotations

from pfadseg.arch.destseg import DESTSEG, SEG_FILE, STUDENT_FILE
from pfadseg.pipeline.training import training_stage
from pfadseg.train.destseg import train_seg, train_student

TRAIN_STUDENT = training_stage(DESTSEG, "train_student", train_student, reads=(), writes=STUDENT_FILE)
TRAIN_SEG = training_stage(DESTSEG, "train_seg", train_seg, reads=(STUDENT_FILE,), writes=SEG_FILE)
