"""tables.md from hand-made metrics: right cells, signed differences over like categories, rows, warnings."""

from __future__ import annotations

from typing import Any

import pytest

from pfadseg.report.paper import paper_numbers
from pfadseg.report.tables import NO_MASKS, Provenance, aggregate, render_tables


def _run(image_auroc: float, pixel_ap: float, iap: float = 0.5) -> dict[str, Any]:
    branch = {"image_auroc": image_auroc, "pixel_auroc": 0.95, "pixel_ap": pixel_ap, "iap": iap, "iap90": 0.25,
              "aupro": 0.9, "aupro_mode": "mvtec"}
    return {"seg": branch, "dest": {**branch, "pixel_ap": pixel_ap / 2}}


def _row(text: str, label: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def _section(text: str, title: str) -> str:
    return text.split(f"## {title}")[1].split("\n## ")[0]


def _minus(value: float) -> str:
    return f"{value:+.1f}".replace("-", "−")


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


def test_rows_are_the_categories_that_ran(report: str) -> None:
    for title in ("Table 1", "Table 2", "Table 3", "Extra"):
        section = _section(report, title)
        assert "| carpet |" in section and "| bottle |" in section and "| grid |" not in section
    assert _row(_section(report, "Table 2"), "**Texture mean** (1 of 5 categories)")[1] == "95.0 ± 0.0"
    assert "| 0.0 |" not in _section(report, "Table 2")


def test_image_auroc_table_compares_means_only(report: str) -> None:
    table1 = _section(report, "Table 1")
    assert _row(table1, "carpet")[1] == "98.0 ± 1.4"
    assert _row(table1, "carpet")[2:] == ["–", "–", "–", "–"]


def test_partial_means_compare_with_the_papers_mean_over_the_same_categories(report: str) -> None:
    paper = paper_numbers()
    mean = _row(_section(report, "Table 2"), "**Mean** (2 of 15 categories)")
    ours = (75.0 + 91.3) / 2  # pixel AP of carpet (mean over its two seeds) and of bottle
    pfadseg, destseg = ((paper.value("pixel", method, "carpet", "pixel_ap")  # type: ignore[operator]
                         + paper.value("pixel", method, "bottle", "pixel_ap")) / 2 for method in ("PFADSeg", "DeSTSeg"))
    # pixel AP columns: ours, PFADSeg, Δ, DeSTSeg, Δ
    assert mean[6:11] == [f"{ours:.1f}", f"{pfadseg:.1f}†", _minus(ours - pfadseg), f"{destseg:.1f}†",
                          _minus(ours - destseg)]
    assert mean[8] == "−0.2", "not ours minus the paper's 15-category mean 76.4 (+6.8)"
    assert "† The paper's mean over the same categories" in _section(report, "Table 2")


def test_means_reported_only_over_all_categories_get_no_delta_for_a_partial_run(report: str) -> None:
    table1 = _section(report, "Table 1")
    assert _row(table1, "**Mean** (2 of 15 categories)")[2:] == ["98.9", "–‡", "98.6", "–‡"]
    assert "‡ No Δ: the paper reports only its mean over all 15 categories" in table1
    table2 = _section(report, "Table 2")
    # after the pixel AP DeSTSeg Δ: ADPS's reported MVTec mean (mean row only), its Δ
    assert _row(table2, "**Mean** (2 of 15 categories)")[11:13] == ["77.4", "–‡"]
    assert _row(table2, "carpet")[11:13] == ["–", "–"]


def test_a_full_run_compares_with_the_papers_reported_means() -> None:
    paper = paper_numbers()
    text = render_tables({c: [_run(0.99, 0.80)] for c in paper.texture + paper.object}, Provenance({}, []))
    mean = _row(_section(text, "Table 2"), "**Mean**")
    assert mean[6:9] == ["80.0", "76.4", "+3.6"] and mean[11:13] == ["77.4", "+2.6"]
    assert _row(_section(text, "Table 1"), "**Mean**")[2:4] == ["98.9", "+0.1"]
    assert "†" not in text and "‡" not in text


def test_custom_categories_get_rows_without_paper_columns() -> None:
    prov = Provenance({}, ["YOUR DATA: these numbers come from the folder /data/mine, not MVTec AD"],
                      "your data (/data/mine)")
    unmasked = {"pixel_level": False, "seg": {"image_auroc": 0.8}, "dest": {}}
    text = render_tables({"widgets": [_run(0.9, 0.5)], "gadgets": [unmasked]}, prov)
    assert text.splitlines()[0] == "# pfadseg results on your data (/data/mine)"
    assert text.splitlines()[2].startswith("> **⚠ YOUR DATA")
    table1 = _section(text, "Table 1")
    assert "PFADSeg" not in table1 and _row(table1, "widgets") == ["widgets", "90.0"]
    assert _row(table1, "gadgets") == ["gadgets", "80.0"] and _row(table1, "**Mean**") == ["**Mean**", "85.0"]
    table2 = _section(text, "Table 2")
    assert "PFADSeg" not in table2 and _row(table2, "gadgets") == ["gadgets", NO_MASKS, NO_MASKS]
    assert _row(table2, "**Mean** (1 of 2 categories)")[1:] == ["95.0", "50.0"]


def test_custom_categories_beside_mvtec_ones_have_no_paper_numbers() -> None:
    text = render_tables({"bottle": [_run(1.0, 0.913)], "widgets": [_run(0.9, 0.5)]}, Provenance({}, []))
    table2 = _section(text, "Table 2")
    assert _row(table2, "bottle")[2] == "99.3" and _row(table2, "widgets")[1:6] == ["95.0", "–", "–", "–", "–"]
    assert _row(table2, "**Mean** (1 of 15 categories)")[6] == "91.3", "the MVTec AD mean: MVTec AD categories only"
    assert _row(table2, "widgets")[6:] == ["50.0", "–", "–", "–", "–", "–", "–"]


def test_warnings_are_prominent() -> None:
    prov = Provenance({"Data": "synthetic"}, ["SYNTHETIC DATA: not comparable with the paper."])
    text = render_tables({}, prov)
    assert text.splitlines()[2] == "> **⚠ SYNTHETIC DATA: not comparable with the paper.**"
    assert "No category has run yet." in text and "## Table 1" not in text


def test_aggregate_converts_to_percent_and_skips_missing() -> None:
    stat = aggregate([_run(0.9, 0.5), _run(1.0, 0.5), {"seg": {}}], "seg", "image_auroc")
    assert stat is not None and stat.n == 2 and stat.mean == pytest.approx(95.0)
    assert aggregate([], "seg", "image_auroc") is None


def test_paper_numbers_are_loaded_as_data() -> None:
    paper = paper_numbers()
    assert paper.value("pixel", "PFADSeg", "mean", "pixel_ap") == 76.4
    assert paper.value("instance", "DeSTSeg", "screw", "iap90") == 6.4
    assert len(paper.ablation) == 7 and paper.destseg_paper["carpet"]["iap90"] == (58.6, 17.1)


def test_kolektorsdd2_section_only_when_it_ran(report: str) -> None:
    assert "## KolektorSDD2" not in report
    text = render_tables({"ksdd2": [_run(0.9, 0.60)]}, Provenance({}, []))
    row = _row(_section(text, "KolektorSDD2"), "Pixel AP")
    assert row == ["Pixel AP", "60.0", "72.5", "−12.5"]
    assert "## Table 1" not in text, "KolektorSDD2 is not an MVTec AD category"
