"""DVC stage `train_student@<category>-<seed>`: see pfadseg.pipeline.train.run_train_student."""

import sys

from pfadseg.pipeline import run_stage
from pfadseg.pipeline.train import run_train_student

run_stage(run_train_student, sys.argv[1], int(sys.argv[2]))
