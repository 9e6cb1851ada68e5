"""DVC stage `acquire_images`: see pfadseg.pipeline.acquire.ACQUIRE_IMAGES."""

from pfadseg.pipeline.acquire import ACQUIRE_IMAGES
from pfadseg.pipeline.entry import run_stage

run_stage(ACQUIRE_IMAGES)
