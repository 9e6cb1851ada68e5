"""DVC stage ``evaluate@<category>``: metrics JSON, per-image scores, maps for the figures, curves for plots."""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pfadseg.artifacts import SEG_FORMAT, load_model_file
from pfadseg.config import Config
from pfadseg.data.images import load_test_set
from pfadseg.data.layout import scan_category
from pfadseg.evaluate import BRANCHES, PIXEL_SKIPPED, evaluate_branches, infer_maps, score_rule, score_table
from pfadseg.fsio import atomic_path, write_json
from pfadseg.models.detector import AnomalyDetector
from pfadseg.paths import Layout
from pfadseg.pipeline.train import check_run, load_adps, load_segnet, load_student, load_teacher, teacher_record
from pfadseg.train.loop import configure_backends, resolve_device

log = logging.getLogger(__name__)

EVAL_PARAMS: tuple[str, ...] = ("seed", "data.source", "data.image_size", "model", "train.device", "train.amp",
                                "train.channels_last", "eval")


def load_detector(
    cfg: Config, layout: Layout, category: str, seed: int, device: torch.device
) -> tuple[nn.Module, dict[str, dict[str, Any]]]:
    """The eval-mode detector of one run (teacher, student and seg net, or the ADPS model) and its metadata."""
    if cfg.model.arch == "adps":
        detector, student_meta = load_adps(cfg, layout, category, seed, device)
        seg_meta = load_model_file(layout.seg(category, seed), SEG_FORMAT)["meta"]
        return detector, {"student": student_meta, "seg": seg_meta}
    student, student_meta = load_student(cfg, layout, category, seed, device)
    segnet, seg_meta = load_segnet(cfg, layout, category, seed, device)
    detector = AnomalyDetector(load_teacher(cfg, device), student, segnet).eval()
    return detector, {"student": student_meta, "seg": seg_meta}


def _write_curves(directory: Path, results: dict[str, dict[str, Any]]) -> None:
    for branch, metrics in results.items():
        for name, curve in metrics.get("curves", {}).items():
            columns = list(curve)
            with atomic_path(directory / f"{branch}_{name}.csv") as tmp, tmp.open("w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(columns)
                writer.writerows(zip(*(curve[c] for c in columns), strict=True))


def run_evaluate(cfg: Config, layout: Layout, category: str, seed: int) -> None:
    """Evaluate one trained run of ``category`` on its test set; write metrics, scores, maps and curves."""
    check_run(cfg, category, seed)
    device = resolve_device(cfg.train.device)
    configure_backends(device)
    began = time.perf_counter()
    files = scan_category(layout.images, category, masks_required=cfg.data.source != "folder")
    pixel_level = all(item.mask is not None for item in files.test if item.label)
    test_set = load_test_set(files, cfg.data.image_size)
    detector, meta = load_detector(cfg, layout, category, seed, device)
    maps = infer_maps(detector, test_set.images, batch_size=cfg.eval.batch_size, device=device, amp=cfg.train.amp)
    results = evaluate_branches(maps, test_set, cfg.eval, score_rule(cfg), pixel_level=pixel_level)
    wall = time.perf_counter() - began

    summary: dict[str, Any] = {
        "category": category,
        "run_seed": seed,
        "variant": cfg.model.variant,
        "n_test": len(test_set.paths),
        "n_anomalous": int((test_set.labels if pixel_level else test_set.folder_labels).sum()),
        "pixel_level": pixel_level,
        "teacher": teacher_record(cfg),
        "device": str(device),
        "wall_time_s": {"student": round(meta["student"]["wall_time_s"], 3),
                        "seg": round(meta["seg"]["wall_time_s"], 3), "evaluate": round(wall, 3)},
    }
    for branch in BRANCHES:
        summary[branch] = {k: v for k, v in results[branch].items() if k != "curves"}
    write_json(layout.metrics(category, seed), summary)

    rows = score_table(maps, test_set, score_rule(cfg))
    with atomic_path(layout.scores(category, seed)) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    with atomic_path(layout.maps(category, seed)) as tmp, tmp.open("wb") as fh:
        np.savez_compressed(fh, seg=maps.seg.astype(np.float16), dest=maps.dest.astype(np.float16),
                            masks=test_set.masks, paths=np.array([str(p) for p in test_set.paths]))
    _write_curves(layout.plots(category, seed), results)
    seg = results["seg"]
    log.info("evaluate %s seed %d: seg image AUROC %.4f, pixel AP %s, IAP %s (%.1f s)", category, seed,
             seg["image_auroc"], seg.get("pixel_ap", PIXEL_SKIPPED), seg.get("iap", PIXEL_SKIPPED), wall)
