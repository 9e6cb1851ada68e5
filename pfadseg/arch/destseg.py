"""DeSTSeg and PFADSeg: teacher, denoising student and segmentation net, trained in two stages (PFADSeg §3).

DeSTSeg is this architecture with the three switches ``model.use_aff``, ``use_pcar``, ``use_rcm`` off.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pfadseg.arch.base import MODEL_COMMON_PARAMS, Architecture, ModelFile
from pfadseg.artifacts import ArtifactError
from pfadseg.config import Backbone, Config, select_params
from pfadseg.score.rule import ScoreRule
from pfadseg.synth.bank import BANK_PARAMS

STUDENT_FILE = ModelFile("student.pt", "pfadseg.student/1")
SEG_FILE = ModelFile("seg.pt", "pfadseg.seg/1")
SWITCHES = ("model.use_aff", "model.use_pcar", "model.use_rcm")


@dataclass(frozen=True)
class Variant:
    """A switch combination of the DeSTSeg family, the unit of PFADSeg's Table 4: which of AFF, PCAR (both in the
    PA blocks, §3.1-3.2) and RCM (the seg head, §3.3) are on. All off: DeSTSeg; all on: PFADSeg."""

    aff: bool
    pcar: bool
    rcm: bool

    @classmethod
    def of(cls, cfg: Config) -> Variant:
        return cls(cfg.model.use_aff, cfg.model.use_pcar, cfg.model.use_rcm)

    @property
    def name(self) -> str:
        """The modules that are on, e.g. ``aff+rcm`` (PFADSeg: ``aff+pcar+rcm``), or ``destseg``."""
        on = [n for n, flag in (("aff", self.aff), ("pcar", self.pcar), ("rcm", self.rcm)) if flag]
        return "+".join(on) or "destseg"

    @property
    def overrides(self) -> list[str]:
        """The ``-S`` values that select it (:data:`SWITCHES`)."""
        return [f"{key}={str(on).lower()}" for key, on in zip(SWITCHES, (self.aff, self.pcar, self.rcm), strict=True)]

    def apply(self, cfg: Config) -> Config:
        """``cfg`` with this variant's switches."""
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, use_aff=self.aff, use_pcar=self.pcar,
                                                                  use_rcm=self.rcm))


# The two ends of Table 4, as the benchmarks compare them
BENCH_VARIANTS = {"destseg": Variant(False, False, False), "pfadseg": Variant(True, True, True)}

# What the student's and the seg net's shape depend on: an ablation that changes only model.use_rcm restores
# every student from DVC's run cache.
_BLOCK_PARAMS = ("model.use_aff", "model.use_pcar", "model.aff", "model.spr", "model.pcar", "model.decoder_upsample")
_TRAIN_COMMON = (*MODEL_COMMON_PARAMS, *_BLOCK_PARAMS, *BANK_PARAMS, "bank.opacity_min", "bank.opacity_max",
                 "train.compile", "train.cuda_graphs", "train.checkpoint_every", "train.log_every", "train.augment")


class DeSTSegFamily(Architecture):
    """DeSTSeg/PFADSeg (``model.arch: pfadseg``): student.pt from ``train_student``, seg.pt from ``train_seg``."""

    name = "pfadseg"
    files = (STUDENT_FILE, SEG_FILE)
    train_stages = ("train_student", "train_seg")
    curves = ("student", "seg")  # its stages' dvclive folders (dvclive/<category>/seed<k>/<stage>)
    stage_params: Mapping[str, tuple[str, ...]] = {
        "train_student": (*_TRAIN_COMMON, "train.student"),
        "train_seg": (*_TRAIN_COMMON, "model.use_rcm", "model.rcm", "train.seg"),
    }
    model_params = (*MODEL_COMMON_PARAMS, *_BLOCK_PARAMS, "model.use_rcm", "model.rcm")
    score_params = ("eval.top_k",)
    score_range = (0.0, 1.0)  # the seg net's sigmoid; the top-k mean stays within
    report_params = (*SWITCHES, "train.student.iterations", "train.student.batch_size", "train.seg.iterations",
                     "train.seg.batch_size")

    def score_rule(self, cfg: Config) -> ScoreRule:
        return ScoreRule(cfg.eval.top_k)

    def teacher_backbone(self, cfg: Config) -> Backbone:
        return "resnet18"  # the protocol's, whatever model.adps.backbone says

    def variant(self, cfg: Config) -> str:
        return Variant.of(cfg).name

    def describe_model(self, cfg: Config) -> str:
        return (f"{self.variant(cfg)} (use_aff={cfg.model.use_aff}, use_pcar={cfg.model.use_pcar}, "
                f"use_rcm={cfg.model.use_rcm})")

    def describe_schedule(self, cfg: Config) -> str:
        return (f"student {cfg.train.student.iterations} it x {cfg.train.student.batch_size}, "
                f"seg {cfg.train.seg.iterations} it x {cfg.train.seg.batch_size}, {cfg.data.image_size} px")

    def check_stored(self, path: Path, stored: Config, cfg: Config) -> None:
        """A seg net trained with other switches than ``cfg``'s cannot serve it."""
        if path.name != SEG_FILE.name:
            return
        trained, wanted = select_params(stored, SWITCHES), select_params(cfg, SWITCHES)
        if trained != wanted:
            raise ArtifactError(f"{path}: trained with {trained}, but params.yaml gives {wanted}; "
                             "retrain the segmentation net")


DESTSEG = DeSTSegFamily()
