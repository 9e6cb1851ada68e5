"""DVC stage `acquire_textures`: see pfadseg.pipeline.acquire.acquire_textures."""

import sys

from pfadseg.pipeline import run_stage
from pfadseg.pipeline.acquire import acquire_textures

run_stage(acquire_textures, *sys.argv[1:])
