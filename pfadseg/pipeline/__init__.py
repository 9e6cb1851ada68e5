"""One function per DVC stage: read config, load inputs, call the library, write outputs atomically."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from pfadseg.config import DEFAULT_PARAMS, Config, ConfigError, load_config
from pfadseg.paths import Layout


def run_stage(stage: Callable[..., Any], *args: str) -> None:
    """Entry point of a ``stages/*.py`` script: load params.yaml, run ``stage(cfg, Layout(), *args)``.

    Errors become one clear line on stderr and a non-zero exit code instead of a traceback.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        cfg: Config = load_config(DEFAULT_PARAMS)
        stage(cfg, Layout(), *args)
    except (ConfigError, OSError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
