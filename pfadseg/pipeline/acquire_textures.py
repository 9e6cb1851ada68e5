"""DVC stage ``acquire_textures``: the anomaly-source textures of ``data.textures`` (DTD or procedural), with their
manifest."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pfadseg.config import Config
from pfadseg.data.download import safe_extract, with_overrides
from pfadseg.data.layout import find_texture_root, texture_manifest
from pfadseg.data.procedural.textures import make_procedural_textures
from pfadseg.fsio import write_json
from pfadseg.paths import Layout
from pfadseg.pipeline.acquire import archive_record, fetch, install, work_folder
from pfadseg.pipeline.entry import ITEM, StageDef

log = logging.getLogger(__name__)


def acquire_textures(
    cfg: Config, layout: Layout, *, archive: Path | None = None, url: str | None = None,
    sha256: str | None = None, progress: bool = True,
) -> Path:
    """Put the anomaly-source textures of ``data.textures`` at ``layout.textures`` (``<class>/*.jpg``)."""
    data = cfg.data
    root = layout.textures
    record: dict[str, Any] = {"source": data.textures}
    with work_folder(root) as work:
        if data.textures == "dtd":
            spec = with_overrides(data.dtd, url, sha256)
            path = fetch(cfg, layout, "dtd", spec, archive=archive, progress=progress)
            safe_extract(path, work / "extracted", data.archive_limits)
            record.update(archive_record(spec, path))
        else:
            summary = make_procedural_textures(work / "extracted", data.procedural_textures)
            record.update({key: summary[key] for key in ("seed", "image_size")})
        images = find_texture_root(work / "extracted")
        counts = install(sorted(p for p in images.iterdir() if p.is_dir()), root, texture_manifest)
    record.update(counts)
    write_json(layout.textures_manifest, record)
    log.info("%s: %d texture classes, %d images (%s)", root, counts["classes"], counts["images"],
             data.textures)
    return root


ACQUIRE_TEXTURES = StageDef(
    "acquire_textures", acquire_textures,
    params=lambda arch: ("data.textures", "data.dtd", "data.archive_limits", "data.procedural_textures"),
    outs=lambda arch: (str(ITEM.textures),), records=lambda arch: (str(ITEM.textures_manifest),),
)
