"""DVC stage `evaluate`: see pfadseg.pipeline.evaluate.EVALUATE."""

from pfadseg.pipeline.entry import run_stage
from pfadseg.pipeline.evaluate import EVALUATE

run_stage(EVALUATE)
