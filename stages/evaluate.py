"""DVC stage `evaluate@<category>-<seed>`: see pfadseg.pipeline.evaluate.run_evaluate."""

import sys

from pfadseg.pipeline import run_stage
from pfadseg.pipeline.evaluate import run_evaluate

run_stage(run_evaluate, sys.argv[1], int(sys.argv[2]))
