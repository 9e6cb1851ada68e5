"""What ``params.yaml`` may hold: its sections as frozen pydantic dataclasses.

The dataclasses carry no defaults: every value comes from ``params.yaml``, the single source of truth.
Validation is pydantic's, strict (no coercion: ``"1"`` is no integer, ``1`` no boolean), with unknown keys
forbidden, floats finite and the bounds of each field in its annotation; a section's ``validate`` checks what
involves several of its fields. :mod:`pfadseg.config.loading` builds them and words the errors.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from pfadseg.data.sources import SOURCES
from pfadseg.errors import PfadsegError

log = logging.getLogger(__name__)

# A category names a folder and is one argument of a stage command in dvc.yaml (single-quoted there), so it may hold
# spaces, unicode and shell characters, but not these: a path separator, the quote, DVC's stage-name separator '@'.
CATEGORY_FORBIDDEN = ("/", "\\", "'", "@")
# PFADSeg's student (AFF or PCAR on) diverges below this batch size with loss_reduction: sum at the protocol's lr 0.5:
# its weights and BN statistics grow without bound while the loss falls (measured at batch 2; batch 3 and up, and
# DeSTSeg's student, stay bounded). The training loop's divergence guard stops such a run.
STUDENT_SAFE_BATCH = 3

# Every section: strict types, no unknown keys, finite floats (each also frozen: @dataclass(frozen=True)).
STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class ConfigError(PfadsegError, ValueError):
    """A params file or override that cannot be used; the message names the key."""

    exit_status = 2


@dataclass(frozen=True, config=STRICT)
class ArchiveConfig:
    url: str
    sha256: str | None  # null: unknown; the download prints the computed sha256 and asks to pin it


@dataclass(frozen=True, config=STRICT)
class ArchiveLimitsConfig:
    """How far a downloaded archive may expand; a larger one (a zip or tar bomb) fails before anything is written."""

    max_extracted_gib: Annotated[float, Field(gt=0.0)]  # all members together
    # uncompressed / compressed size: per member of a zip, the whole of a tar
    max_ratio: Annotated[float, Field(ge=1.0)]


@dataclass(frozen=True, config=STRICT)
class SyntheticDataConfig:
    image_size: Annotated[int, Field(ge=32, le=4096)]  # 32: smaller defects miss AREA_RANGE (data.procedural)
    n_train: Annotated[int, Field(ge=1)]
    n_test_good: Annotated[int, Field(ge=1)]
    n_test_per_defect: Annotated[int, Field(ge=1)]
    n_defect_types: Annotated[int, Field(ge=1, le=6)]
    seed: Annotated[int, Field(ge=0)]


@dataclass(frozen=True, config=STRICT)
class ProceduralTexturesConfig:
    n_classes: Annotated[int, Field(ge=1)]
    per_class: Annotated[int, Field(ge=1)]
    image_size: Annotated[int, Field(ge=32, le=4096)]  # 32: pfadseg.data.images.MIN_IMAGE_SIDE
    seed: Annotated[int, Field(ge=0)]


@dataclass(frozen=True, config=STRICT)
class DataConfig:
    source: Literal["mvtec", "synthetic", "folder", "ksdd2"]
    root: str | None
    textures: Literal["dtd", "procedural"]
    image_size: Annotated[int, Field(ge=64, le=1024)]
    categories: list[str]
    mvtec: ArchiveConfig
    dtd: ArchiveConfig
    ksdd2: ArchiveConfig
    archive_limits: ArchiveLimitsConfig
    synthetic: SyntheticDataConfig
    procedural_textures: ProceduralTexturesConfig

    def validate(self, key: str) -> None:
        if not self.categories:
            raise ConfigError(f"{key}.categories: must name at least one category")
        for name in self.categories:
            if problem := category_name_problem(name):
                raise ConfigError(f"{key}.categories: {name!r} cannot be a category name: {problem}")
        if len(set(self.categories)) != len(self.categories):
            raise ConfigError(f"{key}.categories: duplicate names in {self.categories}")
        if self.image_size % 32:
            raise ConfigError(f"{key}.image_size: must be a multiple of 32 (the student reaches 1/32), "
                              f"got {self.image_size}")
        source = SOURCES[self.source]
        if source.reads_root and not self.root:
            raise ConfigError(f"{key}.root: required when data.source is {self.source} (your dataset in MVTec "
                              "layout)")
        if problem := source.category_problem(self.categories):
            raise ConfigError(f"{key}.categories: {problem}")


def category_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a category (a folder and a stage argument), or None."""
    if name.strip() in ("", ".", ".."):
        return "it names no folder (empty, '.' or '..')"
    if name != name.strip():
        return "leading or trailing spaces (a folder name that is easy to get wrong)"
    if bad := [c for c in CATEGORY_FORBIDDEN if c in name]:
        return f"it holds {' '.join(bad)} (allowed: any other printable characters, spaces and unicode included)"
    if any(not c.isprintable() for c in name):
        return "it holds a control character (a newline or tab, say)"
    return None


