"""DVC stage `report`: see pfadseg.pipeline.report.run_report."""

from pfadseg.pipeline import run_stage
from pfadseg.pipeline.report import run_report

run_stage(run_report)
