"""reports/tables.md: the paper's Tables 1-3 with our numbers beside the papers', plus provenance.

Rows are the categories that ran: MVTec AD ones in the paper's order with their group means (and the papers'
numbers beside them), then any others (a folder's own categories) without paper columns.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pfadseg.data.categories import KSDD2_CATEGORY
from pfadseg.report.paper import PaperNumbers, paper_numbers

NOT_RUN = "not run"
NOT_REPORTED = "–"
NO_MASKS = "no masks"  # the categories ran without ground-truth masks: their pixel metrics were skipped
OTHER_MEAN = "other_mean"  # the mean row of the categories the papers do not have
SUBSET_MARK = "†"
NO_DELTA_MARK = "‡"
FOOTNOTES = {
    SUBSET_MARK: f"{SUBSET_MARK} The paper's mean over the same categories as ours (from its per-category "
                 "numbers), not its reported mean over all of them, so that Δ compares like with like.",
    NO_DELTA_MARK: f"{NO_DELTA_MARK} No Δ: the paper reports only its mean over all 15 categories, which a mean over "
                   "fewer categories cannot be compared with.",
}


@dataclass(frozen=True)
class Provenance:
    """Where the numbers come from; ``warnings`` are shown prominently at the top of every report."""

    lines: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    dataset: str = "MVTec AD"  # what the numbers were measured on: the report's title


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (in percent) over ``n`` training seeds."""

    mean: float
    std: float
    n: int

    def __str__(self) -> str:
        if math.isnan(self.mean):
            return "n/a"
        return f"{self.mean:.1f}" if self.n < 2 else f"{self.mean:.1f} ± {self.std:.1f}"


def metric_frame(runs: Mapping[str, Sequence[dict[str, Any]]], branch: str, metric: str) -> pd.DataFrame:
    """One row per run that has ``branch``/``metric``: its category and the value in percent."""
    rows = [(category, float(r[branch][metric]) * 100) for category, rs in runs.items() for r in rs
            if r.get(branch, {}).get(metric) is not None]
    return pd.DataFrame(rows, columns=["category", "value"])


def category_stats(runs: Mapping[str, Sequence[dict[str, Any]]], branch: str, metric: str) -> dict[str, Stat]:
    """Per category: mean ± sample std over its runs, in percent (categories without a value are left out)."""
    table = metric_frame(runs, branch, metric).groupby("category", sort=False)["value"].agg(["mean", "std", "count"])
    return {str(c): Stat(float(row["mean"]), 0.0 if row["count"] < 2 else float(row["std"]), int(row["count"]))
            for c, row in table.iterrows()}


def aggregate(runs: Sequence[dict[str, Any]], branch: str, metric: str) -> Stat | None:
    """Mean ± std over runs of ``runs[i][branch][metric]`` (fractions -> percent); None without runs."""
    return category_stats({"runs": runs}, branch, metric).get("runs")


def _group_stat(per_cat: Mapping[str, Stat], cats: Sequence[str]) -> Stat | None:
    """Plain mean over ``cats`` (as the papers average); std of that mean over seeds; None without ``cats``."""
    stats = [per_cat[c] for c in cats]
    if not stats:
        return None
    mean = float(np.mean([s.mean for s in stats]))
    std = float(np.sqrt(np.mean([s.std**2 for s in stats]) / len(stats))) if min(s.n for s in stats) > 1 else 0.0
    return Stat(mean, std, min(s.n for s in stats))


def signed_delta(ours: Stat | None, paper: float | None) -> str:
    """``ours − paper`` with a real minus sign; a dash when either number is missing."""
    if ours is None or paper is None or math.isnan(ours.mean):
        return NOT_REPORTED
    return f"{ours.mean - paper:+.1f}".replace("-", "−")


def _paper(value: float | None) -> str:
    return NOT_REPORTED if value is None else f"{value:.1f}"


@dataclass(frozen=True)
class Row:
    """A table row: one category that ran, or a mean over some of them."""

    key: str  # the category, a group of the paper (``GROUPS``) or ``OTHER_MEAN``
    categories: tuple[str, ...]  # the categories that ran which it covers
    total: int  # the categories of its group in the paper (1 for a category row)
    in_paper: bool  # an MVTec AD category or group, which the papers report


def table_rows(paper: PaperNumbers, ran: Collection[str]) -> list[Row]:
    """MVTec AD categories that ran in the paper's order with their group means, then the other categories
    (KolektorSDD2 has its own section) with their mean when there are several."""
    rows: list[Row] = []
    for group, cats in (("texture_mean", paper.texture), ("object_mean", paper.object)):
        found = tuple(c for c in cats if c in ran)
        rows += [Row(c, (c,), 1, True) for c in found]
        rows += [Row(group, found, len(cats), True)] if found else []
    mvtec = paper.texture + paper.object
    if found := tuple(c for c in mvtec if c in ran):
        rows.append(Row("mean", found, len(mvtec), True))
    others = tuple(c for c in ran if c not in mvtec and c != KSDD2_CATEGORY)
    rows += [Row(c, (c,), 1, False) for c in others]
    rows += [Row(OTHER_MEAN, others, len(others), False)] if len(others) > 1 else []
    return rows


