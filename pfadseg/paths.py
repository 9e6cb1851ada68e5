"""Where each pipeline stage reads and writes, relative to the project root (mirrored by dvc.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """The pipeline's file layout under ``root``; dvc.yaml declares the same paths."""

    root: Path = Path(".")

    @property
    def archives(self) -> Path:
        return self.root / "data" / "archives"

    @property
    def images(self) -> Path:
        """The dataset every stage reads, in MVTec layout (the acquire_images output)."""
        return self.root / "data" / "raw" / "images"

    @property
    def textures(self) -> Path:
        """Anomaly-source textures, ``<class>/<image>`` (the acquire_textures output)."""
        return self.root / "data" / "raw" / "textures"

    @property
    def params_check(self) -> Path:
        """Written by the ``check_params`` stage once params.yaml validates; every other stage depends on it."""
        return self.root / "params.checked"

    @property
    def images_manifest(self) -> Path:
        return self.root / "data" / "raw" / "images_manifest.json"

    @property
    def textures_manifest(self) -> Path:
        return self.root / "data" / "raw" / "textures_manifest.json"

    @property
    def bank(self) -> Path:
        return self.root / "data" / "bank"

    def run_dir(self, kind: str, category: str, seed: int) -> Path:
        """``<kind>/<category>/seed<seed>``: one training run's folder under models, checkpoints, dvclive, plots."""
        return self.root / kind / category / f"seed{seed}"

    def model(self, category: str, seed: int, name: str) -> Path:
        """File ``name`` of a trained run (the architectures name their model files: pfadseg.arch)."""
        return self.run_dir("models", category, seed) / name

    def calibration(self, category: str, seed: int) -> Path:
        return self.model(category, seed, "calibration.json")

    def checkpoints(self, category: str, seed: int) -> Path:
        return self.run_dir("checkpoints", category, seed)

    def live(self, category: str, seed: int, stage: str) -> Path:
        return self.run_dir("dvclive", category, seed) / stage

    def metrics(self, category: str, seed: int) -> Path:
        return self.root / "metrics" / category / f"seed{seed}.json"

    def scores(self, category: str, seed: int) -> Path:
        return self.root / "scores" / category / f"seed{seed}.csv"

    def maps(self, category: str, seed: int) -> Path:
        return self.root / "maps" / category / f"seed{seed}.npz"

    def plots(self, category: str, seed: int) -> Path:
        return self.run_dir("plots", category, seed)

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def protocol_record(self) -> Path:
        """Where ``pfadseg run`` records each run's origin, device and times, and its wall time."""
        return self.reports / "protocol.md"
