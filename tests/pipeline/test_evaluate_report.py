"""A user's folder dataset through evaluate and report: categories of their own, masks missing, the figures."""

from __future__ import annotations

import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from pfadseg.config import Config, config_from_dict, read_params
from pfadseg.fsio import read_json
from pfadseg.paths import Layout
from pfadseg.pipeline.acquire_images import acquire_images
from pfadseg.pipeline.acquire_textures import acquire_textures
from pfadseg.pipeline.bank import run_bank
from pfadseg.pipeline.evaluate import EVALUATE
from pfadseg.pipeline.report import run_report
from pfadseg.pipeline.train_seg import TRAIN_SEG
from pfadseg.pipeline.train_student import TRAIN_STUDENT
from pfadseg.report.figures import curve_figure, qualitative_grid
from tests.conftest import REPO, TINY

# One training step per stage on the DeSTSeg baseline with a random teacher: only real stage outputs matter.
ONE_STEP = ("data.textures=procedural", "model.teacher_weights=random", "model.use_aff=false", "model.use_pcar=false",
            "model.use_rcm=false", "train.student.iterations=1", "train.student.batch_size=2",
            "train.seg.iterations=1", "train.seg.batch_size=2", "train.checkpoint_every=100")
# widgets: no masks at all; gadgets: one mask missing; bottle: every mask (a folder category with an MVTec AD name)
CATEGORIES = ("widgets", "gadgets", "bottle")


@dataclass(frozen=True)
class FolderProject:
    cfg: Config
    layout: Layout
    source: Path  # the user's folder (data.root)


def _config(*overrides: str) -> Config:
    return config_from_dict(read_params(REPO / "params.yaml"), [*TINY, *ONE_STEP, *overrides])


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> FolderProject:
    """A folder dataset made of the procedural bottle; widgets trained, its model files copied to the others;
    widgets and bottle evaluated, then the report."""
    root = tmp_path_factory.mktemp("folder_project")
    synthetic = Layout(root / "synthetic")
    acquire_images(_config("data.source=synthetic", "data.categories=[bottle]"), synthetic, progress=False)
    source = root / "mine"
    bottle = synthetic.images / "bottle"
    shutil.copytree(bottle, source / "widgets", ignore=shutil.ignore_patterns("ground_truth"))
    shutil.copytree(bottle, source / "gadgets")
    min(source.glob("gadgets/ground_truth/*/*_mask.png")).unlink()
    shutil.copytree(bottle, source / "bottle")
    cfg = _config("data.source=folder", f"data.root={source}", f"data.categories=[{','.join(CATEGORIES)}]")
    layout = Layout(root / "project")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the random teacher's warning
        acquire_images(cfg, layout, progress=False)
        acquire_textures(cfg, layout, progress=False)
        run_bank(cfg, layout, progress=False)
        TRAIN_STUDENT.invoke(cfg, layout, "widgets", 0, progress=False)
        TRAIN_SEG.invoke(cfg, layout, "widgets", 0, progress=False)
        for category in CATEGORIES[1:]:
            shutil.copytree(layout.run_dir("models", "widgets", 0), layout.run_dir("models", category, 0))
        EVALUATE.invoke(cfg, layout, "widgets", 0)
        EVALUATE.invoke(cfg, layout, "bottle", 0)
        run_report(cfg, layout)
    return FolderProject(cfg, layout, source)


def test_evaluate_without_masks_writes_image_curves_and_its_plots_folder(project: FolderProject) -> None:
    plots = project.layout.plots("widgets", 0)
    assert plots.is_dir(), "dvc.yaml declares plots/<category>/seed<k> as an output"
    curves = [f"{branch}_image_{curve}.csv" for branch in ("dest", "seg") for curve in ("pr", "roc")]
    assert sorted(p.name for p in plots.iterdir()) == curves, "image ROC and PR need no mask"
    metrics = read_json(project.layout.metrics("widgets", 0))
    assert metrics["pixel_level"] is False and metrics["n_anomalous"] == 4
    assert metrics["seg"]["pixel_metrics"] == "skipped: 4 of 4 defective test images have no ground-truth mask"
    assert 0.0 <= metrics["seg"]["image_ap"] <= 1.0 and "pixel_ap" not in metrics["seg"]
    with np.load(project.layout.maps("widgets", 0)) as maps:
        assert int(maps["labels"].sum()) == 4, "without masks the folder labels are the image labels"


