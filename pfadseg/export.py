"""``pfadseg export --format onnx``: a trained detector (DeSTSeg/PFADSeg or ADPS) as ONE ONNX graph, score included.

The graph maps a normalised image batch ``image`` (float32 B x 3 x S x S, dynamic B) to ``anomaly_map``
(float32 B x 1 x S x S in [0, 1]) and ``score`` (float64 B: the detector's own image score, as in the
evaluation and ``pfadseg predict``: the mean of the top-k pixels, or ADPS's max of the Gaussian-smoothed map).
Preprocessing stays outside the graph and is written into the model's ``metadata_props`` (JSON values): RGB,
bilinear squash-resize to S x S, /255, ImageNet mean/std; plus the score rule, the thresholds, the teacher's
identity and the pfadseg version.

Exporter: the legacy TorchScript exporter (``torch.onnx.export(..., dynamo=False)``), opset 17. On torch 2.14
the default dynamo exporter needs the extra package ``onnxscript`` and emits opset 18 (its conversion down to
17 fails on this graph); the TorchScript exporter needs only ``onnx`` but cannot export
``adaptive_avg_pool2d`` to 2 x 2 or strip outputs (SPR, RCM) once the decoder's size-driven resizes hide
the spatial sizes. During the export, :func:`traceable_adaptive_pooling` therefore swaps in an equivalent
implementation from static slices and means (same values to float rounding; tested), valid because the
export input has a fixed spatial size.

onnx / onnxruntime are the optional extra ``export`` (``pip install 'pfadseg[export]'``), imported lazily.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pfadseg import __version__
from pfadseg.data.images import IMAGENET_MEAN, IMAGENET_STD
from pfadseg.errors import PfadsegError
from pfadseg.fsio import atomic_path
from pfadseg.score.rule import ScoreRule

if TYPE_CHECKING:
    from pfadseg.predict import Predictor

INPUT_NAME = "image"
OUTPUT_NAMES = ("anomaly_map", "score")
DEFAULT_OPSET = 17
INSTALL_HINT = "pip install 'pfadseg[export]' (i.e. pip install onnx onnxruntime)"


class ExportError(PfadsegError, RuntimeError):
    """Export that cannot run: a missing optional dependency or a graph that does not match PyTorch."""


def require(module: str) -> Any:
    """Import ``onnx`` or ``onnxruntime`` lazily, naming the optional extra when it is missing."""
    try:
        return __import__(module)
    except ImportError:
        raise ExportError(f"ONNX export needs the optional extra 'export' ({module} is not installed): "
                          f"{INSTALL_HINT}") from None


class ExportedOutputs(nn.Module):
    """A detector's graph outputs: (anomaly map B x 1 x H x W, image score B), without the DeST map."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        detection = self.detector(images)
        return detection.anomaly_map, detection.score