def _row_label(row: Row, count: int, rows: Sequence[Row]) -> str:
    names = {"texture_mean": "**Texture mean**", "object_mean": "**Object mean**", "mean": "**Mean**",
             OTHER_MEAN: "**Mean, other categories**" if any(r.in_paper for r in rows) else "**Mean**"}
    if row.key not in names:
        return row.key
    return names[row.key] if count in (0, row.total) else f"{names[row.key]} ({count} of {row.total} categories)"


def _ours(per_cat: dict[str, Stat], row: Row) -> tuple[Stat | None, tuple[str, ...]]:
    """Our number of a row and the categories it averages (those of the row that have the metric)."""
    have = tuple(c for c in row.categories if c in per_cat)
    return _group_stat(per_cat, have), have


def _ours_cell(ours: Stat | None) -> str:
    return str(ours) if ours else NO_MASKS


def _paper_value(paper: PaperNumbers, table: str, method: str, metric: str, row: Row,
                 have: tuple[str, ...]) -> tuple[float | None, str]:
    """The paper's number for a row and its mark: the reported one for a category or a complete group, else the
    mean of its per-category numbers over the same categories as ours (``SUBSET_MARK``)."""
    cats = have or row.categories
    if not row.in_paper:
        return None, ""
    if len(cats) == row.total:
        return paper.value(table, method, row.key, metric), ""
    values = [paper.value(table, method, c, metric) for c in cats]
    if any(v is None for v in values):
        return None, ""
    return float(np.mean(values)), SUBSET_MARK  # type: ignore[arg-type]


def _mean_only(reported: float, row: Row, ours: Stat | None, have: tuple[str, ...]) -> list[str]:
    """Paper and Δ cells of a number reported only as the mean over all categories: on the mean row, with a Δ
    only when every category ran."""
    if row.key != "mean":
        return [NOT_REPORTED, NOT_REPORTED]
    if len(have) < row.total:
        return [_paper(reported), NOT_REPORTED + NO_DELTA_MARK]
    return [_paper(reported), signed_delta(ours, reported)]


def _with_footnotes(lines: list[str]) -> list[str]:
    """A table followed by the footnotes of the marks it uses."""
    notes = [note for mark, note in FOOTNOTES.items() if any(mark in line for line in lines)]
    return [*lines, *(["", *notes] if notes else [])]


def _paired_table(runs: dict[str, list[dict[str, Any]]], table: str, metrics: Sequence[tuple[str, str]],
                  paper: PaperNumbers, rows: Sequence[Row]) -> list[str]:
    """Ours beside PFADSeg and DeSTSeg per row; pixel AP also beside ADPS's reported MVTec mean."""
    with_paper = any(r.in_paper for r in rows)
    header = ["Category"]
    for metric, title in metrics:
        header.append(f"{title} ours")
        header += ["PFADSeg", "Δ", "DeSTSeg", "Δ"] if with_paper else []
        header += ["ADPS (mean only)", "Δ"] if with_paper and metric == "pixel_ap" else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    per_cat = {m: category_stats(runs, "seg", m) for m, _ in metrics}
    for row in rows:
        cells = [_row_label(row, len(_ours(per_cat[metrics[0][0]], row)[1]), rows)]
        for metric, _ in metrics:
            ours, have = _ours(per_cat[metric], row)
            cells.append(_ours_cell(ours))
            if not with_paper:
                continue
            for method in ("PFADSeg", "DeSTSeg"):
                value, mark = _paper_value(paper, table, method, metric, row, have)
                cells += [_paper(value) + mark, signed_delta(ours, value)]
            if metric == "pixel_ap":
                cells += _mean_only(paper.adps_pixel_ap["mvtec_ad"], row, ours, have)
        lines.append("| " + " | ".join(cells) + " |")
    return _with_footnotes(lines)


def _ksdd2_table(runs: list[dict[str, Any]], paper: PaperNumbers) -> list[str]:
    """KolektorSDD2: our metrics (segmentation branch) beside ADPS's reported pixel AP."""
    metrics = (("image_auroc", "Image AUROC"), ("pixel_auroc", "Pixel AUROC"), ("pixel_ap", "Pixel AP"),
               ("aupro", "AUPRO@0.3"), ("iap", "IAP"))
    lines = ["| Metric | ours | ADPS (reported) | Δ |", "|---|---|---|---|"]
    for metric, title in metrics:
        ours = aggregate(runs, "seg", metric)
        reported = paper.adps_pixel_ap["kolektorsdd2"] if metric == "pixel_ap" else None
        lines.append(f"| {title} | {ours if ours else NOT_RUN} | {_paper(reported)} | {signed_delta(ours, reported)} |")
    return lines


