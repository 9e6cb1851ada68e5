"""ONNX export: ONNX Runtime matches PyTorch (map and score, dynamic batch), metadata, atomic writes, the
missing-extra error, and the traceable adaptive pooling the TorchScript exporter needs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pfadseg import __version__
from pfadseg.arch.destseg import DESTSEG
from pfadseg.arch.registry import ARCHITECTURES
from pfadseg.config import config_from_dict
from pfadseg.data.images import IMAGENET_MEAN, IMAGENET_STD
from pfadseg.detectors import untrained_detector
from pfadseg.export import (
    ExportedOutputs,
    ExportError,
    export_onnx,
    export_predictor,
    read_metadata,
    require,
    static_adaptive_avg_pool2d,
    traceable_adaptive_pooling,
)
from pfadseg.models.detector import AnomalyDetector
from pfadseg.models.segnet import build_segnet
from pfadseg.models.student import build_student
from pfadseg.predict import Predictor, load_predictor
from pfadseg.score.maps import score_maps, score_module
from pfadseg.score.rule import ScoreRule
from tests.predict.conftest import TrainedRun, tiny_run_config

TOLERANCE = 1e-4


@pytest.mark.parametrize("output_size", [1, 2, 3, (None, 1), (1, None), (2, 5), (None, None)])
@pytest.mark.parametrize("shape", [(2, 4, 8, 8), (1, 3, 7, 5)])
def test_static_adaptive_pooling_equals_pytorch(output_size: object, shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(static_adaptive_avg_pool2d(x, output_size), F.adaptive_avg_pool2d(x, output_size))
    with traceable_adaptive_pooling():
        assert F.adaptive_avg_pool2d is static_adaptive_avg_pool2d
    assert F.adaptive_avg_pool2d is not static_adaptive_avg_pool2d, "restored after the export"


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    with pytest.raises(ExportError, match=r"pfadseg\[export\]"):
        require("onnx")
    with pytest.raises(ExportError, match="onnx is not installed"):
        export_onnx(torch.nn.Identity(), tmp_path / "m.onnx", image_size=32, rule=ScoreRule(1), metadata={})
    assert not (tmp_path / "m.onnx").exists()


def _run_onnx(path: Path, images: torch.Tensor) -> list[np.ndarray]:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    return session.run(["anomaly_map", "score"], {"image": images.numpy()})


def _assert_equivalent(path: Path, detector: torch.nn.Module, size: int, rule: ScoreRule) -> None:
    module = ExportedOutputs(detector).eval()
    for batch in (1, 3):  # the dummy input had batch 2: the batch axis is dynamic
        images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
        with torch.inference_mode():
            ref_map, ref_score = module(images)
        out_map, out_score = _run_onnx(path, images)
        assert out_map.shape == (batch, 1, size, size) and out_score.shape == (batch,)
        assert out_map.dtype == np.float32 and out_score.dtype == np.float64
        assert np.abs(out_map - ref_map.numpy()).max() <= TOLERANCE
        assert np.abs(out_score - ref_score.numpy()).max() <= TOLERANCE
        np.testing.assert_allclose(out_score, score_maps(rule, out_map[:, 0]), rtol=1e-12)


def test_export_of_a_trained_run_matches_pytorch(trained_run: TrainedRun, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    predictor: Predictor = load_predictor(trained_run.calibrated_dir, device="cpu")
    out = tmp_path / "export" / "model.onnx"
    export_predictor(predictor, out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx"], "no temporary files left"
    _assert_equivalent(out, predictor.detector, predictor.image_size, predictor.score)

    model = onnx.load(str(out))
    assert model.opset_import[0].version == 17 and model.producer_name == "pfadseg"
    meta = read_metadata(out)
    pre = json.loads(meta["preprocessing"])
    assert pre["mean"] == list(IMAGENET_MEAN) and pre["std"] == list(IMAGENET_STD)
    assert pre["resize"]["width"] == pre["resize"]["height"] == 64 and "bilinear" in pre["resize"]["interpolation"]
    assert "RGB" in pre["color"] and meta["pfadseg_version"] == __version__
    assert meta["score_rule"] == f"mean of the top-{predictor.top_k} pixels of anomaly_map"
    assert float(meta["image_threshold"]) == trained_run.calibration["image_threshold"]
    assert float(meta["pixel_threshold"]) == trained_run.calibration["pixel_threshold"]
    assert json.loads(meta["teacher"])["weights"] == "random" and meta["threshold_source"] == "calibration"
    assert json.loads(meta["calibration"]) == trained_run.calibration
    assert json.loads(meta["config"]) == trained_run.cfg.to_dict()


def test_export_of_the_pfadseg_modules(trained_run: TrainedRun, tmp_path: Path) -> None:
    """AFF, PCAR (with SPR's 2 x 2 pooling) and RCM (strip pooling) in the segmentation net, on a baseline
    student to keep the export quick (the student's PCAR blocks are the same modules)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    tree = trained_run.cfg.to_dict()
    pfadseg = config_from_dict(tree, ["model.use_aff=true", "model.use_pcar=true", "model.use_rcm=true"])
    generator = torch.Generator().manual_seed(0)
    teacher = DESTSEG.load_teacher(pfadseg, torch.device("cpu"))
    baseline = config_from_dict(tree)
    detector = AnomalyDetector(teacher, build_student(baseline.model, generator),
                               build_segnet(pfadseg.model, generator), score_module(ScoreRule(7))).eval()
    for module in detector.segnet.modules():  # non-trivial BN statistics, so the check is not vacuous
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
    out = tmp_path / "pfadseg.onnx"
    export_onnx(detector, out, image_size=32, rule=ScoreRule(7), metadata={"note": "test", "numbers": [1, 2]})
    _assert_equivalent(out, detector, 32, ScoreRule(7))
    meta = read_metadata(out)
    assert meta["note"] == "test" and json.loads(meta["numbers"]) == [1, 2] and meta["top_k"] == "7"


def test_export_of_an_adps_detector_matches_pytorch(tmp_path: Path) -> None:
    """ADPS's patch student, WMB and PSM, and its own image score (the max of the Gaussian-smoothed map, as
    matrix products) in one graph."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    cfg = tiny_run_config("model.arch=adps", "model.adps.k=2")
    adps = ARCHITECTURES["adps"]
    detector = untrained_detector(adps, cfg, adps.load_teacher(cfg, torch.device("cpu")), torch.device("cpu"),
                                  torch.Generator().manual_seed(0))
    out = tmp_path / "adps.onnx"
    rule = adps.score_rule(cfg)
    export_onnx(detector, out, image_size=cfg.data.image_size, rule=rule, metadata={})
    _assert_equivalent(out, detector, cfg.data.image_size, rule)
    meta = read_metadata(out)
    assert meta["score_rule"] == f"max of the Gaussian-smoothed map (sigma {rule.sigma:g}) of anomaly_map"
    assert float(meta["score_sigma"]) == rule.sigma and "top_k" not in meta
