"""params.yaml -> typed config: every error names the key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pfadseg.arch.destseg import BENCH_VARIANTS, DESTSEG, Variant
from pfadseg.config import ConfigError, config_from_dict, load_config, read_params, upgrade_stored_config
from tests.conftest import REPO


def test_repository_params_load_and_default_to_pfadseg() -> None:
    cfg = load_config(REPO / "params.yaml")
    assert (cfg.model.use_aff, cfg.model.use_pcar, cfg.model.use_rcm) == (True, True, True)
    assert DESTSEG.variant(cfg) == "aff+pcar+rcm"
    assert cfg.train.student.iterations == 3000 and cfg.train.seg.iterations == 4000
    assert cfg.data.categories[0] == "bottle" and len(cfg.data.categories) == 15


def test_a_variant_names_applies_and_reads_back_its_switches() -> None:
    cfg = load_config(REPO / "params.yaml")
    aff_rcm = Variant(aff=True, pcar=False, rcm=True)
    assert aff_rcm.name == "aff+rcm" and Variant(False, False, False).name == "destseg"
    assert aff_rcm.overrides == ["model.use_aff=true", "model.use_pcar=false", "model.use_rcm=true"]
    assert Variant.of(aff_rcm.apply(cfg)) == aff_rcm
    assert Variant.of(config_from_dict(read_params(REPO / "params.yaml"), aff_rcm.overrides)) == aff_rcm
    assert BENCH_VARIANTS["destseg"].apply(cfg).model.use_pcar is False and Variant.of(cfg) == BENCH_VARIANTS["pfadseg"]


def test_overrides_are_yaml_typed() -> None:
    tree = read_params(REPO / "params.yaml")
    cfg = config_from_dict(tree, ["model.use_pcar=false", "train.student.lr=0.4", "data.categories=[pill]"])
    assert cfg.model.use_pcar is False and cfg.train.student.lr == 0.4 and cfg.data.categories == ["pill"]
    assert DESTSEG.variant(cfg) == "aff+rcm"
    assert tree["model"]["use_pcar"] is True, "overrides must not mutate the source tree"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.use_pcar=maybe", "model.use_pcar: expected true or false"),
        ("train.student.iterations=0", "train.student.iterations: 0 is out of range"),
        ("train.student.lr=0", "train.student.lr: 0 is out of range; must be > 0"),
        ("model.pcar.branches=huge", "model.pcar.branches: 'huge' is not allowed; use one of 'dilated'"),
        ("data.categories=[bottle,spoon]", "data.categories: ['spoon'] are not MVTec AD categories"),
        ("data.image_size=100", "data.image_size: must be a multiple of 32"),
        ("data.procedural_textures.image_size=16", "data.procedural_textures.image_size: 16 is out of range"),
        ("train.batch=3", "override train.batch: no such key"),
        ("bank.opacity_min=1.0", "bank.opacity_min: must be below opacity_max"),
        ("model.rcm.band_kernel=10", "model.rcm.band_kernel: must be odd"),
        ("train.augment.none=[bottle]", "train.augment.rotate: 'bottle' is also in train.augment.none"),
        ("model.arch=vit", "model.arch: 'vit' is not allowed; use one of 'pfadseg', 'adps'"),
        ("train.adps.milestones=[270,240]", "train.adps.milestones: must be increasing"),
        ("model.adps.psm_widths=[8,8]", "model.adps.psm_widths: expected 4 positive widths"),
        ("data.source=ksdd2", "data.categories: ['bottle', 'cable', 'capsule', 'carpet', 'grid', 'hazelnut', "
                              "'leather', 'metal_nut', 'pill', 'screw', 'tile', 'toothbrush', 'transistor', 'wood', "
                              "'zipper'] are not the KolektorSDD2 category (data.source ksdd2 holds ksdd2)"),
    ],
)
def test_invalid_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        config_from_dict(read_params(REPO / "params.yaml"), [override])
    assert message in str(info.value)


def test_unknown_and_missing_keys_are_named(tmp_path: Path) -> None:
    tree = read_params(REPO / "params.yaml")
    tree["model"]["use_magic"] = True
    with pytest.raises(ConfigError, match=r"model: unknown key\(s\) model.use_magic; allowed: arch, use_aff"):
        config_from_dict(tree)
    tree = read_params(REPO / "params.yaml")
    del tree["train"]["seg"]["lr_head"]
    with pytest.raises(ConfigError, match=r"train.seg.lr_head: missing"):
        config_from_dict(tree)


def test_load_config_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("seed: [unclosed\n")
    with pytest.raises(ConfigError, match=str(bad)):
        load_config(bad)
    with pytest.raises(ConfigError, match="params file not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("override", ["train.student.lr=.nan", "bank.opacity_max=.nan", "train.student.lr=.inf",
                                      "model.adps.score_sigma=.inf", "eval.aupro_fpr_limit=.NaN"])
def test_non_finite_floats_are_refused_naming_the_key(override: str) -> None:
    key, value = override.split("=")
    with pytest.raises(ConfigError) as info:
        load_config(REPO / "params.yaml", [override])
    assert str(info.value) == f"{REPO / 'params.yaml'}: {key}: must be a finite number, got {yaml.safe_load(value)!r}"


def test_a_non_finite_float_in_the_file_is_refused_naming_its_line(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    text = (REPO / "params.yaml").read_text()
    params.write_text(text.replace("  opacity_max: 1.0", "  opacity_max: .nan", 1))
    line = text.splitlines().index("  opacity_max: 1.0") + 1
    with pytest.raises(ConfigError, match=rf"params\.yaml line {line}: bank\.opacity_max: must be a finite number, "
                                          "got nan"):
        load_config(params)


def test_a_misspelt_key_is_named_at_its_section_line(tmp_path: Path) -> None:
    """An unknown key is reported before the missing one it stands for; a missing key at its section's line."""
    params = tmp_path / "params.yaml"
    text = (REPO / "params.yaml").read_text()
    params.write_text(text.replace("  lr_head:", "  lr_hed:", 1))
    section = text.splitlines().index("  seg:") + 1
    with pytest.raises(ConfigError, match=rf"params\.yaml line {section}: train\.seg: unknown key\(s\) "
                                          r"train\.seg\.lr_hed; allowed: iterations"):
        load_config(params)


