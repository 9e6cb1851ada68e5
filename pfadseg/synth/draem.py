"""DRAEM-recipe training batches for ADPS, composed on the device (DRAEM data_loader.py; ADPS Sec. III-D).

Per sample, as DRAEM's ``MVTecDRAEMTrainDataset``:

* a training image, with probability ``rotate_probability`` rotated by U[-rotate_degrees, rotate_degrees]
  (imgaug Affine: bilinear, zero fill, no expansion), else unchanged; no DeSTSeg category groups;
* with probability ``clean_probability`` left normal (empty mask, ``img_aug`` equal to ``img_origin``);
* otherwise a bank mask (drawn as :class:`~pfadseg.synth.composer.BatchComposer` does) over a bank texture
  augmented for this draw by 3 of DRAEM's 10 ops (:mod:`pfadseg.synth.texture_ops`), blended with
  beta ~ U[0, 1) * 0.8 as I (1 - M) + (1 - beta) A M + beta I M: texture opacity 1 - beta in (0.2, 1].
  DRAEM's constant, not ``bank.opacity_*`` (DeSTSeg's knobs, which this composer ignores).

The blend runs in [0, 255] and both images are ImageNet-normalised afterwards. DRAEM's empty Perlin masks
also give normal samples, as here through the bank's empty masks.
"""

from __future__ import annotations

import numpy as np
import torch

from pfadseg.config import ADPSTrainConfig, AugmentConfig, BankConfig, Config
from pfadseg.errors import UsageError
from pfadseg.synth.bank import AnomalyBank
from pfadseg.synth.composer import Batch, BatchComposer, blend, make_composer, rotate_images
from pfadseg.synth.texture_ops import augment_textures

DRAEM_MIN_OPACITY = 0.2  # DRAEM: beta = U[0, 1) * 0.8, texture weight 1 - beta


class DraemComposer(BatchComposer):
    """Synthetic-anomaly batches by the DRAEM recipe from the bank, on the device (ADPS Sec. III-D)."""

    def __init__(
        self,
        images: torch.Tensor,
        masks_packed: torch.Tensor,
        textures: torch.Tensor,
        bank_cfg: BankConfig,
        augment: AugmentConfig,
        generator: torch.Generator,
        adps: ADPSTrainConfig,
    ) -> None:
        """Tensors as :class:`BatchComposer`; the bank's textures must be stored unaugmented. ``adps`` gives
        ``clean_probability``, ``rotate_probability`` and ``rotate_degrees``."""
        super().__init__(images, masks_packed, textures, "none", bank_cfg, augment, generator)
        if bank_cfg.texture_augment:
            raise UsageError("bank.texture_augment: the DRAEM composer augments each texture draw itself; "
                             "build the bank with bank.texture_augment=false")
        self.clean_probability = adps.clean_probability
        self.rotate_probability = adps.rotate_probability
        self.rotate_degrees = adps.rotate_degrees

    def sample(self, batch_size: int, reuse: Batch | None = None) -> Batch:
        """``img_aug``, ``img_origin``: float B x 3 x S x S, normalised; ``mask``: float B x 1 x S x S.
        ``reuse`` as :meth:`BatchComposer.sample`."""
        b = batch_size
        out = self._outputs(b, reuse)
        origin = self._pick(self.images, b, "images").float()
        if self.rotate_probability > 0:
            degrees = (2 * self._rand(b) - 1) * self.rotate_degrees
            rotated = self._rand(b).lt(self.rotate_probability).view(b, 1, 1, 1)
            origin = torch.where(rotated, rotate_images(origin, degrees, 0.0), origin)
        mask = self._masks(b, out["mask"]).mul_(self._rand(b, 1, 1, 1).ge(self.clean_probability))
        texture = augment_textures(self._pick(self.textures, b, "textures"), self.generator)
        opacity = 1 - (1 - DRAEM_MIN_OPACITY) * self._rand(b, 1, 1, 1)
        augmented = blend(origin, texture, mask, opacity, out=texture)
        return {"img_aug": self.normalize_255(augmented, out=out["img_aug"]),
                "img_origin": self.normalize_255(origin, out=out["img_origin"]), "mask": mask}


def make_draem_composer(
    cfg: Config,
    category: str,
    train_images_uint8: np.ndarray,
    bank: AnomalyBank,
    device: torch.device | str,
    generator: torch.Generator,
) -> DraemComposer:
    """A DRAEM composer for ``category`` with ``cfg.train.adps``'s options (inputs as :func:`make_composer`)."""
    base = make_composer(cfg, category, train_images_uint8, bank, device, generator)
    return DraemComposer(base.images, base.masks_packed, base.textures, cfg.bank, cfg.train.augment, generator,
                         cfg.train.adps)
