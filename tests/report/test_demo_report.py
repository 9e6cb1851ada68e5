"""The committed reports/demo/ is what `pfadseg demo` renders: its profile's schedule, data and categories."""

from __future__ import annotations

from pfadseg.arch.registry import architecture
from pfadseg.config import config_from_dict, profile_overrides, read_params
from tests.conftest import REPO

DEMO = config_from_dict(read_params(REPO / "params.yaml"), profile_overrides(REPO / "profiles/demo.yaml"))
TABLES = (REPO / "reports/demo/tables.md").read_text()


def _line(label: str) -> str:
    return next(line for line in TABLES.splitlines() if line.startswith(f"- **{label}**:")).split(":", 1)[1].strip()


def test_the_committed_demo_report_has_the_demo_profiles_schedule() -> None:
    arch = architecture(DEMO.model.arch)
    assert _line("Schedule") == arch.describe_schedule(DEMO)
    assert _line("Model").startswith(arch.variant(DEMO))
    assert _line("Seeds").startswith(f"training {DEMO.seeds}")
    assert _line("Categories run") == f"{len(DEMO.data.categories)} of {len(DEMO.data.categories)} configured"
    for category in DEMO.data.categories:
        assert f"| {category} |" in TABLES
    assert "SYNTHETIC DATA" in TABLES and "RANDOM TEACHER" in TABLES


def test_readme_quotes_the_committed_demo_figures() -> None:
    """README's demo numbers are the committed report's (segmentation-branch image AUROC per category)."""
    readme = (REPO / "README.md").read_text()
    image_auroc = TABLES.split("Image AUROC", 1)[1]
    for category in DEMO.data.categories:
        row = next(line for line in image_auroc.splitlines() if line.startswith(f"| {category} |"))
        ours = row.split("|")[2].strip()
        assert f"{category} {ours}" in readme, f"README should quote {category}'s image AUROC {ours}"
