"""tables.md from hand-made metrics: right cells, signed differences, 'not run', warnings."""

from __future__ import annotations

from typing import Any

import pytest

from pfadseg.report.paper import paper_numbers
from pfadseg.report.tables import NOT_RUN, Provenance, aggregate, render_tables


def _run(image_auroc: float, pixel_ap: float, iap: float = 0.5) -> dict[str, Any]:
    branch = {"image_auroc": image_auroc, "pixel_auroc": 0.95, "pixel_ap": pixel_ap, "iap": iap, "iap90": 0.25,
              "aupro": 0.9, "aupro_mode": "mvtec"}
    return {"seg": branch, "dest": {**branch, "pixel_ap": pixel_ap / 2}}


def _row(text: str, label: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def _section(text: str, title: str) -> str:
    return text.split(f"## {title}")[1].split("\n## ")[0]


@pytest.fixture
def report() -> str:
    runs = {"carpet": [_run(0.99, 0.80), _run(0.97, 0.70)], "bottle": [_run(1.0, 0.913)]}
    return render_tables(runs, Provenance({"Data": "mvtec (abc)"}, []))


def test_numbers_land_in_their_cells_with_signed_differences(report: str) -> None:
    table2 = _section(report, "Table 2")
    carpet = _row(table2, "carpet")
    # columns: category, pixel AUROC ours, PFADSeg, Δ, DeSTSeg, Δ, pixel AP ours, PFADSeg, Δ, DeSTSeg, Δ
    assert carpet[1] == "95.0 ± 0.0" and carpet[2] == "96.6" and carpet[3] == "−1.6"
    assert carpet[6] == "75.0 ± 7.1", "mean ± sample std over the two seeds"
    assert carpet[7] == "75.4" and carpet[8] == "−0.4" and carpet[9] == "62.9" and carpet[10] == "+12.1"
    bottle = _row(table2, "bottle")
    assert bottle[6] == "91.3" and bottle[8] == "+0.0"


def test_missing_categories_show_not_run_never_zero(report: str) -> None:
    for title in ("Table 1", "Table 2", "Table 3"):
        assert _row(_section(report, title), "grid")[1] == NOT_RUN
    assert "(1 of 5 run)" in _row(_section(report, "Table 2"), "**Texture mean** (1 of 5 run)")[0]
    assert "| 0.0 |" not in _section(report, "Table 2")


def test_image_auroc_table_compares_means_only(report: str) -> None:
    table1 = _section(report, "Table 1")
    assert _row(table1, "carpet")[1] == "98.0 ± 1.4"
    mean = _row(table1, "**Mean** (2 of 15 run)")
    assert mean[2] == "98.9" and mean[4] == "98.6"


def test_warnings_are_prominent() -> None:
    prov = Provenance({"Data": "synthetic"}, ["SYNTHETIC DATA: not comparable with the paper."])
    text = render_tables({}, prov)
    assert text.splitlines()[2] == "> **⚠ SYNTHETIC DATA: not comparable with the paper.**"
    assert _row(_section(text, "Table 2"), "carpet")[1] == NOT_RUN


def test_aggregate_converts_to_percent_and_skips_missing() -> None:
    stat = aggregate([_run(0.9, 0.5), _run(1.0, 0.5), {"seg": {}}], "seg", "image_auroc")
    assert stat is not None and stat.n == 2 and stat.mean == pytest.approx(95.0)
    assert aggregate([], "seg", "image_auroc") is None


def test_paper_numbers_are_loaded_as_data() -> None:
    paper = paper_numbers()
    assert paper.value("pixel", "PFADSeg", "mean", "pixel_ap") == 76.4
    assert paper.value("instance", "DeSTSeg", "screw", "iap90") == 6.4
    assert len(paper.ablation) == 7 and paper.destseg_paper["carpet"]["iap90"] == (58.6, 17.1)


def test_pixel_ap_has_the_adps_reported_mean_on_the_mean_row_only(report: str) -> None:
    table2 = _section(report, "Table 2")
    # columns after the pixel AP DeSTSeg delta: ADPS (mean only), delta
    assert _row(table2, "carpet")[11:13] == ["–", "–"]
    mean = next(ln for ln in table2.splitlines() if ln.startswith("| **Mean**"))
    cells = [c.strip() for c in mean.strip("|").split("|")]
    assert cells[11] == "77.4" and cells[12] == f"{float(cells[6]) - 77.4:+.1f}".replace("-", "−")


def test_kolektorsdd2_section_only_when_it_ran(report: str) -> None:
    assert "## KolektorSDD2" not in report
    text = render_tables({"ksdd2": [_run(0.9, 0.60)]}, Provenance({}, []))
    row = _row(_section(text, "KolektorSDD2"), "Pixel AP")
    assert row == ["Pixel AP", "60.0", "72.5", "−12.5"]
