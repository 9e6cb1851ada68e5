"""DVC stage `bank`: see pfadseg.pipeline.bank.run_bank."""

import sys

from pfadseg.pipeline import run_stage
from pfadseg.pipeline.bank import run_bank

run_stage(run_bank, *sys.argv[1:])
