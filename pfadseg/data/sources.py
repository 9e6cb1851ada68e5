"""The datasets ``data.source`` names, one :class:`DataSource` each: whether its test images have masks, the
categories it holds, and how the report names it. What acquires each is the acquire_images stage's
``ACQUIRERS``, kept apart so that the stages that only read a source's description do not depend on its
download or generator code."""

from __future__ import annotations

from dataclasses import dataclass

from pfadseg.data.categories import KSDD2_CATEGORY, MVTEC_CATEGORIES


@dataclass(frozen=True)
class DataSource:
    """A dataset in MVTec layout (``<category>/train/good``, ``<category>/test/<defect>``, ``ground_truth``)."""

    name: str
    title: str  # what the report says the numbers were measured on
    test_masks: bool  # a ground-truth mask for every anomalous test image (checked by evaluate); else optional
    categories: tuple[str, ...] | None  # the categories it holds; None: the user's own folder names
    holds: str  # what those categories are, for errors
    banner: str | None  # the report's warning when its numbers are not MVTec AD's; {origin}: the copy read
    reads_root: bool = False  # a folder of the user's (data.root) rather than a download or a generator

    def category_problem(self, categories: list[str]) -> str | None:
        """Why ``categories`` cannot be read from this source, or None."""
        if self.categories is None:
            return None
        if unknown := [c for c in categories if c not in self.categories]:
            return (f"{unknown} are not {self.holds} (data.source {self.name} holds {', '.join(self.categories)}); "
                    "use data.source: folder for a dataset of your own")
        return None

    def describe(self, origin: str) -> tuple[str, str | None]:
        """The report's title of the data (``origin``: the archive's sha256, the folder or the seed), and its
        banner."""
        title = self.title.format(origin=origin)
        return title, self.banner.format(origin=origin) if self.banner else None


SOURCES: dict[str, DataSource] = {
    "mvtec": DataSource("mvtec", "MVTec AD", True, MVTEC_CATEGORIES, "MVTec AD categories", None),
    "synthetic": DataSource(
        "synthetic", "synthetic data", True, MVTEC_CATEGORIES, "MVTec AD categories",
        "SYNTHETIC DATA: these numbers come from the procedural offline dataset ({origin}), not MVTec AD; they are "
        "not comparable with the paper."),
    "ksdd2": DataSource(
        "ksdd2", "KolektorSDD2", True, (KSDD2_CATEGORY,), "the KolektorSDD2 category",
        "KolektorSDD2 ({origin}), not MVTec AD: its numbers are in the KolektorSDD2 section, beside ADPS's "
        "reported ones."),
    "folder": DataSource(
        "folder", "your data ({origin})", False, None, "your folder's categories",
        "YOUR DATA: these numbers come from the folder {origin}, not MVTec AD as acquire_images downloads and "
        "checks it; paper columns (categories named like MVTec AD ones) compare with it only if it holds MVTec AD "
        "itself.", reads_root=True),
}
