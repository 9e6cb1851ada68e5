"""DVC stage `acquire_textures`: see pfadseg.pipeline.acquire.ACQUIRE_TEXTURES."""

from pfadseg.pipeline.acquire import ACQUIRE_TEXTURES
from pfadseg.pipeline.entry import run_stage

run_stage(ACQUIRE_TEXTURES)
