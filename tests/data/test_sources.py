"""Each data source is one unit: the config's choices, the acquisition stage and the report all read the same
registry."""

from __future__ import annotations

import typing

from pfadseg.config import DataConfig
from pfadseg.data.categories import KSDD2_CATEGORY, MVTEC_CATEGORIES
from pfadseg.data.sources import SOURCES
from pfadseg.pipeline.acquire_images import ACQUIRERS


def test_every_source_the_config_allows_is_described_and_acquired() -> None:
    allowed = set(typing.get_args(typing.get_type_hints(DataConfig)["source"]))
    assert allowed == set(SOURCES) == set(ACQUIRERS) == {"mvtec", "synthetic", "folder", "ksdd2"}
    assert all(name == source.name for name, source in SOURCES.items())


def test_what_each_source_holds() -> None:
    assert [n for n, s in SOURCES.items() if not s.test_masks] == ["folder"], "masks are optional in a folder"
    assert [n for n, s in SOURCES.items() if s.reads_root] == ["folder"]
    assert SOURCES["mvtec"].categories == SOURCES["synthetic"].categories == MVTEC_CATEGORIES
    assert SOURCES["ksdd2"].category_problem([KSDD2_CATEGORY]) is None
    assert "not the KolektorSDD2 category" in SOURCES["ksdd2"].category_problem(["bottle"])
    assert SOURCES["folder"].category_problem(["my part"]) is None


def test_only_mvtec_numbers_come_without_a_banner() -> None:
    assert SOURCES["mvtec"].describe("abc123") == ("MVTec AD", None)
    title, banner = SOURCES["folder"].describe("/data/mine")
    assert title == "your data (/data/mine)" and banner.startswith("YOUR DATA: these numbers come from the folder "
                                                                    "/data/mine, not MVTec AD")
    assert SOURCES["synthetic"].describe("seed 7")[1].startswith("SYNTHETIC DATA")
    assert "KolektorSDD2 (sha)" in SOURCES["ksdd2"].describe("sha")[1]
