"""DVC stage `check_params`: see pfadseg.pipeline.check_params.CHECK_PARAMS."""

from pfadseg.pipeline.check_params import CHECK_PARAMS
from pfadseg.pipeline.entry import run_stage

run_stage(CHECK_PARAMS)
