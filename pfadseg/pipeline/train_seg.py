"""DVC stage ``train_seg@<category>-<seed>``: DeSTSeg/PFADSeg's segmentation net on its frozen student."""

from __future__ import annotations

from pfadseg.arch.destseg import DESTSEG, SEG_FILE, STUDENT_FILE
from pfadseg.pipeline.training import training_stage
from pfadseg.train.seg import train_seg

TRAIN_SEG = training_stage(DESTSEG, "train_seg", train_seg, reads=(STUDENT_FILE,), writes=SEG_FILE)
