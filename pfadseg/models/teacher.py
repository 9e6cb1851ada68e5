"""Frozen ImageNet ResNet-18 teacher, layer1..layer3 (DeSTSeg §3.1; destseg-protocol.md §2.1)."""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

log = logging.getLogger(__name__)

IMAGENET_WEIGHTS = ResNet18_Weights.IMAGENET1K_V1
_UNUSED_PREFIXES = ("layer4.", "fc.")  # in a full ResNet-18 state dict, not in the teacher


class TeacherWeightsError(RuntimeError):
    """Teacher weights that are missing, corrupt or do not fit a ResNet-18."""


def imagenet_weights_file() -> Path:
    """Where torchvision's IMAGENET1K_V1 ResNet-18 file must lie: <torch hub dir>/checkpoints/<url name>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(IMAGENET_WEIGHTS.url).path).name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _weights_file(weights: str) -> Path:
    """The file behind ``imagenet`` or a path, checked to exist (never downloads)."""
    if weights == "imagenet":
        path = imagenet_weights_file()
        if not path.is_file():
            raise TeacherWeightsError(
                f"teacher weights not found: place torchvision's ResNet-18 IMAGENET1K_V1 file "
                f"{path.name} (from {IMAGENET_WEIGHTS.url}) at {path} "
                "(the torch hub dir: set TORCH_HOME to move it); "
                "nothing is downloaded. For an offline smoke run use model.teacher_weights: random")
        return path
    path = Path(weights)
    if not path.is_file():
        raise TeacherWeightsError(f"teacher weights file not found: {weights!r} (model.teacher_weights takes "
                                  "'imagenet', 'random' or the path to a ResNet-18 state dict)")
    return path


def teacher_identity(weights: str) -> dict[str, str | None]:
    """Provenance of ``model.teacher_weights``: name, file and sha256 of the weight file, or ``random``."""
    if weights == "random":
        return {"name": "random", "file": None, "sha256": "random"}
    path = _weights_file(weights)
    sha = _sha256(path)
    if weights == "imagenet":
        # torchvision file names carry the first hex digits of the file's sha256: resnet18-<prefix>.pth
        prefix = path.stem.rsplit("-", 1)[-1]
        if not sha.startswith(prefix):
            raise TeacherWeightsError(f"{path}: sha256 {sha[:12]}... does not start with {prefix} as "
                                      "torchvision's file name says: the file is corrupt or incomplete; "
                                      "replace it")
        return {"name": f"torchvision resnet18 {IMAGENET_WEIGHTS}", "file": str(path), "sha256": sha}
    return {"name": str(path), "file": str(path), "sha256": sha}


class Teacher(nn.Module):
    """ResNet-18 stem + layer1..layer3 -> (64@1/4, 128@1/8, 256@1/16); frozen, always eval, detached."""

    def __init__(self, weights: str) -> None:
        super().__init__()
        net = resnet18(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        self.identity = teacher_identity(weights)
        if weights == "random":
            msg = ("teacher uses RANDOM weights (model.teacher_weights: random): anomaly maps are "
                   "meaningless beyond smoke tests; set model.teacher_weights: imagenet for real runs")
            warnings.warn(msg, UserWarning, stacklevel=2)
            log.warning(msg)
        else:
            self._load(_weights_file(weights))
        self.requires_grad_(False)
        self.eval()

    def _load(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # unpickling errors come in many types
            raise TeacherWeightsError(f"{path}: not a loadable state dict ({exc})") from exc
        if not isinstance(state, Mapping):
            raise TeacherWeightsError(f"{path}: expected a state dict (name -> tensor), "
                                      f"got {type(state).__name__}")
        state = {k: v for k, v in state.items() if not k.startswith(_UNUSED_PREFIXES)}
        try:
            self.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise TeacherWeightsError(f"{path}: does not fit a torchvision ResNet-18 (layer1..layer3): "
                                      f"{exc}") from exc

    def train(self, mode: bool = True) -> Teacher:
        """Stays in eval mode whatever ``mode`` says (BN uses the ImageNet running statistics)."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # B x 3 x H x W -> (B x 64 x H/4 x W/4, B x 128 x H/8 x W/8, B x 256 x H/16 x W/16), detached
        with torch.no_grad():
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            f1 = self.layer1(x)
            f2 = self.layer2(f1)
            f3 = self.layer3(f2)
        return f1.detach(), f2.detach(), f3.detach()
