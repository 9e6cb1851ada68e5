"""DVC stage `acquire_images`: see pfadseg.pipeline.acquire_images.ACQUIRE_IMAGES."""

from pfadseg.pipeline.acquire_images import ACQUIRE_IMAGES
from pfadseg.pipeline.entry import run_stage

run_stage(ACQUIRE_IMAGES)
