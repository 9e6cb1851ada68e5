"""The papers' reported numbers (PFADSeg Tables 2-4, DeSTSeg Tables 2-3, ADPS means), as data."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

GROUPS = ("texture_mean", "object_mean", "mean")


@dataclass(frozen=True)
class PaperNumbers:
    """Per-method, per-category values in percent; ``None`` where a paper does not report one."""

    texture: tuple[str, ...]
    object: tuple[str, ...]
    tables: dict[str, dict[str, dict[str, dict[str, float | None]]]]  # table -> method -> category -> metric
    image_auroc_mean: dict[str, float]
    ablation: list[dict[str, Any]]
    destseg_paper: dict[str, dict[str, tuple[float, float]]]  # category -> metric -> (mean, std)
    adps_pixel_ap: dict[str, float]  # dataset (mvtec_ad, kolektorsdd2) -> ADPS's reported mean pixel AP

    def value(self, table: str, method: str, category: str, metric: str) -> float | None:
        """One reported number, or None when the paper gives none."""
        return self.tables[table][method].get(category, {}).get(metric)


def _table(raw: dict[str, Any]) -> dict[str, dict[str, dict[str, float | None]]]:
    metrics = raw["metrics"]
    return {method: {cat: dict(zip(metrics, pair, strict=True)) for cat, pair in per_cat.items()}
            for method, per_cat in raw["methods"].items()}


@cache
def paper_numbers() -> PaperNumbers:
    """Load ``paper_results.yaml`` shipped with the package."""
    raw = yaml.safe_load(resources.files("pfadseg.report").joinpath("paper_results.yaml").read_text())
    destseg = raw["destseg_paper"]
    return PaperNumbers(
        texture=tuple(raw["categories"]["texture"]),
        object=tuple(raw["categories"]["object"]),
        tables={"pixel": _table(raw["pfadseg_table2"]), "instance": _table(raw["pfadseg_table3"])},
        image_auroc_mean={"PFADSeg": raw["headline"]["pfadseg"]["image_auroc"],
                          "DeSTSeg": raw["headline"]["destseg"]["image_auroc"]},
        ablation=[{**row, "metrics": raw["pfadseg_table4"]["metrics"]} for row in raw["pfadseg_table4"]["rows"]],
        destseg_paper={cat: {m: tuple(v) for m, v in zip(destseg["metrics"], values, strict=True)}
                       for cat, values in destseg["mean_std"].items()},
        adps_pixel_ap={dataset: values["pixel_ap"] for dataset, values in raw["adps"].items()
                       if dataset in ("mvtec_ad", "kolektorsdd2")},
    )
