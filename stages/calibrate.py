"""DVC stage `calibrate`: see pfadseg.pipeline.calibrate.CALIBRATE."""

from pfadseg.pipeline.calibrate import CALIBRATE
from pfadseg.pipeline.entry import run_stage

run_stage(CALIBRATE)
