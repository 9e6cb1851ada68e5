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

# curve file stem -> (x column, y column, panel title, the metric in its legend, its name there)
CURVES = {
    "image_roc": ("fpr", "tpr", "image ROC", "image_auroc", "AUROC"),
    "image_pr": ("recall", "precision", "image PR", "image_ap", "AP"),
    "pixel_pr": ("recall", "precision", "pixel PR", "pixel_ap", "AP"),
}
AXIS_LABELS = {"fpr": "FPR", "tpr": "TPR", "recall": "recall", "precision": "precision"}


def _save(fig: plt.Figure, path: Path) -> plt.Figure:
    """Write ``fig`` as PNG and release it from pyplot; the returned figure stays inspectable."""
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        fig.savefig(fh, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return fig


def _read_columns(path: Path) -> dict[str, np.ndarray]:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    data = np.asarray(rows[1:], dtype=np.float64).reshape(-1, len(rows[0]))
    return {name: data[:, i] for i, name in enumerate(rows[0])}


def example_indices(labels: np.ndarray, scores: np.ndarray, count: int) -> np.ndarray:
    """``count`` images with ``labels`` True spread over their score ranking (highest to lowest), deterministic."""
    chosen = np.flatnonzero(labels)
    if chosen.size == 0 or count < 1:
        return chosen[:0]
    ranked = chosen[np.argsort(-scores[chosen], kind="stable")]
    picks = np.unique(np.linspace(0, ranked.size - 1, min(count, ranked.size)).round().astype(int))
    return ranked[picks]


def qualitative_grid(category: str, maps_file: Path, image_size: int, count: int, path: Path) -> plt.Figure | None:
    """Columns: about a third normal, the rest anomalous test images (``count`` in all), each titled with its image
    score; rows: image, ground truth (when the category has masks), segmentation map with a colour bar (paper Fig. 5
    layout). None when the test set is empty."""
    with np.load(maps_file) as data:
        seg, masks, labels, scores = data["seg"].astype(np.float32), data["masks"], data["labels"], data["scores"]
        paths, pixel_level = data["paths"], bool(data["pixel_level"])
    n_normal = round(count / 3)
    picks = np.concatenate([example_indices(~labels, scores, n_normal),
                            example_indices(labels, scores, count - n_normal)])
    if picks.size == 0:
        return None
    rows = ("image", "ground truth", "anomaly map") if pixel_level else ("image", "anomaly map")
    fig, axes = plt.subplots(len(rows), picks.size, figsize=(2.2 * picks.size + 0.8, 2.2 * len(rows) + 0.4),
                             squeeze=False, layout="constrained")
    for col, idx in enumerate(picks):
        file = Path(str(paths[idx]))
        image = load_image(file, image_size)
        for row in range(len(rows)):
            axes[row, col].imshow(image)
        if pixel_level:
            axes[1, col].contour(masks[idx], levels=[0.5], colors="red", linewidths=1.0)
        heat = axes[-1, col].imshow(seg[idx], cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
        kind = "anomalous" if labels[idx] else "normal"
        axes[0, col].set_title(f"{kind}: {file.parent.name}/{file.stem}\nscore {scores[idx]:.3f}", fontsize=8,
                               color="tab:red" if labels[idx] else "tab:green")
    for row, name in enumerate(rows):
        axes[row, 0].set_ylabel(name)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(heat, cax=axes[-1, -1].inset_axes((1.05, 0.0, 0.07, 1.0)), label="anomaly map")
    fig.suptitle(f"{category} (image score per column; red contour: ground truth)" if pixel_level
                 else f"{category} (image score per column; no ground-truth masks)")
    return _save(fig, path)


def _seed_metrics(runs: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """The metrics of the run with training seed ``seed`` (empty if it did not run)."""
    return next((r for r in runs if r.get("run_seed") == seed), {})


def curve_figure(cfg: Config, layout: Layout, runs: dict[str, list[dict[str, Any]]], path: Path) -> plt.Figure:
    """Image ROC, image PR and pixel PR curves of the segmentation branch, one line per category (first seed),
    each labelled with its AUROC or AP; the pixel panel only when some category has masks."""
    seed = cfg.seeds[0]
    stems = [stem for stem in CURVES if any((layout.plots(c, seed) / f"seg_{stem}.csv").is_file() for c in runs)]
    fig, axes = plt.subplots(1, max(len(stems), 1), figsize=(5.5 * max(len(stems), 1), 4.5), squeeze=False)
    for ax, stem in zip(axes[0], stems, strict=False):
        x, y, title, metric, name = CURVES[stem]
        for category, category_runs in runs.items():
            file = layout.plots(category, seed) / f"seg_{stem}.csv"
            if file.is_file():
                cols = _read_columns(file)
                value = _seed_metrics(category_runs, seed).get("seg", {}).get(metric)
                label = category if value is None else f"{category} ({name} {100 * value:.1f})"
                ax.plot(cols[x], cols[y], label=label, linewidth=1)
        ax.set(title=title, xlabel=AXIS_LABELS[x], ylabel=AXIS_LABELS[y], xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right" if stem == "image_roc" else "lower left")
    return _save(fig, path)


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
