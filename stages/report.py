"""DVC stage `report`: see pfadseg.pipeline.report.REPORT."""

from pfadseg.pipeline.entry import run_stage
from pfadseg.pipeline.report import REPORT

run_stage(REPORT)
