"""reports/ablation.md from `dvc exp show --json`-shaped results: matching rows, means, differences."""

from __future__ import annotations

import math
from typing import Any

import pytest

from pfadseg.arch.destseg import Variant
from pfadseg.report.ablation import (
    ExperimentResult,
    ablation_rows,
    paired_difference,
    parse_exp_show,
    pick,
    render_ablation,
)
from pfadseg.report.tables import NOT_RUN, Provenance


def _entry(name: str, rcm: bool, aff: bool, pcar: bool, iap: dict[str, float]) -> dict[str, Any]:
    metrics = {
        f"metrics/{cat}/seed0.json": {"data": {"seg": {"image_auroc": 0.9, "pixel_ap": 0.5, "iap": value}}}
        for cat, value in iap.items()
    }
    params = {"params.yaml": {"data": {"model": {"use_rcm": rcm, "use_aff": aff, "use_pcar": pcar}}}}
    return {"rev": "0" * 40, "name": name, "data": {"params": params, "metrics": metrics}}


def _exp_show() -> list[dict[str, Any]]:
    baseline = _entry("main", True, True, True, {"bottle": 0.70, "carpet": 0.80})
    baseline["experiments"] = [
        {"revs": [_entry("ablation-1-none", False, False, False, {"bottle": 0.50, "carpet": 0.60})]},
        {"revs": [_entry("my-run", True, False, True, {"bottle": 0.65})]},
        {"revs": [{"rev": "1" * 40, "name": "failed", "data": {"params": {}, "metrics": {}}}]},
    ]
    workspace = {**_entry("ignored", True, True, True, {"bottle": 0.0}), "rev": "workspace", "experiments": None}
    return [workspace, baseline]


def _row(text: str, row: int) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {row} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_parse_keeps_experiments_with_switches_and_metrics() -> None:
    results = parse_exp_show(_exp_show())
    assert [r.name for r in results] == ["main", "ablation-1-none", "my-run"]
    assert results[1].variant == Variant(False, False, False) and set(results[1].runs) == {"bottle", "carpet"}


def test_rows_are_matched_by_switches_and_averaged_over_categories() -> None:
    text = render_ablation(parse_exp_show(_exp_show()), Provenance({}, []))
    # columns: row, rcm, aff, pcar, experiment, categories, then (ours, paper, delta) per metric
    row1 = _row(text, 1)
    assert row1[1:6] == ["", "", "", "ablation-1-none", "2"]
    assert row1[12:15] == ["55.0", "74.6", "–‡"]  # 2 categories against the paper's 15-category mean: no Δ
    row5 = _row(text, 5)
    assert row5[4] == "my-run" and row5[12] == "65.0" and row5[14] == "–‡"
    row7 = _row(text, 7)
    assert row7[1:4] == ["✓", "✓", "✓"] and row7[12:15] == ["75.0", "78.7", "–‡"]
    assert "‡ No Δ: the paper reports only its mean over all 15 categories" in text
    assert _row(text, 3)[4] == NOT_RUN and _row(text, 3)[12] == NOT_RUN


def test_seven_variants_with_unique_names_and_full_overrides() -> None:
    rows = ablation_rows()
    assert [v.row for v in rows] == list(range(1, 8))
    assert len({v.name for v in rows}) == 7 and rows[-1].name == "ablation-7-rcm-aff-pcar"
    # each variant sets the architecture and every switch, so runs never compound (dvc exp run keeps -S values)
    assert all(len(v.overrides) == 4 and v.overrides[0] == "model.arch=pfadseg" for v in rows)


