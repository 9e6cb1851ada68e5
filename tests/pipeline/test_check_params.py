"""check_params refuses everything a later stage would refuse, before DVC deletes any output."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pfadseg.arch.registry import architecture
from pfadseg.config import ConfigError, config_from_dict, read_params
from pfadseg.detectors import build_problem
from pfadseg.paths import Layout
from pfadseg.pipeline.check_params import CHECK_PARAMS, graph_arch_problem
from pfadseg.pipeline.graph import render_graph
from tests.conftest import REPO


def _cfg(*overrides: str):
    return config_from_dict(read_params(REPO / "params.yaml"), list(overrides))


def _project(tmp_path: Path, *overrides: str) -> Layout:
    """A folder with the dvc.yaml of ``overrides``' architecture."""
    (tmp_path / "dvc.yaml").write_text(render_graph(_cfg(*overrides), REPO))
    return Layout(tmp_path)


def test_a_graph_of_another_architecture_is_refused_naming_commands_that_exist(tmp_path: Path) -> None:
    layout = _project(tmp_path)  # the pfadseg graph
    with pytest.raises(ConfigError) as info:
        CHECK_PARAMS.invoke(_cfg("model.arch=adps"), layout)
    message = str(info.value)
    assert "pipeline of model.arch=pfadseg" in message and "model.arch=adps" in message
    assert "pfadseg experiment NAME -S model.arch=adps" in message and "`pfadseg graph`" in message
    assert not layout.params_check.exists()
    CHECK_PARAMS.invoke(_cfg(), layout)
    assert layout.params_check.is_file()


def test_the_adps_graph_passes_for_adps_only(tmp_path: Path) -> None:
    layout = _project(tmp_path, "model.arch=adps")
    assert graph_arch_problem(_cfg("model.arch=adps"), layout.root / "dvc.yaml") is None
    assert "pipeline of model.arch=adps" in graph_arch_problem(_cfg(), layout.root / "dvc.yaml")


@pytest.mark.parametrize(("overrides", "message"), [
    (("model.aff.reduction=128",), "MS-CAM: 64 channels with reduction 128 leave no bottleneck"),
    (("model.spr.reduction=100",), "SPR: 64 channels with reduction 100 leave no hidden unit"),
    (("model.arch=adps", "model.adps.psm_widths=[0,1,1,1]"), "psm_widths"),
])
def test_networks_that_cannot_be_built_are_refused_before_any_stage(
        tmp_path: Path, overrides: tuple[str, ...], message: str) -> None:
    try:
        cfg = _cfg(*overrides)
    except ConfigError as exc:  # refused even earlier, at load
        assert message in str(exc)
        return
    layout = _project(tmp_path, *overrides)
    with pytest.raises(ConfigError, match="nothing was deleted") as info:
        CHECK_PARAMS.invoke(cfg, layout)
    assert message in str(info.value)


@pytest.mark.parametrize("overrides", [(), ("model.arch=adps",), ("data.image_size=64", "eval.top_k=4096"),
                                       ("model.use_aff=false", "model.use_pcar=false", "model.use_rcm=false")])
def test_buildable_settings_pass_and_every_map_is_image_size(overrides: tuple[str, ...]) -> None:
    cfg = _cfg(*overrides)
    assert build_problem(architecture(cfg.model.arch), cfg) is None


def test_the_graph_check_reads_a_copy_of_the_project(tmp_path: Path) -> None:
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    assert graph_arch_problem(_cfg(), tmp_path / "dvc.yaml") is None
