"""Facts about the MVTec AD categories (Bergmann et al., CVPR 2019) and KolektorSDD2: names, kinds, counts."""

TEXTURE_CATEGORIES: tuple[str, ...] = ("carpet", "grid", "leather", "tile", "wood")
OBJECT_CATEGORIES: tuple[str, ...] = (
    "bottle", "cable", "capsule", "hazelnut", "metal_nut", "pill", "screw", "toothbrush", "transistor", "zipper",
)
MVTEC_CATEGORIES: tuple[str, ...] = tuple(sorted(TEXTURE_CATEGORIES + OBJECT_CATEGORIES))
GRAYSCALE_CATEGORIES: frozenset[str] = frozenset({"grid", "screw", "zipper"})

# Official split sizes (MVTec AD, Bergmann et al., CVPR 2019): used to validate a downloaded copy.
MVTEC_TRAIN_COUNTS: dict[str, int] = {
    "bottle": 209, "cable": 224, "capsule": 219, "carpet": 280, "grid": 264, "hazelnut": 391, "leather": 245,
    "metal_nut": 220, "pill": 267, "screw": 320, "tile": 230, "toothbrush": 60, "transistor": 213, "wood": 247,
    "zipper": 240,
}
MVTEC_TOTALS: dict[str, int] = {"train": 3629, "test": 1725, "test_good": 467, "test_defective": 1258}


# KolektorSDD2 (Bozic et al., 2021), one category; official test split 894 good + 110 defective.
KSDD2_CATEGORY = "ksdd2"
KSDD2_ARCHIVE = "KolektorSDD2.zip"  # the file name of the official archive (its URL has none)
KSDD2_TEST_COUNTS: dict[str, int] = {"test_good": 894, "test_defective": 110}