def test_adps_experiment_gets_its_own_row_and_never_fills_a_switch_row() -> None:
    exp_show = _exp_show()
    adps = _entry("adps", True, True, True, {"bottle": 0.90, "carpet": 0.70})
    adps["data"]["params"]["params.yaml"]["data"]["model"]["arch"] = "adps"
    exp_show[1]["experiments"].insert(0, {"revs": [adps]})
    results = parse_exp_show(exp_show)
    assert [r.arch for r in results if r.name == "adps"] == ["adps"]
    text = render_ablation(results, Provenance({}, []))
    assert _row(text, 7)[4] == "main", "an ADPS run with the default switches must not count as row 7"
    row = next(ln for ln in text.splitlines() if ln.startswith("| ADPS |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4:6] == ["adps", "2"]
    assert cells[9:12] == ["50.0", "77.4", "–‡"]  # pixel AP: ours, ADPS's reported MVTec mean, no Δ (2 categories)
    assert cells[12:15] == ["80.0", "–", "–"]  # IAP: ADPS reports none


def test_no_adps_row_without_an_adps_experiment() -> None:
    assert "| ADPS |" not in render_ablation(parse_exp_show(_exp_show()), Provenance({}, []))


def _seeded(name: str, rcm: bool, aff: bool, pcar: bool, iap: dict[tuple[str, int], float]) -> dict[str, Any]:
    entry = _entry(name, rcm, aff, pcar, {})
    entry["data"]["metrics"] = {f"metrics/{cat}/seed{seed}.json": {"data": {"seg": {"iap": value}}}
                                for (cat, seed), value in iap.items()}
    return entry


def _two_seed_grid() -> list[ExperimentResult]:
    base = {("bottle", 0): 0.50, ("bottle", 1): 0.52, ("carpet", 0): 0.60, ("carpet", 1): 0.62}
    full = {key: value + step / 100 for (key, value), step in zip(base.items(), (1, 2, 3, 4), strict=True)}
    noisy = {key: value + step / 100 for (key, value), step in zip(base.items(), (-3, 3, -2, 2), strict=True)}
    main = _seeded("main", True, True, True, full)
    main["experiments"] = [{"revs": [_seeded("ablation-1-none", False, False, False, base)]},
                           {"revs": [_seeded("ablation-2-rcm", True, False, False, noisy)]}]
    return parse_exp_show([main])


def test_paired_difference_matches_a_hand_computed_t_interval() -> None:
    results = _two_seed_grid()
    rows = ablation_rows()
    diff = paired_difference(pick(results, rows[-1]), pick(results, rows[0]), "iap")
    # differences 1, 2, 3, 4 points: mean 2.5, sd sqrt(5/3), t(0.975, 3) = 3.182446305
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2
    assert diff is not None and diff.n == 4 and diff.mean == pytest.approx(2.5)
    assert (diff.low, diff.high) == (pytest.approx(2.5 - half), pytest.approx(2.5 + half))
    assert diff.excludes_zero and str(diff) == "**+2.5 [+0.4, +4.6]**"
    noisy = paired_difference(pick(results, rows[1]), pick(results, rows[0]), "iap")
    assert noisy is not None and noisy.mean == pytest.approx(0.0) and not noisy.excludes_zero
    assert paired_difference(pick(results, rows[1]), pick(results, rows[1]), "pixel_ap") is None


def test_one_pair_gives_its_difference_without_an_interval() -> None:
    """One category and one seed (a one-category demo): the difference, said to have no interval, not "not run"."""
    results = parse_exp_show(_exp_show())
    rows = ablation_rows()
    diff = paired_difference(pick(results, rows[4]), pick(results, rows[0]), "iap")  # my-run ran bottle only
    assert diff is not None and diff.n == 1 and not diff.excludes_zero
    assert str(diff) == "+15.0 [no interval: 1 pair]"
    text = render_ablation(results, Provenance({}, []))
    against_row_1 = text[text.index("### Against row 1"):]
    assert "| 5 | my-run | 1 | +0.0 [no interval: 1 pair] |" in against_row_1


def test_the_report_gives_seed_std_and_marks_real_differences() -> None:
    text = render_ablation(_two_seed_grid(), Provenance({}, []))
    assert _row(text, 7)[12] == "58.5 ± 2.1", "seed means 57 and 60"
    against_row_1 = text[text.index("### Against row 1"):text.index("### Against row 7")]
    row7 = next(line for line in against_row_1.splitlines() if line.startswith("| 7 |"))
    assert "**+2.5 [+0.4, +4.6]**" in row7 and "| 4 |" in row7
    assert "+4.1" in row7, "the paper's IAP difference, row 7 minus row 1 (78.7 - 74.6)"
    assert "One training seed" not in text
    assert "3 rows found ran 12 category × seed runs over 2 training seed(s): 8 students and 12 segmentation" in text


def test_one_seed_says_the_intervals_cover_categories_only() -> None:
    assert "One training seed" in render_ablation(parse_exp_show(_exp_show()), Provenance({}, []))


def test_missing_rows_and_each_experiments_revision_and_device_are_listed() -> None:
    from pfadseg.report.ablation import missing_rows

    exp_show = _exp_show()
    exp_show[1]["experiments"][0]["revs"][0]["data"]["metrics"]["metrics/bottle/seed0.json"]["data"]["device"] = \
        "cuda:1 (GPU 5)"
    results = parse_exp_show(exp_show)
    assert missing_rows(results) == [2, 3, 4, 6]
    text = render_ablation(results, Provenance({}, []))
    assert "Rows not run: 2, 3, 4, 6" in text
    experiments = text[text.index("## Experiments"):]
    assert "| ablation-1-none | 0000000 | ?, cuda:1 (GPU 5) | 2 |" in experiments
    assert "| my-run | 0000000 | ? | 1 |" in experiments and "| main |" in experiments


def test_a_row_over_all_fifteen_categories_gets_its_delta_against_the_paper() -> None:
    from pfadseg.data.categories import MVTEC_CATEGORIES

    exp_show = [_entry("full", False, False, False, dict.fromkeys(MVTEC_CATEGORIES, 0.5))]
    text = render_ablation(parse_exp_show(exp_show), Provenance({}, []))
    assert _row(text, 1)[12:15] == ["50.0", "74.6", "−24.6"] and "‡ No Δ" not in text