@dataclass(frozen=True, config=STRICT)
class BankConfig:
    n_masks: Annotated[int, Field(ge=1)]
    n_textures: Annotated[int, Field(ge=1)]
    perlin_min_exponent: Annotated[int, Field(ge=0, le=8)]
    perlin_max_exponent: Annotated[int, Field(ge=0, le=8)]
    perlin_threshold: Annotated[float, Field(ge=-1.0, le=1.0)]
    rotation_degrees: Annotated[float, Field(ge=0.0, le=180.0)]
    opacity_min: Annotated[float, Field(ge=0.0, le=1.0)]
    opacity_max: Annotated[float, Field(ge=0.0, le=1.0)]
    texture_augment: bool

    def validate(self, key: str) -> None:
        if self.perlin_min_exponent > self.perlin_max_exponent:
            raise ConfigError(f"{key}.perlin_min_exponent: must not exceed perlin_max_exponent")
        if self.opacity_min >= self.opacity_max:
            raise ConfigError(f"{key}.opacity_min: must be below opacity_max")


@dataclass(frozen=True, config=STRICT)
class AFFConfig:
    reduction: Annotated[int, Field(ge=1)]
    factor_two: bool


@dataclass(frozen=True, config=STRICT)
class SPRConfig:
    reduction: Annotated[int, Field(ge=1)]


@dataclass(frozen=True, config=STRICT)
class PCARConfig:
    branches: Literal["dilated", "kernels", "plain"]
    shared_spr: bool
    softmax: Literal["branch", "pixel"]


@dataclass(frozen=True, config=STRICT)
class RCMConfig:
    band_kernel: Annotated[int, Field(ge=1)]
    square_kernel: Annotated[int, Field(ge=1)]
    mlp_ratio: Annotated[int, Field(ge=1)]
    layer_scale_init: Annotated[float, Field(ge=0.0)]

    def validate(self, key: str) -> None:
        for name in ("band_kernel", "square_kernel"):
            if getattr(self, name) % 2 == 0:
                raise ConfigError(f"{key}.{name}: must be odd (an even kernel changes the map size)")


Backbone = Literal["resnet18", "wide_resnet50_2"]  # torchvision ResNets a teacher/student can be built on


@dataclass(frozen=True, config=STRICT)
class ADPSConfig:
    """ADPS (Xing et al., TNNLS 2024, Sec. III): every field is a detail the paper leaves open except ``k``."""

    backbone: Backbone
    k: Annotated[int, Field(ge=1, le=64)]
    split_at: Literal["input", "stage1", "stage2"]
    wmb_detach_student: bool
    psm_widths: list[int]
    target_resize: Literal["bilinear", "maxpool"]
    clamp_anomalous_cos: bool
    score_sigma: Annotated[float, Field(ge=0.0)]

    def validate(self, key: str) -> None:
        if len(self.psm_widths) != 4 or min(self.psm_widths) < 1:
            raise ConfigError(f"{key}.psm_widths: expected 4 positive widths (up-blocks 1..4), got {self.psm_widths}")


@dataclass(frozen=True, config=STRICT)
class ModelConfig:
    arch: Literal["pfadseg", "adps"]
    use_aff: bool
    use_pcar: bool
    use_rcm: bool
    teacher_weights: str
    aff: AFFConfig
    spr: SPRConfig
    pcar: PCARConfig
    rcm: RCMConfig
    decoder_upsample: Literal["between_stages", "in_block"]
    adps: ADPSConfig


@dataclass(frozen=True, config=STRICT)
class AugmentConfig:
    slight_degrees: Annotated[float, Field(ge=0.0, le=180.0)]
    fill: Annotated[int, Field(ge=0, le=255)]
    none: list[str]
    slight: list[str]
    rotate: list[str]

    def validate(self, key: str) -> None:
        seen: dict[str, str] = {}
        for group in ("none", "slight", "rotate"):
            for cat in getattr(self, group):
                if cat in seen:
                    raise ConfigError(f"{key}.{group}: {cat!r} is also in {key}.{seen[cat]}")
                seen[cat] = group

    def group_of(self, category: str) -> Literal["none", "slight", "rotate"]:
        """Rotation group of a category; categories listed nowhere get none."""
        if category in self.rotate:
            return "rotate"
        if category in self.slight:
            return "slight"
        return "none"


@dataclass(frozen=True, config=STRICT)
class StudentTrainConfig:
    iterations: Annotated[int, Field(ge=1)]
    batch_size: Annotated[int, Field(ge=2)]
    lr: Annotated[float, Field(gt=0.0)]
    momentum: Annotated[float, Field(ge=0.0, le=1.0)]
    weight_decay: Annotated[float, Field(ge=0.0)]
    loss_reduction: Literal["sum", "mean"]


