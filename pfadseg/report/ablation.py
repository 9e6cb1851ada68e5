"""reports/ablation.md: PFADSeg Table 4 (seven switch combinations) from DVC experiments, beside the paper."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from pfadseg.arch.destseg import SWITCHES, Variant
from pfadseg.data.categories import MVTEC_CATEGORIES
from pfadseg.fsio import atomic_path
from pfadseg.report.paper import paper_numbers
from pfadseg.report.tables import (
    FOOTNOTES,
    NO_DELTA_MARK,
    NOT_REPORTED,
    NOT_RUN,
    Provenance,
    Stat,
    render_provenance,
    signed_delta,
)

METRICS = (("image_auroc", "Image AUROC"), ("pixel_ap", "Pixel AP"), ("iap", "IAP"))
ADPS_EXPERIMENT = "adps"  # `dvc exp run -n adps -S model.arch=adps`: ADPS beside the seven rows
ADPS_OVERRIDES = ("model.arch=adps",)
_SWITCH_KEYS = tuple(key.removeprefix("model.") for key in SWITCHES)  # in dvc exp show's params: use_aff, ...
_METRICS_FILE = re.compile(r"(?:^|/)metrics/(?P<category>[^/]+)/seed(?P<seed>\d+)\.json$")


@dataclass(frozen=True)
class AblationRow:
    """One row of Table 4: its number, its :class:`Variant` and the paper's (image AUROC, pixel AP, IAP)."""

    row: int
    variant: Variant
    paper: tuple[float, float, float]

    @property
    def name(self) -> str:
        """Experiment name, e.g. ``ablation-5-rcm-pcar`` (the paper's column order: RCM, AFF, PCAR)."""
        v = self.variant
        parts = [n for n, on in (("rcm", v.rcm), ("aff", v.aff), ("pcar", v.pcar)) if on]
        return f"ablation-{self.row}-{'-'.join(parts) or 'none'}"

    @property
    def overrides(self) -> list[str]:
        """The ``-S`` values that select this row (the architecture too: an ADPS run may precede it)."""
        return ["model.arch=pfadseg", *self.variant.overrides]


def ablation_rows() -> list[AblationRow]:
    """The paper's seven rows (row 1 is the DeSTSeg baseline, row 7 full PFADSeg)."""
    return [AblationRow(r["row"], Variant(aff=r["aff"], pcar=r["pcar"], rcm=r["rcm"]), tuple(r["values"]))
            for r in paper_numbers().ablation]


@dataclass(frozen=True)
class ExperimentResult:
    """A DVC experiment's (or commit's) switches and its per-category metrics JSONs."""

    name: str
    variant: Variant
    runs: dict[str, list[dict[str, Any]]]
    arch: str = "pfadseg"
    rev: str = ""  # the experiment's commit

    @property
    def devices(self) -> list[str]:
        """The devices its evaluations ran on."""
        return sorted({str(r.get("device", "?")) for rs in self.runs.values() for r in rs})