@pytest.mark.parametrize(("text", "message"), [
    ("seed: 0\ndata:\n  source: [mvtec\n  root: null\n",
     " line 4, column 7: expected ',' or ']', but got ':' (while parsing a flow sequence at line 3)"),
    ("seed: 0\n  data: 1\n", " line 2, column 7: mapping values are not allowed here"),
    ("", ": the file is empty (or only comments); restore it"),
    ("# nothing but a comment\n", ": the file is empty (or only comments)"),
    ("- a\n", ": expected a mapping of keys at the top level, got a list"),
])
def test_a_broken_or_empty_params_file_names_the_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}{message}"), str(info.value)
    assert f"{path}: {path}" not in str(info.value), "the file is named once"


def test_augment_groups_follow_the_protocol() -> None:
    aug = load_config(REPO / "params.yaml").train.augment
    assert aug.group_of("capsule") == "none"
    assert aug.group_of("zipper") == "slight"
    assert aug.group_of("screw") == "rotate"
    assert aug.group_of("my_custom_part") == "none"


def test_a_stored_config_from_before_a_key_was_added_still_loads() -> None:
    tree = read_params(REPO / "params.yaml")
    del tree["model"]["adps"]["backbone"]
    with pytest.raises(ConfigError, match=r"model\.adps\.backbone"):
        config_from_dict(tree)
    upgraded = upgrade_stored_config(tree)
    assert "backbone" not in tree["model"]["adps"]  # the stored tree itself is left alone
    assert config_from_dict(upgraded).model.adps.backbone == "resnet18"
    del tree["model"]["adps"]["k"]  # only the listed keys are filled in
    with pytest.raises(ConfigError, match=r"model\.adps\.k"):
        config_from_dict(upgrade_stored_config(tree))


def test_a_stored_config_from_before_the_archive_limits_still_loads() -> None:
    tree = read_params(REPO / "params.yaml")
    del tree["data"]["archive_limits"]
    with pytest.raises(ConfigError, match=r"data\.archive_limits: missing"):
        config_from_dict(tree)
    limits = config_from_dict(upgrade_stored_config(tree)).data.archive_limits
    assert "archive_limits" not in tree["data"]  # the stored tree itself is left alone
    assert (limits.max_extracted_gib, limits.max_ratio) == (1.0e9, 1.0e9)  # no bound, as older versions extracted


@pytest.mark.parametrize("name", ["with space", "ünïcödé", "a;b$c&d|e>f`g`", "my-part_2 (v1)", "-dash"])
def test_any_printable_category_name_is_accepted(name: str) -> None:
    cfg = config_from_dict(read_params(REPO / "params.yaml"), ["data.source=folder", "data.root=/data",
                                                             f"data.categories=['{name}']"])
    assert cfg.data.categories == [name]


@pytest.mark.parametrize(("name", "rule"), [
    ("a/b", "/"), ("a\\\\b", "\\"), ("it''s", "'"), ("a@b", "@"), ("..", "names no folder"), ("", "names no folder"),
    (" padded", "leading or trailing spaces"), ("tab\\there", "control character"),
])
def test_category_names_that_cannot_work_are_refused_naming_the_rule(name: str, rule: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(read_params(REPO / "params.yaml"), ["data.source=folder", "data.root=/data",
                                                           f'data.categories=["{name}"]'])
    assert "data.categories:" in str(info.value) and "cannot be a category name" in str(info.value)
    assert rule in str(info.value)


def test_top_k_beyond_the_map_is_refused_at_load_naming_both_keys() -> None:
    with pytest.raises(ConfigError, match=r"eval\.top_k: 100000 exceeds the 4096 pixels .*data\.image_size"):
        config_from_dict(read_params(REPO / "params.yaml"), ["data.image_size=64", "eval.top_k=100000"])
    assert config_from_dict(read_params(REPO / "params.yaml"), ["data.image_size=64", "eval.top_k=4096"])


@pytest.mark.parametrize("override", ["data.categories=[carpet", "model.use_rcm={", "train.student.lr=: x"])
def test_broken_yaml_in_an_override_names_the_override(override: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(read_params(REPO / "params.yaml"), [override])
    assert f"override {override!r}: the value" in str(info.value) and "not valid YAML" in str(info.value)


def test_a_student_batch_known_to_diverge_warns_at_load(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="pfadseg.config"):
        config_from_dict(read_params(REPO / "params.yaml"), ["train.student.batch_size=2"])
    assert "train.student.batch_size 2 is below 3" in caplog.text and "diverge" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="pfadseg.config"):
        config_from_dict(read_params(REPO / "params.yaml"), ["train.student.batch_size=3"])
        config_from_dict(read_params(REPO / "params.yaml"), ["train.student.batch_size=2",
                                                           "train.student.loss_reduction=mean"])
        config_from_dict(read_params(REPO / "params.yaml"), ["train.student.batch_size=2", "model.use_aff=false",
                                                           "model.use_pcar=false"])
    assert caplog.text == ""