@dataclass(frozen=True, config=STRICT)
class SegTrainConfig:
    iterations: Annotated[int, Field(ge=1)]
    batch_size: Annotated[int, Field(ge=2)]
    lr_res: Annotated[float, Field(gt=0.0)]
    lr_head: Annotated[float, Field(gt=0.0)]
    momentum: Annotated[float, Field(ge=0.0, le=1.0)]
    weight_decay: Annotated[float, Field(ge=0.0)]
    focal_gamma: Annotated[float, Field(ge=0.0)]
    focal_weight: Annotated[float, Field(ge=0.0)]
    l1_weight: Annotated[float, Field(ge=0.0)]


@dataclass(frozen=True, config=STRICT)
class ADPSTrainConfig:
    """ADPS joint training (ADPS Sec. III-IV): one stage trains student and post-segmentation module."""

    epochs: Annotated[int, Field(ge=1)]
    batch_size: Annotated[int, Field(ge=2)]
    lr: Annotated[float, Field(gt=0.0)]
    milestones: list[int]
    lr_decay: Annotated[float, Field(gt=0.0, le=1.0)]
    focal_gamma: Annotated[float, Field(ge=0.0)]
    seg_weight: Annotated[float, Field(ge=0.0)]
    synthesis: Literal["draem", "destseg"]
    clean_probability: Annotated[float, Field(ge=0.0, le=1.0)]
    rotate_probability: Annotated[float, Field(ge=0.0, le=1.0)]
    rotate_degrees: Annotated[float, Field(ge=0.0, le=180.0)]

    def validate(self, key: str) -> None:
        if sorted(self.milestones) != self.milestones or any(not 0 < m < self.epochs for m in self.milestones):
            raise ConfigError(f"{key}.milestones: must be increasing epochs between 1 and epochs - 1 "
                              f"({self.epochs - 1}), got {self.milestones}")


@dataclass(frozen=True, config=STRICT)
class TrainConfig:
    device: Literal["auto", "cpu", "cuda"]
    amp: bool
    channels_last: bool
    fewer_kernels: bool
    accelerator_path_on_cpu: bool
    compile: bool
    cuda_graphs: bool
    checkpoint_every: Annotated[int, Field(ge=1)]
    log_every: Annotated[int, Field(ge=1)]
    augment: AugmentConfig
    student: StudentTrainConfig
    seg: SegTrainConfig
    adps: ADPSTrainConfig


@dataclass(frozen=True, config=STRICT)
class CalibrateConfig:
    n_samples: Annotated[int, Field(ge=2)]


@dataclass(frozen=True, config=STRICT)
class EvalConfig:
    batch_size: Annotated[int, Field(ge=1)]
    top_k: Annotated[int, Field(ge=1)]
    aupro_mode: Literal["mvtec", "destseg"]
    aupro_fpr_limit: Annotated[float, Field(gt=0.0, le=1.0)]


@dataclass(frozen=True, config=STRICT)
class ReportConfig:
    figure_examples: Annotated[int, Field(ge=1, le=32)]


@dataclass(frozen=True, config=STRICT)
class Config:
    seed: Annotated[int, Field(ge=0)]
    seeds: list[int]
    data: DataConfig
    bank: BankConfig
    model: ModelConfig
    train: TrainConfig
    calibrate: CalibrateConfig
    eval: EvalConfig
    report: ReportConfig

    def validate(self, key: str) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ConfigError(f"seeds: must list at least one distinct non-negative seed, got {self.seeds}")
        student = self.train.student
        if (student.batch_size < STUDENT_SAFE_BATCH and student.loss_reduction == "sum"
                and (self.model.use_aff or self.model.use_pcar) and self.model.arch == "pfadseg"):
            log.warning("train.student.batch_size %d is below %d: with loss_reduction sum at lr %g, PFADSeg's student "
                        "is known to diverge (weights and BN statistics grow without bound while the loss falls); "
                        "use a batch of %d or more, a lower lr, or loss_reduction mean", student.batch_size,
                        STUDENT_SAFE_BATCH, student.lr, STUDENT_SAFE_BATCH)
        pixels = self.data.image_size ** 2  # every architecture's anomaly map is data.image_size square
        if not 1 <= self.eval.top_k <= pixels:
            raise ConfigError(f"eval.top_k: {self.eval.top_k} exceeds the {pixels} pixels of a "
                              f"{self.data.image_size} x {self.data.image_size} anomaly map (data.image_size); "
                              f"use at most {pixels}")
        if self.model.arch == "adps" and self.data.image_size % (16 * self.model.adps.k):
            raise ConfigError(f"model.adps.k: data.image_size ({self.data.image_size}) must be a multiple of 16 * k "
                              f"= {16 * self.model.adps.k}, so every patch reaches the student's 1/16 level")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (what gets stored beside models and results)."""
        return dataclasses.asdict(self)
