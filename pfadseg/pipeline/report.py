"""DVC stage ``report``: reports/tables.md and reports/figures/ from every run's metrics and maps."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pfadseg.arch.registry import architecture
from pfadseg.config import Config
from pfadseg.data.sources import SOURCES
from pfadseg.fsio import atomic_path, read_json
from pfadseg.paths import Layout
from pfadseg.pipeline.entry import ITEM, StageDef
from pfadseg.report.figures import render_figures
from pfadseg.report.tables import Provenance, render_tables
from pfadseg.revision import project_revision

log = logging.getLogger(__name__)

def report_params(arch: str) -> tuple[str, ...]:
    """What the report reads: the runs' categories and seeds, the data and its architecture's lines."""
    return ("seed", "seeds", "data.categories", "data.image_size", "data.source", "data.textures", "model.arch",
            "model.teacher_weights", *architecture(arch).report_params, "report")


def collect_runs(cfg: Config, layout: Layout) -> dict[str, list[dict[str, Any]]]:
    """category -> metrics JSONs of the seeds that ran (categories without any run are left out)."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for category in cfg.data.categories:
        found = [read_json(p) for s in cfg.seeds if (p := layout.metrics(category, s)).is_file()]
        if found:
            runs[category] = found
    return runs


def _manifest(path: Path) -> dict[str, Any]:
    return read_json(path) if path.is_file() else {}


def _origin(manifest: dict[str, Any], seed: int) -> str:
    """An acquired dataset's identity: its archive's sha256, the folder it was copied from, or its generator seed."""
    return manifest.get("sha256") or manifest.get("root") or f"seed {manifest.get('seed', seed)}"


def _skipped_pixel_metrics(runs: dict[str, list[dict[str, Any]]], where: str) -> str | None:
    """The warning naming the categories whose pixel metrics were skipped, and why."""
    reasons = {c: r["seg"].get("pixel_metrics", "skipped") for c, rs in runs.items() for r in rs
               if r.get("pixel_level") is False}
    if not reasons:
        return None
    listed = "; ".join(f"{c} ({reason.removeprefix('skipped: ')})" for c, reason in reasons.items())
    return (f"Pixel metrics skipped, ground-truth masks missing in {where}: {listed}. Their image AUROC, image AP "
            "and image ROC/PR curves use the folder labels (every test image outside test/good is anomalous).")


def provenance(cfg: Config, layout: Layout, runs: dict[str, list[dict[str, Any]]]) -> Provenance:
    """Data, teacher, seeds, device, revision and time per stage; warnings when not comparable with the paper."""
    images, textures = _manifest(layout.images_manifest), _manifest(layout.textures_manifest)
    all_runs = [r for rs in runs.values() for r in rs]
    teachers = {str(r.get("teacher")) for r in all_runs}
    teacher = all_runs[0]["teacher"] if all_runs else {"weights": cfg.model.teacher_weights}
    devices = sorted({r.get("device", "?") for r in all_runs})
    wall = {stage: sum(r["wall_time_s"][stage] for r in all_runs) for stage in ("training", "evaluate")} \
        if all_runs else {}
    source = images.get("source", cfg.data.source)
    dataset, banner = SOURCES[source].describe(_origin(images, cfg.seed))
    warnings = [banner] if banner else []
    if teacher.get("weights") == "random":
        warnings.append("RANDOM TEACHER: the teacher is randomly initialised, not ImageNet-pretrained; these "
                        "numbers are not comparable with the paper.")
    if textures.get("source", cfg.data.textures) == "procedural":
        warnings.append("Anomaly sources are procedural textures, not DTD.")
    if skipped := _skipped_pixel_metrics(runs, dataset):
        warnings.append(skipped)
    if len(teachers) > 1:
        warnings.append(f"Runs used different teachers: {sorted(teachers)}.")
    not_run = [c for c in cfg.data.categories if c not in runs]
    lines = {
        "Data": f"{source} ({_origin(images, cfg.seed)})",
        "Anomaly sources": f"{textures.get('source', cfg.data.textures)} ({_origin(textures, cfg.seed)})",
        "Model": architecture(cfg.model.arch).describe_model(cfg),
        "Teacher": ", ".join(f"{k}={v}" for k, v in teacher.items()),
        "Seeds": f"training {cfg.seeds}, base {cfg.seed}",
        "Schedule": architecture(cfg.model.arch).describe_schedule(cfg),
        "Device": ", ".join(devices) or "n/a",
        "Revision": project_revision(layout.root),
        "Wall time (all runs)": ", ".join(f"{k} {v / 60:.1f} min" for k, v in wall.items()) or "n/a",
        "Categories run": f"{len(runs)} of {len(cfg.data.categories)} configured"
                          + (f" (not run: {', '.join(not_run)})" if not_run else ""),
    }
    return Provenance(lines, warnings, dataset)


def run_report(cfg: Config, layout: Layout) -> None:
    """Render reports/tables.md and the figures from whatever runs exist (missing ones show as not run)."""
    runs = collect_runs(cfg, layout)
    prov = provenance(cfg, layout, runs)
    with atomic_path(layout.reports / "tables.md") as tmp:
        tmp.write_text(render_tables(runs, prov))
    render_figures(cfg, layout, runs)
    log.info("report: %d categories with results -> %s", len(runs), layout.reports / "tables.md")


REPORT = StageDef(
    "report", run_report, params=report_params,
    deps=lambda arch: (str(ITEM.images_manifest), str(ITEM.textures_manifest), "metrics", "maps", "plots",
                       "dvclive"),
    outs=lambda arch: (str(ITEM.reports / "tables.md"), str(ITEM.reports / "figures")),
    extra_code=("pfadseg/report/paper_results.yaml",),
)