def test_a_missing_mask_skips_pixel_metrics_and_the_log_says_what_is_done(
    project: FolderProject, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        EVALUATE.invoke(project.cfg, project.layout, "gadgets", 0)
    assert "gadgets: 1 of 4 defective test images have no ground-truth mask" in caplog.text
    assert "pixel metrics are skipped; the image AUROC, AP and curves use the folder labels" in caplog.text
    assert "the mask label is used" not in caplog.text
    assert read_json(project.layout.metrics("gadgets", 0))["pixel_level"] is False
    assert (project.layout.plots("gadgets", 0) / "seg_image_roc.csv").is_file()


def test_report_has_rows_for_the_categories_that_ran_under_a_banner_naming_the_folder(
    project: FolderProject
) -> None:
    text = (project.layout.reports / "tables.md").read_text()
    lines = text.splitlines()
    assert lines[0] == f"# pfadseg results on your data ({project.source})"
    assert lines[2].startswith(f"> **⚠ YOUR DATA: these numbers come from the folder {project.source}, not MVTec AD")
    assert (f"Pixel metrics skipped, ground-truth masks missing in your data ({project.source}): widgets (4 of 4 "
            "defective test images have no ground-truth mask)") in text
    table1 = text.split("## Table 1")[1].split("## Table 2")[0]
    widgets = next(ln for ln in table1.splitlines() if ln.startswith("| widgets |")).split("|")[2].strip()
    assert widgets == f"{100 * read_json(project.layout.metrics('widgets', 0))['seg']['image_auroc']:.1f}"
    assert "| bottle |" in table1 and "| carpet |" not in table1
    table2 = text.split("## Table 2")[1].split("## Table 3")[0]
    assert next(ln for ln in table2.splitlines() if ln.startswith("| widgets |")).count("no masks") == 2
    assert "Categories run**: 2 of 3 configured (not run: gadgets)" in text
    figures = project.layout.reports / "figures"
    assert {"examples_widgets.png", "examples_bottle.png", "curves.png"} <= {p.name for p in figures.iterdir()}


def test_example_grid_titles_carry_image_scores_and_the_map_has_a_colour_bar(
    project: FolderProject, tmp_path: Path
) -> None:
    maps_file = project.layout.maps("bottle", 0)
    fig = qualitative_grid("bottle", maps_file, project.cfg.data.image_size, 4, tmp_path / "grid.png")
    assert fig is not None and (tmp_path / "grid.png").is_file()
    with np.load(maps_file) as maps:
        scores, labels = maps["scores"], maps["labels"]
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 4 and sum(t.startswith("normal: good/") for t in titles) == 1
    assert all(any(f"score {s:.3f}" in t for s in scores[labels == t.startswith("anomalous")]) for t in titles)
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()] == ["image", "ground truth", "anomaly map"]
    colour_bars = [inset for ax in fig.axes for inset in ax.child_axes]
    assert [bar.get_ylabel() for bar in colour_bars] == ["anomaly map"] and colour_bars[0].get_ylim() == (0.0, 1.0)
    no_masks = qualitative_grid("widgets", project.layout.maps("widgets", 0), project.cfg.data.image_size, 4,
                                tmp_path / "widgets.png")
    assert no_masks is not None and "ground truth" not in [ax.get_ylabel() for ax in no_masks.axes]


def test_roc_and_pr_curves_carry_auroc_and_ap_in_their_legends(project: FolderProject, tmp_path: Path) -> None:
    runs = {c: [read_json(project.layout.metrics(c, 0))] for c in ("widgets", "bottle")}
    fig = curve_figure(project.cfg, project.layout, runs, tmp_path / "curves.png")
    legends = {ax.get_title(): [t.get_text() for t in ax.get_legend().get_texts()] for ax in fig.axes}
    widgets = runs["widgets"][0]["seg"]
    assert legends["image ROC"][0] == f"widgets (AUROC {100 * widgets['image_auroc']:.1f})"
    assert legends["image PR"][0] == f"widgets (AP {100 * widgets['image_ap']:.1f})"
    assert legends["pixel PR"] == [f"bottle (AP {100 * runs['bottle'][0]['seg']['pixel_ap']:.1f})"]
