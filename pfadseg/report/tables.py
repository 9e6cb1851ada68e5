"""reports/tables.md: the paper's Tables 1-3 with our numbers beside the papers', plus provenance."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pfadseg.data.categories import KSDD2_CATEGORY
from pfadseg.report.paper import PaperNumbers, paper_numbers

NOT_RUN = "not run"
NOT_REPORTED = "–"


@dataclass(frozen=True)
class Provenance:
    """Where the numbers come from; ``warnings`` are shown prominently at the top of every report."""

    lines: dict[str, str]
    warnings: list[str] = field(default_factory=list)


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


def _group_stat(per_cat: dict[str, Stat | None], cats: Sequence[str]) -> tuple[Stat | None, int]:
    """Plain mean over the categories that were run (as the papers average); std of that mean over seeds."""
    stats = [per_cat[c] for c in cats if per_cat.get(c) is not None]
    if not stats:
        return None, 0
    mean = float(np.mean([s.mean for s in stats]))
    std = float(np.sqrt(np.mean([s.std**2 for s in stats]) / len(stats))) if min(s.n for s in stats) > 1 else 0.0
    return Stat(mean, std, min(s.n for s in stats)), len(stats)


def signed_delta(ours: Stat | None, paper: float | None) -> str:
    """``ours − paper`` with a real minus sign; a dash when either number is missing."""
    if ours is None or paper is None or math.isnan(ours.mean):
        return NOT_REPORTED
    return f"{ours.mean - paper:+.1f}".replace("-", "−")


def _paper(value: float | None) -> str:
    return NOT_REPORTED if value is None else f"{value:.1f}"


def _row_label(key: str, count: int, total: int) -> str:
    names = {"texture_mean": "**Texture mean**", "object_mean": "**Object mean**", "mean": "**Mean**"}
    label = names.get(key, key)
    return label if key not in names or count in (0, total) else f"{label} ({count} of {total} run)"


def _rows(paper: PaperNumbers) -> list[tuple[str, tuple[str, ...]]]:
    """Row keys in the paper's order, each with the categories it averages over."""
    rows: list[tuple[str, tuple[str, ...]]] = [(c, (c,)) for c in paper.texture]
    rows.append(("texture_mean", paper.texture))
    rows += [(c, (c,)) for c in paper.object]
    rows.append(("object_mean", paper.object))
    rows.append(("mean", paper.texture + paper.object))
    return rows


def _stats_by_row(runs: dict[str, list[dict[str, Any]]], branch: str, metric: str,
                  paper: PaperNumbers) -> dict[str, tuple[Stat | None, int]]:
    found = category_stats(runs, branch, metric)
    per_cat = {c: found.get(c) for c in paper.texture + paper.object}
    out: dict[str, tuple[Stat | None, int]] = {}
    for key, cats in _rows(paper):
        out[key] = (per_cat[key], int(per_cat[key] is not None)) if len(cats) == 1 and key in per_cat \
            else _group_stat(per_cat, cats)
    return out


