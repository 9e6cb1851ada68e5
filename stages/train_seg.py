"""DVC stage `train_seg@<category>-<seed>`: see pfadseg.pipeline.train.run_train_seg."""

import sys

from pfadseg.pipeline import run_stage
from pfadseg.pipeline.train import run_train_seg

run_stage(run_train_seg, sys.argv[1], int(sys.argv[2]))
