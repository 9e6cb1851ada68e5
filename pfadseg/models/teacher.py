"""Frozen ImageNet teacher, layer1..layer3: ResNet-18 (DeSTSeg §3.1; its model/destseg.py) or, for ADPS's
backbone ablation, Wide-ResNet-50-2 (ADPS Table V)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import ResNet, ResNet18_Weights, WeightsEnum, Wide_ResNet50_2_Weights, resnet18, wide_resnet50_2

from pfadseg.artifacts import load_problem
from pfadseg.config import Backbone
from pfadseg.errors import PfadsegError

log = logging.getLogger(__name__)

# torchvision constructor and its ImageNet weights (IMAGENET1K_V1) per backbone
BACKBONES: dict[Backbone, tuple[Callable[..., ResNet], WeightsEnum]] = {
    "resnet18": (resnet18, ResNet18_Weights.IMAGENET1K_V1),
    "wide_resnet50_2": (wide_resnet50_2, Wide_ResNet50_2_Weights.IMAGENET1K_V1),
}
FEATURE_CHANNELS: dict[Backbone, tuple[int, int, int]] = {  # layer1..layer3 output channels
    "resnet18": (64, 128, 256),
    "wide_resnet50_2": (256, 512, 1024),
}
_UNUSED_PREFIXES = ("layer4.", "fc.")  # in a full ResNet state dict, not in the teacher


class TeacherWeightsError(PfadsegError, RuntimeError):
    """Teacher weights that are missing, corrupt or do not fit the backbone."""


def imagenet_weights_file(backbone: Backbone = "resnet18") -> Path:
    """Where torchvision's IMAGENET1K_V1 file of ``backbone`` must lie: <torch hub dir>/checkpoints/<url name>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(BACKBONES[backbone][1].url).path).name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _weights_file(weights: str, backbone: Backbone) -> Path:
    """The file behind ``imagenet`` or a path, checked to exist (never downloads)."""
    if weights == "imagenet":
        path = imagenet_weights_file(backbone)
        if not path.is_file():
            raise TeacherWeightsError(
                f"teacher weights not found: place torchvision's {backbone} IMAGENET1K_V1 file "
                f"{path.name} (from {BACKBONES[backbone][1].url}) at {path} "
                "(the torch hub dir: set TORCH_HOME to move it); "
                "nothing is downloaded. For an offline smoke run use model.teacher_weights: random")
        return path
    path = Path(weights)
    if not path.is_file():
        raise TeacherWeightsError(f"teacher weights file not found: {weights!r} (model.teacher_weights takes "
                                  f"'imagenet', 'random' or the path to a {backbone} state dict)")
    return path


def teacher_identity(weights: str, backbone: Backbone = "resnet18") -> dict[str, str | None]:
    """Provenance of ``model.teacher_weights``: name, file and sha256 of the weight file, or ``random``."""
    if weights == "random":
        return {"name": "random" if backbone == "resnet18" else f"random {backbone}", "file": None, "sha256": "random"}
    path = _weights_file(weights, backbone)
    sha = _sha256(path)
    if weights == "imagenet":
        # torchvision file names carry the first hex digits of the file's sha256: <backbone>-<prefix>.pth
        prefix = path.stem.rsplit("-", 1)[-1]
        if not sha.startswith(prefix):
            raise TeacherWeightsError(f"{path}: sha256 {sha[:12]}... does not start with {prefix} as "
                                      "torchvision's file name says: the file is corrupt or incomplete; "
                                      "replace it")
        return {"name": f"torchvision {backbone} {BACKBONES[backbone][1]}", "file": str(path), "sha256": sha}
    return {"name": str(path), "file": str(path), "sha256": sha}


class Teacher(nn.Module):
    """ResNet stem + layer1..layer3 -> (C1@1/4, C2@1/8, C3@1/16), ``FEATURE_CHANNELS[backbone]``; frozen, always eval,
    detached."""

    def __init__(self, weights: str, backbone: Backbone = "resnet18") -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"Teacher: backbone must be one of {', '.join(BACKBONES)}, got {backbone!r}")
        self.backbone = backbone
        net = BACKBONES[backbone][0](weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        self.identity = teacher_identity(weights, backbone)
        if weights == "random":
            log.warning("teacher uses RANDOM weights (model.teacher_weights: random): anomaly maps are "
                        "meaningless beyond smoke tests; set model.teacher_weights: imagenet for real runs")
        else:
            self._load(_weights_file(weights, backbone))
        self.requires_grad_(False)
        self.eval()

    def _load(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # unpickling errors come in many types
            raise TeacherWeightsError(f"{path}: not a loadable state dict ({load_problem(path, exc)}); download "
                                      "or copy it again") from None
        if not isinstance(state, Mapping):
            raise TeacherWeightsError(f"{path}: expected a state dict (name -> tensor), "
                                      f"got {type(state).__name__}")
        state = {k: v for k, v in state.items() if not k.startswith(_UNUSED_PREFIXES)}
        try:
            self.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise TeacherWeightsError(f"{path}: does not fit a torchvision {self.backbone} (layer1..layer3): "
                                      f"{exc}") from exc

    def train(self, mode: bool = True) -> Teacher:
        """Stays in eval mode whatever ``mode`` says (BN uses the ImageNet running statistics)."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # B x 3 x H x W -> (B x C1 x H/4 x W/4, B x C2 x H/8 x W/8, B x C3 x H/16 x W/16), detached
        with torch.no_grad():
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            f1 = self.layer1(x)
            f2 = self.layer2(f1)
            f3 = self.layer3(f2)
        return f1.detach(), f2.detach(), f3.detach()


def build_teacher(weights: str, backbone: Backbone) -> Teacher:
    """Frozen teacher on ``backbone`` with weights as ``model.teacher_weights`` gives them (``random``: init from
    torch's global RNG)."""
    return Teacher(weights, backbone)
