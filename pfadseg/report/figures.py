"""reports/figures/: qualitative grids (PFADSeg Fig. 5 layout), ROC / PR curves and training curves."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from pfadseg.arch.registry import architecture
from pfadseg.config import Config
from pfadseg.data.images import load_image
from pfadseg.fsio import atomic_path
from pfadseg.paths import Layout

log = logging.getLogger(__name__)

# curve file stem -> (x column, y column, axis labels)
CURVES = {
    "image_roc": ("fpr", "tpr", "image FPR", "image TPR"),
    "pixel_pr": ("recall", "precision", "pixel recall", "pixel precision"),
}


def _save(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        fig.savefig(fh, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _read_columns(path: Path) -> dict[str, np.ndarray]:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    data = np.asarray(rows[1:], dtype=np.float64).reshape(-1, len(rows[0]))
    return {name: data[:, i] for i, name in enumerate(rows[0])}


def example_indices(labels: np.ndarray, scores: np.ndarray, count: int) -> np.ndarray:
    """``count`` anomalous images spread over the score ranking (best to worst), deterministic."""
    anomalous = np.flatnonzero(labels)
    if anomalous.size == 0:
        return anomalous
    ranked = anomalous[np.argsort(-scores[anomalous], kind="stable")]
    picks = np.unique(np.linspace(0, ranked.size - 1, min(count, ranked.size)).round().astype(int))
    return ranked[picks]


def qualitative_grid(category: str, maps_file: Path, image_size: int, count: int, path: Path) -> None:
    """Rows: image, ground truth, heatmap overlay; one column per example (paper Fig. 5 layout)."""
    with np.load(maps_file) as data:
        seg, masks, paths = data["seg"].astype(np.float32), data["masks"], data["paths"]
    labels = masks.reshape(len(masks), -1).any(axis=1)
    picks = example_indices(labels, seg.reshape(len(seg), -1).max(axis=1), count)
    if picks.size == 0:
        return
    fig, axes = plt.subplots(3, picks.size, figsize=(2.2 * picks.size, 6.6), squeeze=False)
    for col, idx in enumerate(picks):
        image = load_image(Path(str(paths[idx])), image_size)
        axes[0, col].imshow(image)
        axes[1, col].imshow(image)
        axes[1, col].contour(masks[idx], levels=[0.5], colors="red", linewidths=1.0)
        axes[2, col].imshow(image)
        axes[2, col].imshow(seg[idx], cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
        axes[0, col].set_title(Path(str(paths[idx])).parent.name + "/" + Path(str(paths[idx])).stem, fontsize=8)
    for row, name in enumerate(("image", "ground truth", "anomaly map")):
        axes[row, 0].set_ylabel(name)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(category)
    _save(fig, path)


def curve_figure(cfg: Config, layout: Layout, runs: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Image ROC and pixel PR curves of the segmentation branch, one line per category (first seed)."""
    fig, axes = plt.subplots(1, len(CURVES), figsize=(5.5 * len(CURVES), 4.5), squeeze=False)
    for ax, (stem, (x, y, xlabel, ylabel)) in zip(axes[0], CURVES.items(), strict=True):
        for category in runs:
            file = layout.plots(category, cfg.seeds[0]) / f"seg_{stem}.csv"
            if file.is_file():
                cols = _read_columns(file)
                ax.plot(cols[x], cols[y], label=category, linewidth=1)
        ax.set(xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, ncol=2)
    _save(fig, path)


def training_curves(cfg: Config, layout: Layout, runs: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """The training stages' losses per category from the dvclive logs (first seed)."""
    stages = architecture(cfg.model.arch).curves
    fig, axes = plt.subplots(1, len(stages), figsize=(5.5 * len(stages), 4), squeeze=False)
    for ax, stage in zip(axes[0], stages, strict=True):
        for category in runs:
            file = layout.live(category, cfg.seeds[0], stage) / "plots" / "metrics" / stage / "loss.tsv"
            if file.is_file():
                with file.open(newline="") as fh:
                    rows = list(csv.DictReader(fh, delimiter="\t"))
                ax.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows], label=category, lw=1)
        ax.set(title=f"{stage} loss", xlabel="iteration", yscale="log")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, ncol=2)
    _save(fig, path)


def render_figures(cfg: Config, layout: Layout, runs: dict[str, list[dict[str, Any]]]) -> None:
    """Every figure of the report into reports/figures/."""
    out = layout.reports / "figures"
    for category in runs:
        maps_file = layout.maps(category, cfg.seeds[0])
        if maps_file.is_file():
            qualitative_grid(category, maps_file, cfg.data.image_size, cfg.report.figure_examples,
                             out / f"examples_{category}.png")
    if runs:
        curve_figure(cfg, layout, runs, out / "curves.png")
        training_curves(cfg, layout, runs, out / "training.png")