def _image_table(runs: dict[str, list[dict[str, Any]]], paper: PaperNumbers, rows: Sequence[Row]) -> list[str]:
    with_paper = any(r.in_paper for r in rows)
    header = ["Category", "Image AUROC ours"]
    header += ["PFADSeg (mean only)", "Δ", "DeSTSeg (mean only)", "Δ"] if with_paper else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    per_cat = category_stats(runs, "seg", "image_auroc")
    for row in rows:
        ours, have = _ours(per_cat, row)
        cells = [_row_label(row, len(have), rows), _ours_cell(ours)]
        if with_paper:
            for method in ("PFADSeg", "DeSTSeg"):
                cells += _mean_only(paper.image_auroc_mean[method], row, ours, have)
        lines.append("| " + " | ".join(cells) + " |")
    return _with_footnotes(lines)


def _extra_table(runs: dict[str, list[dict[str, Any]]], rows: Sequence[Row]) -> list[str]:
    columns = [("seg", "image_ap", "Image AP (seg)"), ("seg", "aupro", "AUPRO@0.3 (seg)"),
               ("dest", "image_auroc", "Image AUROC (DeST)"), ("dest", "pixel_ap", "Pixel AP (DeST)"),
               ("dest", "iap", "IAP (DeST)"), ("dest", "aupro", "AUPRO@0.3 (DeST)")]
    per_cat = {(b, m): category_stats(runs, b, m) for b, m, _ in columns}
    lines = ["| Category | " + " | ".join(t for _, _, t in columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for row in rows:
        count = len(_ours(per_cat[("seg", "image_ap")], row)[1])
        cells = [_ours_cell(_ours(per_cat[(b, m)], row)[0]) for b, m, _ in columns]
        lines.append(f"| {_row_label(row, count, rows)} | " + " | ".join(cells) + " |")
    return lines


def _aupro_mode(runs: dict[str, list[dict[str, Any]]]) -> str:
    modes = {r["seg"].get("aupro_mode") for rs in runs.values() for r in rs}
    return ", ".join(sorted(m for m in modes if m)) or "n/a"


def render_provenance(prov: Provenance, title: str) -> list[str]:
    """Title, warnings (as a block quote that cannot be missed) and the provenance list."""
    lines = [f"# {title}", ""]
    for warning in prov.warnings:
        lines += [f"> **⚠ {warning}**", ">"]
    if prov.warnings:
        lines[-1] = ""
    lines += [f"- **{k}**: {v}" for k, v in prov.lines.items()]
    return [*lines, ""]


def render_tables(runs: dict[str, list[dict[str, Any]]], prov: Provenance) -> str:
    """The whole tables.md: ``runs`` maps each category that ran to the metrics JSONs of its seeds."""
    paper = paper_numbers()
    rows = table_rows(paper, runs)
    lines = render_provenance(prov, f"pfadseg results on {prov.dataset}")
    if not runs:
        return "\n".join([*lines, "No category has run yet.", ""])
    if rows:
        lines += [
            "Numbers are percentages. *ours* is the mean (± sample std over training seeds when several ran) of "
            "the segmentation branch; PFADSeg and DeSTSeg columns are PFADSeg's Tables 2-3 (its DeSTSeg column "
            "is the PFADSeg authors' re-run), shown for MVTec AD categories only; Δ = ours − paper. Rows are the "
            f"categories that ran; group means average them. *{NO_MASKS}*: pixel metrics skipped, ground-truth "
            "masks missing (see the warning above).",
            "",
            "## Table 1: image AUROC",
            "",
            *_image_table(runs, paper, rows),
            "",
            *(["Per-category image AUROC is not available in text form for either paper; only the means are.", ""]
              if any(r.in_paper for r in rows) else []),
            "## Table 2: pixel AUROC and pixel AP (step-wise average precision)",
            "",
            *_paired_table(runs, "pixel", [("pixel_auroc", "Pixel AUROC"), ("pixel_ap", "Pixel AP")], paper, rows),
            "",
            "## Table 3: IAP and IAP@90 (DeSTSeg definition)",
            "",
            *_paired_table(runs, "instance", [("iap", "IAP"), ("iap90", "IAP@90")], paper, rows),
            "",
            f"## Extra: image AP, AUPRO (mode: {_aupro_mode(runs)}, FPR limit 0.3) and the DeST branch",
            "",
            *_extra_table(runs, rows),
            "",
        ]
    if KSDD2_CATEGORY in runs:
        lines += ["## KolektorSDD2", "", *_ksdd2_table(runs[KSDD2_CATEGORY], paper), "",
                  "ADPS reports only the pixel AP on KolektorSDD2 in text form (its Table IV did not extract).", ""]
    return "\n".join(lines)
