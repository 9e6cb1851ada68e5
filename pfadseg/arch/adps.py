"""ADPS (Xing et al., TNNLS 2024): patch student, Weight Mask Block and post-segmentation module, trained jointly
in one stage (Xing et al. Sec. III, Eq. 9); image score: max of the Gaussian-smoothed map (Algorithm 1)."""

from __future__ import annotations

from collections.abc import Mapping

from pfadseg.arch.base import MODEL_COMMON_PARAMS, Architecture, ModelFile
from pfadseg.config import Backbone, Config
from pfadseg.score.rule import ScoreRule
from pfadseg.synth.bank import BANK_PARAMS

ADPS_FILE = ModelFile("adps.pt", "pfadseg.adps/1")  # the trained student and PSM weights (not the teacher)


class ADPSArchitecture(Architecture):
    """ADPS (``model.arch: adps``): adps.pt from its one joint training stage ``train_adps``."""

    name = "adps"
    files = (ADPS_FILE,)
    train_stages = ("train_adps",)
    curves = ("adps",)  # its stages' dvclive folders (dvclive/<category>/seed<k>/<stage>)
    model_params = (*MODEL_COMMON_PARAMS, "model.adps")
    stage_params: Mapping[str, tuple[str, ...]] = {
        "train_adps": (*model_params, *BANK_PARAMS, "bank.opacity_min", "bank.opacity_max", "train.compile",
                       "train.cuda_graphs", "train.checkpoint_every", "train.log_every", "train.augment", "train.adps"),
    }
    score_params = ("eval.top_k", "model.adps.score_sigma")
    score_range = (0.0, 1.0)  # the PSM's softmax anomaly channel; Gaussian smoothing (weights summing to 1) keeps it
    report_params = ("model.adps.k", "model.adps.split_at", "train.adps.epochs", "train.adps.batch_size",
                     "train.adps.lr", "train.adps.synthesis")

    def score_rule(self, cfg: Config) -> ScoreRule:
        return ScoreRule(cfg.eval.top_k, cfg.model.adps.score_sigma)

    def teacher_backbone(self, cfg: Config) -> Backbone:
        return cfg.model.adps.backbone

    def variant(self, cfg: Config) -> str:
        return "adps"

    def describe_model(self, cfg: Config) -> str:
        return f"ADPS (k={cfg.model.adps.k}, split at {cfg.model.adps.split_at}; open details: docs/deviations.md)"

    def describe_schedule(self, cfg: Config) -> str:
        adps = cfg.train.adps
        return (f"ADPS joint training {adps.epochs} epochs x batch {adps.batch_size} (Adam {adps.lr:g}), "
                f"{adps.synthesis} anomalies, {cfg.data.image_size} px")


ADPS = ADPSArchitecture()