def _window(i: int, size: int, out: int) -> slice:
    """PyTorch's adaptive-pool window i of ``out`` over ``size``: [floor(i size / out), ceil((i+1) size / out))."""
    return slice((i * size) // out, -((-(i + 1) * size) // out))


def static_adaptive_avg_pool2d(x: torch.Tensor, output_size: Any) -> torch.Tensor:
    """``F.adaptive_avg_pool2d`` from slices and means over the input's (static) spatial size."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    oh, ow = h if oh is None else int(oh), w if ow is None else int(ow)
    if (oh, ow) == (1, 1):
        return x.mean(dim=(-2, -1), keepdim=True)
    if (oh, ow) == (h, 1):
        return x.mean(dim=-1, keepdim=True)
    if (oh, ow) == (1, w):
        return x.mean(dim=-2, keepdim=True)
    rows = [torch.cat([x[..., _window(i, h, oh), _window(j, w, ow)].mean(dim=(-2, -1), keepdim=True)
                       for j in range(ow)], dim=-1) for i in range(oh)]
    return torch.cat(rows, dim=-2)


@contextlib.contextmanager
def traceable_adaptive_pooling() -> Iterator[None]:
    """Route ``F.adaptive_avg_pool2d`` (used by SPR, RCM, ASPP) through :func:`static_adaptive_avg_pool2d`."""
    original = F.adaptive_avg_pool2d
    F.adaptive_avg_pool2d = static_adaptive_avg_pool2d  # type: ignore[assignment]
    try:
        yield
    finally:
        F.adaptive_avg_pool2d = original


def _module_device(module: nn.Module) -> torch.device:
    param = next(iter(module.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def standard_metadata(image_size: int, rule: ScoreRule) -> dict[str, str]:
    """The preprocessing, I/O and score rule every exported graph records."""
    return {
        "pfadseg_version": __version__,
        "image_size": str(image_size),
        **({"top_k": str(rule.top_k)} if rule.sigma is None else {"score_sigma": repr(rule.sigma)}),
        "preprocessing": json.dumps({
            "color": "RGB (PIL convert('RGB'): grayscale replicated, alpha dropped)",
            "resize": {"width": image_size, "height": image_size, "interpolation": "bilinear (PIL Image.BILINEAR)",
                       "keep_aspect_ratio": False},
            "scale": "1/255 to [0, 1]",
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "layout": "NCHW float32",
        }),
        "inputs": json.dumps({INPUT_NAME: ["batch", 3, image_size, image_size]}),
        "outputs": json.dumps({
            "anomaly_map": "batch x 1 x H x W segmentation map in [0, 1] (upsample bilinearly to the original "
                           "size for display; threshold with pixel_threshold for a mask)",
            "score": "batch float64 image scores; anomalous when score >= image_threshold",
        }),
        "score_rule": f"{rule.describe()} of anomaly_map",
    }


def export_onnx(
    detector: nn.Module,
    path: Path | str,
    *,
    image_size: int,
    rule: ScoreRule,
    opset: int = DEFAULT_OPSET,
    metadata: Mapping[str, Any],
) -> Path:
    """Write ``detector`` (its image score by ``rule``) as one ONNX graph at ``path`` (atomically); returns
    ``path``.

    ``metadata`` (thresholds, teacher, ...) is added to :func:`standard_metadata` in ``metadata_props``;
    non-string values are stored as JSON, and its entries win on a clash. fp32, dynamic batch, fixed
    ``image_size`` x ``image_size``.
    """
    onnx = require("onnx")
    path = Path(path)
    if problem := rule.problem(image_size):
        raise ExportError(problem)
    module = ExportedOutputs(detector).eval()
    dummy = torch.zeros(2, 3, image_size, image_size, device=_module_device(detector))
    with tempfile.TemporaryDirectory(prefix="pfadseg-export-") as tmp:
        raw = Path(tmp) / "model.onnx"
        with warnings.catch_warnings(), torch.no_grad(), traceable_adaptive_pooling():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx.*")
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                module, (dummy,), str(raw), dynamo=False, opset_version=opset, do_constant_folding=True,
                input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)},
            )
        model = onnx.load(str(raw))
    entries = standard_metadata(image_size, rule)
    entries.update({str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    del model.metadata_props[:]
    for key, value in entries.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    model.producer_name, model.producer_version = "pfadseg", __version__
    model.doc_string = ("pfadseg anomaly detector: normalised image -> (anomaly_map, score); preprocessing in "
                        "metadata_props")
    onnx.checker.check_model(model)
    with atomic_path(path, suffix=".onnx") as tmp:
        onnx.save(model, str(tmp))
    return path


def read_metadata(path: Path | str) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict."""
    onnx = require("onnx")
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def verify_onnx(
    path: Path | str,
    detector: nn.Module,
    *,
    image_size: int,
    batch_size: int = 2,
    seed: int = 0,
) -> dict[str, float]:
    """Max abs differences of ONNX Runtime (CPU) vs PyTorch on random normalised inputs: map and score."""
    ort = require("onnxruntime")
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
    module = ExportedOutputs(detector).eval()
    with torch.inference_mode():
        ref_map, ref_score = (t.cpu().numpy() for t in module(images.to(_module_device(detector))))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out_map, out_score = session.run(list(OUTPUT_NAMES), {INPUT_NAME: images.numpy()})
    return {"max_abs_map": float(np.abs(out_map - ref_map).max()),
            "max_abs_score": float(np.abs(out_score - ref_score).max())}


def predictor_metadata(predictor: Predictor) -> dict[str, Any]:
    """Thresholds, teacher identity and provenance of a :class:`pfadseg.predict.Predictor`, for metadata_props."""
    meta = predictor.run.meta(predictor.run.arch.files[-1].name)
    return {
        "image_threshold": "none" if predictor.image_threshold is None else repr(predictor.image_threshold),
        "pixel_threshold": "none" if predictor.pixel_threshold is None else repr(predictor.pixel_threshold),
        "threshold_source": predictor.threshold_source or "none",
        "calibration": predictor.calibration,
        "teacher": meta.get("teacher"),
        "category": str(meta.get("category")),
        "run_seed": str(meta.get("run_seed")),
        "variant": predictor.run.arch.variant(predictor.config),
        "config": predictor.config.to_dict(),
    }


def export_predictor(predictor: Predictor, path: Path | str, *, opset: int = DEFAULT_OPSET) -> Path:
    """:func:`export_onnx` of a loaded :class:`pfadseg.predict.Predictor`, with its thresholds and provenance."""
    return export_onnx(predictor.detector, path, image_size=predictor.image_size, rule=predictor.score,
                       opset=opset, metadata=predictor_metadata(predictor))
