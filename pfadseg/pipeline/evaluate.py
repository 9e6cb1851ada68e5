"""DVC stage ``evaluate@<category>``: metrics JSON, per-image scores, maps for the figures, curves for plots."""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from pfadseg.arch.registry import architecture
from pfadseg.config import Config
from pfadseg.data.images import load_test_set
from pfadseg.data.layout import CategoryFiles, mask_file, scan_category
from pfadseg.data.sources import SOURCES
from pfadseg.device import amp_enabled, configure_backends, device_label, resolve_device
from pfadseg.evaluate import BRANCHES, evaluate_branches, infer_maps, score_table
from pfadseg.fsio import atomic_path, write_json
from pfadseg.paths import Layout
from pfadseg.pipeline.entry import CATEGORY, ITEM, SEED, StageDef
from pfadseg.pipeline.training import run_file
from pfadseg.runs import TrainedRun

log = logging.getLogger(__name__)

def evaluate_params(arch: str) -> tuple[str, ...]:
    """What evaluation reads: the model, its score rule, the test set's settings and the metric options."""
    spec = architecture(arch)
    return (*spec.model_params, *spec.score_params, "data.source", "eval")


def _write_curves(directory: Path, results: dict[str, dict[str, Any]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)  # a declared DVC output, even if no curve were defined
    for branch, metrics in results.items():
        for name, curve in metrics.get("curves", {}).items():
            columns = list(curve)
            with atomic_path(directory / f"{branch}_{name}.csv") as tmp, tmp.open("w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(columns)
                writer.writerows(zip(*(curve[c] for c in columns), strict=True))


def _masks_missing(files: CategoryFiles) -> str | None:
    """Why the pixel metrics are skipped (defective test images without a mask, logged), or None."""
    unmasked = [item for item in files.test if item.label and item.mask is None]
    if not unmasked:
        return None
    defective = sum(item.label for item in files.test)
    count = f"{len(unmasked)} of {defective} defective test images have no ground-truth mask"
    first = unmasked[0].image
    expected = mask_file(first.parents[2], unmasked[0].defect, first)
    log.warning("%s: %s (first: %s, expected %s): pixel metrics are skipped; the image AUROC, AP and curves use "
                "the folder labels (every test image outside test/good is anomalous)", files.category, count, first,
                expected)
    return f"skipped: {count}"


def run_evaluate(cfg: Config, layout: Layout, category: str, seed: int) -> None:
    """Evaluate one trained run of ``category`` on its test set; write metrics, scores, maps and curves."""
    device = resolve_device(cfg.train.device)
    configure_backends(device)
    began = time.perf_counter()
    files = scan_category(layout.images, category, masks_required=SOURCES[cfg.data.source].test_masks)
    pixel_skipped = _masks_missing(files)
    test_set = load_test_set(files, cfg.data.image_size)
    run = TrainedRun.open(layout.run_dir("models", category, seed), expect=cfg)
    rule = run.arch.score_rule(cfg)
    maps = infer_maps(run.detector(device), test_set.images, batch_size=cfg.eval.batch_size, device=device,
                      amp=amp_enabled(device, cfg.train))
    results = evaluate_branches(maps, test_set, cfg.eval, rule, pixel_skipped=pixel_skipped)
    wall = time.perf_counter() - began
    labels = test_set.labels if pixel_skipped is None else test_set.folder_labels

    summary: dict[str, Any] = {
        "category": category,
        "run_seed": seed,
        "variant": run.arch.variant(cfg),
        "n_test": len(test_set.paths),
        "n_anomalous": int(labels.sum()),
        "pixel_level": pixel_skipped is None,
        "teacher": run.arch.teacher_record(cfg),
        "device": device_label(device),
        "wall_time_s": {"training": round(run.wall_time_s, 3), "evaluate": round(wall, 3)},
    }
    for branch in BRANCHES:
        summary[branch] = {k: v for k, v in results[branch].items() if k != "curves"}
    write_json(layout.metrics(category, seed), summary)

    rows = score_table(maps, test_set, rule)
    with atomic_path(layout.scores(category, seed)) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    with atomic_path(layout.maps(category, seed)) as tmp, tmp.open("wb") as fh:
        np.savez_compressed(fh, seg=maps.seg.astype(np.float16), dest=maps.dest.astype(np.float16),
                            masks=test_set.masks, labels=labels, scores=np.array([r["score_seg"] for r in rows]),
                            pixel_level=pixel_skipped is None, paths=np.array([str(p) for p in test_set.paths]))
    _write_curves(layout.plots(category, seed), results)
    seg = results["seg"]
    log.info("evaluate %s seed %d: seg image AUROC %.4f, pixel AP %s, IAP %s (%.1f s)", category, seed,
             seg["image_auroc"], seg.get("pixel_ap", pixel_skipped), seg.get("iap", pixel_skipped), wall)


EVALUATE = StageDef(
    "evaluate", run_evaluate, params=evaluate_params, per_run=True,
    deps=lambda arch: (str(ITEM.images / CATEGORY), *map(run_file, architecture(arch).files)),
    outs=lambda arch: (str(ITEM.maps(CATEGORY, SEED)),),  # type: ignore[arg-type]
    metrics=(str(ITEM.metrics(CATEGORY, SEED)),),  # type: ignore[arg-type]
    plots=lambda arch: (str(ITEM.scores(CATEGORY, SEED)), str(ITEM.plots(CATEGORY, SEED))),  # type: ignore[arg-type]
)