def _entries(exp_show: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for entry in exp_show:
        if entry.get("rev") != "workspace":
            yield entry
        for exp in entry.get("experiments") or []:
            yield from exp.get("revs", [])


def parse_exp_show(exp_show: list[dict[str, Any]]) -> list[ExperimentResult]:
    """Experiments of ``dvc exp show --json`` that carry model switches and per-category metrics."""
    results = []
    for entry in _entries(exp_show):
        data = entry.get("data") or {}
        model = (data.get("params", {}).get("params.yaml", {}).get("data", {}) or {}).get("model", {})
        if not all(isinstance(model.get(s), bool) for s in _SWITCH_KEYS):
            continue
        runs: dict[str, list[dict[str, Any]]] = {}
        for path, metrics in (data.get("metrics") or {}).items():
            if (match := _METRICS_FILE.search(path)) and metrics.get("data"):  # the path names the run's seed
                runs.setdefault(match["category"], []).append({**metrics["data"], "run_seed": int(match["seed"])})
        if runs:
            rev = str(entry.get("rev", "?"))
            results.append(ExperimentResult(entry.get("name") or rev[:7],
                                            Variant(*(model[s] for s in _SWITCH_KEYS)), runs,
                                            str(model.get("arch", "pfadseg")), rev))
    return results


def pick(results: list[ExperimentResult], row: AblationRow) -> ExperimentResult | None:
    """The experiment named after ``row``, else the first pfadseg one with its switches."""
    matching = [r for r in results if r.arch == "pfadseg" and r.variant == row.variant]
    named = [r for r in matching if r.name == row.name]
    return (named or matching or [None])[0]


def pick_adps(results: list[ExperimentResult]) -> ExperimentResult | None:
    """The experiment named ``adps``, else the first ADPS one."""
    matching = [r for r in results if r.arch == "adps"]
    return ([r for r in matching if r.name == ADPS_EXPERIMENT] or matching or [None])[0]


def seg_frame(result: ExperimentResult, metric: str) -> pd.DataFrame:
    """The segmentation branch's ``metric`` per category and training seed, in percent."""
    rows = [(category, int(r["run_seed"]), float(r["seg"][metric]) * 100) for category, rs in result.runs.items()
            for r in rs if r.get("seg", {}).get(metric) is not None]
    return pd.DataFrame(rows, columns=["category", "seed", "value"])


def mean_over_categories(result: ExperimentResult, metric: str) -> Stat | None:
    """Plain mean over categories per training seed, then mean ± sample std of those over seeds, in percent."""
    per_seed = seg_frame(result, metric).groupby("seed")["value"].mean()
    if per_seed.empty:
        return None
    return Stat(float(per_seed.mean()), float(per_seed.std()) if len(per_seed) > 1 else 0.0, len(per_seed))


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``a - b`` over the (category, seed) pairs both ran, with a 95 % t interval (percent points)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        if self.n < 2:
            return f"{self.mean:+.1f} [no interval: 1 pair]".replace("-", "−")
        text = f"{self.mean:+.1f} [{self.low:+.1f}, {self.high:+.1f}]".replace("-", "−")
        return f"**{text}**" if self.excludes_zero else text


def paired_difference(a: ExperimentResult, b: ExperimentResult, metric: str) -> PairedDifference | None:
    """``a − b`` paired over categories × seeds; Student's t interval at 95 % (NaN with one pair, None with none)."""
    pairs = seg_frame(a, metric).merge(seg_frame(b, metric), on=["category", "seed"], suffixes=("_a", "_b"))
    diff = (pairs["value_a"] - pairs["value_b"]).to_numpy()
    if len(diff) < 2:
        return PairedDifference(float(diff[0]), math.nan, math.nan, 1) if len(diff) else None
    half = float(stats.t.ppf(0.975, len(diff) - 1) * stats.sem(diff))  # 0 when every pair differs alike
    return PairedDifference(float(diff.mean()), float(diff.mean()) - half, float(diff.mean()) + half, len(diff))


def _delta(result: ExperimentResult | None, ours: Stat | None, paper: float | None) -> str:
    """ours − paper when ``result`` ran every MVTec AD category (the paper gives only those means), else none."""
    if result and ours and paper is not None and not set(MVTEC_CATEGORIES) <= set(result.runs):
        return NOT_REPORTED + NO_DELTA_MARK
    return signed_delta(ours, paper)


def missing_rows(results: list[ExperimentResult]) -> list[int]:
    """The Table 4 rows no experiment in ``results`` gives."""
    return [v.row for v in ablation_rows() if pick(results, v) is None]


def _experiments_list(results: list[ExperimentResult]) -> list[str]:
    """Provenance of each experiment the tables use: its name, commit, device(s) and runs."""
    used = [found for v in ablation_rows() if (found := pick(results, v))]
    if adps := pick_adps(results):
        used.append(adps)
    lines = ["## Experiments", "", "| Experiment | Revision | Device | Category × seed runs |", "|---|---|---|---|"]
    lines += [f"| {r.name} | {r.rev[:7] or '?'} | {', '.join(r.devices)} | {sum(map(len, r.runs.values()))} |"
              for r in {r.name: r for r in used}.values()]
    return lines


def _differences_table(results: list[ExperimentResult], reference: AblationRow) -> list[str]:
    """Each row against ``reference``: ours with its interval beside the paper's difference."""
    base = pick(results, reference)
    header = "| Row | Experiment | pairs | " + " | ".join(f"{t} Δ ours [95 % CI] | paper Δ" for _, t in METRICS) + " |"
    lines = [header, "|" + "---|" * (3 + 2 * len(METRICS))]
    for row in ablation_rows():
        if row.row == reference.row:
            continue
        found = pick(results, row)
        diffs = [paired_difference(found, base, m) if found and base else None for m, _ in METRICS]
        pairs = max((d.n for d in diffs if d), default=0)
        cells = [str(row.row), found.name if found else NOT_RUN, str(pairs)]
        for diff, (i, _) in zip(diffs, enumerate(METRICS), strict=True):
            cells += [str(diff) if diff else NOT_RUN,
                      f"{row.paper[i] - reference.paper[i]:+.1f}".replace("-", "−")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_ablation(results: list[ExperimentResult], prov: Provenance) -> str:
    """Table 4 layout: our means beside the paper's rows, with signed differences."""
    mark = {True: "✓", False: ""}
    header = "| Row | RCM | AFF | PCAR | Experiment | Categories | " + " | ".join(
        f"{t} ours | paper | Δ" for _, t in METRICS) + " |"
    lines = [*render_provenance(prov, "pfadseg ablation (PFADSeg Table 4)"),
             "Means over the categories each experiment ran, in percent (segmentation branch). The paper's "
             "module sets per row are inferred (its check marks were lost); row 1 is DeSTSeg, row 7 PFADSeg.", "",
             header, "|" + "---|" * (6 + 3 * len(METRICS))]
    for row in ablation_rows():
        found = pick(results, row)
        cells = [str(row.row), mark[row.variant.rcm], mark[row.variant.aff], mark[row.variant.pcar]]
        cells += [found.name, str(len(found.runs))] if found else [NOT_RUN, "0"]
        for (metric, _), paper in zip(METRICS, row.paper, strict=True):
            ours = mean_over_categories(found, metric) if found else None
            cells += [str(ours) if ours else NOT_RUN, f"{paper:.1f}", _delta(found, ours, paper)]
        lines.append("| " + " | ".join(cells) + " |")
    adps = pick_adps(results)
    if adps:
        cells = ["ADPS", "", "", "", adps.name, str(len(adps.runs))]
        for metric, _ in METRICS:
            ours = mean_over_categories(adps, metric)
            reported = paper_numbers().adps_pixel_ap["mvtec_ad"] if metric == "pixel_ap" else None
            cells += [str(ours) if ours else NOT_RUN, f"{reported:.1f}" if reported else NOT_REPORTED,
                      _delta(adps, ours, reported)]
        lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "The ADPS row is `model.arch=adps` (experiment `adps`); its paper states only the mean pixel AP."]
    rows = ablation_rows()
    picked = [found for v in rows if (found := pick(results, v))]
    runs = [(r.variant, category, run["run_seed"]) for r in picked for category, rs in r.runs.items() for run in rs]
    seeds = {seed for _, _, seed in runs}
    students = {(v.aff, v.pcar, category, seed) for v, category, seed in runs}  # AFF and PCAR shape it
    if NO_DELTA_MARK in "\n".join(lines):
        lines += ["", FOOTNOTES[NO_DELTA_MARK]]
    if missing := missing_rows(results):
        lines += ["", f"Rows not run: {', '.join(map(str, missing))} (no experiment with their switches; "
                  "`pfadseg ablate --rows ...` runs them)."]
    lines += ["", f"The {len(picked)} rows found ran {len(runs)} category × seed runs over {len(seeds)} training "
              f"seed(s): {len(students)} students and {len(runs)} segmentation nets (rows that share AFF and PCAR "
              "share their students through DVC's run cache)."]
    lines += ["", "## Are the differences real?", "",
              "Each row minus row 1 (DeSTSeg) and minus row 7 (PFADSeg): the mean of the paired differences over "
              "the categories × training seeds both experiments ran, with Student's t 95 % interval (scipy.stats); "
              "**bold** where the interval excludes zero. Cells give ± the sample std over training seeds of the "
              "category mean. *paper Δ* is the same difference between the paper's rows (no interval given)."]
    if len(seeds) < 2:
        lines += ["", "One training seed: the intervals cover the variation between categories only, not training "
                  "noise (DeSTSeg reports 0.8–1.0 points of seed std per category); add seeds for that."]
    for reference in (rows[0], rows[-1]):
        lines += ["", f"### Against row {reference.row} ({'DeSTSeg' if reference.row == 1 else 'PFADSeg'})", "",
                  *_differences_table(results, reference)]
    lines += ["", *_experiments_list(results)]
    return "\n".join([*lines, ""])


def ablation_chart(results: list[ExperimentResult], path: Path) -> None:
    """Grouped bars per metric: ours and the paper's value for each of the seven rows."""
    rows = ablation_rows()
    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 3.8), squeeze=False)
    x = np.arange(len(rows))
    for ax, (i, (metric, title)) in zip(axes[0], enumerate(METRICS), strict=True):
        found = [pick(results, v) for v in rows]
        ours = [(s.mean if (r and (s := mean_over_categories(r, metric))) else np.nan) for r in found]
        ax.bar(x - 0.2, ours, width=0.4, label="ours")
        ax.bar(x + 0.2, [v.paper[i] for v in rows], width=0.4, label="paper")
        ax.set_xticks(x, [v.name.removeprefix(f"ablation-{v.row}-") for v in rows], rotation=45, ha="right",
                      fontsize=7)
        ax.set_title(title)
    axes[0, 0].legend()
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        fig.savefig(fh, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
