"""DVC stage `acquire_images`: see pfadseg.pipeline.acquire.acquire_images."""

import sys

from pfadseg.pipeline import run_stage
from pfadseg.pipeline.acquire import acquire_images

run_stage(acquire_images, *sys.argv[1:])
