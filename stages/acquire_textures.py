"""DVC stage `acquire_textures`: see pfadseg.pipeline.acquire_textures.ACQUIRE_TEXTURES."""

from pfadseg.pipeline.acquire_textures import ACQUIRE_TEXTURES
from pfadseg.pipeline.entry import run_stage

run_stage(ACQUIRE_TEXTURES)