def _paired_table(runs: dict[str, list[dict[str, Any]]], table: str, metrics: Sequence[tuple[str, str]],
                  paper: PaperNumbers) -> list[str]:
    """Ours beside PFADSeg and DeSTSeg per category; pixel AP also beside ADPS's reported MVTec mean."""
    header = ["Category"]
    for metric, title in metrics:
        header += [f"{title} ours", "PFADSeg", "Δ", "DeSTSeg", "Δ"]
        header += ["ADPS (mean only)", "Δ"] if metric == "pixel_ap" else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    stats = {m: _stats_by_row(runs, "seg", m, paper) for m, _ in metrics}
    for key, cats in _rows(paper):
        cells = [_row_label(key, stats[metrics[0][0]][key][1], len(cats))]
        for metric, _ in metrics:
            ours, _count = stats[metric][key]
            pf = paper.value(table, "PFADSeg", key, metric)
            ds = paper.value(table, "DeSTSeg", key, metric)
            cells += [str(ours) if ours else NOT_RUN, _paper(pf), signed_delta(ours, pf), _paper(ds),
                      signed_delta(ours, ds)]
            if metric == "pixel_ap":
                adps = paper.adps_pixel_ap["mvtec_ad"] if key == "mean" else None
                cells += [_paper(adps), signed_delta(ours, adps)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


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


def _image_table(runs: dict[str, list[dict[str, Any]]], paper: PaperNumbers) -> list[str]:
    stats = _stats_by_row(runs, "seg", "image_auroc", paper)
    lines = ["| Category | Image AUROC ours | PFADSeg (mean only) | Δ | DeSTSeg (mean only) | Δ |",
             "|---|---|---|---|---|---|"]
    for key, cats in _rows(paper):
        ours, count = stats[key]
        pf = paper.image_auroc_mean["PFADSeg"] if key == "mean" else None
        ds = paper.image_auroc_mean["DeSTSeg"] if key == "mean" else None
        cells = [_row_label(key, count, len(cats)), str(ours) if ours else NOT_RUN, _paper(pf),
                 signed_delta(ours, pf), _paper(ds), signed_delta(ours, ds)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _extra_table(runs: dict[str, list[dict[str, Any]]], paper: PaperNumbers) -> list[str]:
    columns = [("seg", "aupro", "AUPRO@0.3 (seg)"), ("dest", "image_auroc", "Image AUROC (DeST)"),
               ("dest", "pixel_ap", "Pixel AP (DeST)"), ("dest", "iap", "IAP (DeST)"),
               ("dest", "aupro", "AUPRO@0.3 (DeST)")]
    stats = {(b, m): _stats_by_row(runs, b, m, paper) for b, m, _ in columns}
    lines = ["| Category | " + " | ".join(t for _, _, t in columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for key, cats in _rows(paper):
        count = stats[("seg", "aupro")][key][1]
        cells = [str(stats[(b, m)][key][0]) if stats[(b, m)][key][0] else NOT_RUN for b, m, _ in columns]
        lines.append(f"| {_row_label(key, count, len(cats))} | " + " | ".join(cells) + " |")
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
    """The whole tables.md: ``runs`` maps category -> the metrics JSONs of its seeds (missing = not run)."""
    paper = paper_numbers()
    lines = render_provenance(prov, "pfadseg results on MVTec AD")
    lines += [
        "Numbers are percentages. *ours* is the mean (± sample std over training seeds when several ran) of "
        "the segmentation branch; PFADSeg and DeSTSeg columns are PFADSeg's Tables 2-3 (its DeSTSeg column "
        "is the PFADSeg authors' re-run); Δ = ours − paper. Group means average the categories that ran.",
        "",
        "## Table 1: image AUROC",
        "",
        *_image_table(runs, paper),
        "",
        "Per-category image AUROC is not available in text form for either paper; only the means are.",
        "",
        "## Table 2: pixel AUROC and pixel AP (step-wise average precision)",
        "",
        *_paired_table(runs, "pixel", [("pixel_auroc", "Pixel AUROC"), ("pixel_ap", "Pixel AP")], paper),
        "",
        "## Table 3: IAP and IAP@90 (DeSTSeg definition)",
        "",
        *_paired_table(runs, "instance", [("iap", "IAP"), ("iap90", "IAP@90")], paper),
        "",
        f"## Extra: AUPRO (mode: {_aupro_mode(runs)}, FPR limit 0.3) and the DeST branch",
        "",
        *_extra_table(runs, paper),
        "",
    ]
    if KSDD2_CATEGORY in runs:
        lines += ["## KolektorSDD2", "", *_ksdd2_table(runs[KSDD2_CATEGORY], paper), "",
                  "ADPS reports only the pixel AP on KolektorSDD2 in text form (its Table IV did not extract).", ""]
    return "\n".join(lines)
