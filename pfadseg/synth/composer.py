"""The on-device training batch: normal image rotation plus bank-drawn Perlin anomalies (as DeSTSeg's MVTecDataset).

:class:`BatchComposer` makes a whole batch with a handful of tensor ops on the training device, drawing every
random number from one seeded ``torch.Generator`` and never syncing with the host. Per sample it takes:

* a training image, rotated per its category's group (DeSTSeg's train.py): none; U[-d, d]; or a uniform quarter
  turn then U[-d, d]; bilinear, no expansion, fill RGB (fill, fill, fill);
* a bank mask under a random element of the 8 flips/90-degree rotations and a uniform cyclic offset. Both
  permute pixels, so the coverage of every draw, and thus the empty share and coverage distribution of
  the masks, are exactly those of the bank. Deviation, documented: the offset makes the anomaly
  position uniform over the image (DeSTSeg's zero-filled rotation corners move with it) and can split a blob
  that touched the border along a straight seam;
* a bank texture, as stored: not rotated, flipped or otherwise augmented (as DeSTSeg);
* a texture weight (opacity) beta ~ U(opacity_min, opacity_max] and the blend of DeSTSeg's perlin_noise. The
  blend is an affine combination per pixel and the ImageNet normalisation is affine per channel, so
  blending normalised images (as done here, to save passes) equals normalising the [0, 1]-space blend.

:func:`compose_sample_reference` is the DeSTSeg-style per-sample path in numpy, kept for tests and the
benchmark.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pfadseg.config import AugmentConfig, BankConfig, Config
from pfadseg.data.images import IMAGENET_MEAN, IMAGENET_STD, normalize
from pfadseg.synth.bank import AnomalyBank, transpose_packed_masks, unpack_masks
from pfadseg.synth.perlin import perlin_mask_reference, rotation_grid, rotation_theta

AugmentGroup = Literal["none", "slight", "rotate"]
Batch = dict[str, torch.Tensor]


def blend(
    image: torch.Tensor,
    texture: torch.Tensor,
    mask: torch.Tensor,
    beta: torch.Tensor,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """I(1-M) + beta A M + (1-beta) I M for a binary M, as lerp(I, A, beta M) (DeSTSeg's/DRAEM's blend).

    Exactly I where M = 0. ``out`` may be ``texture`` itself (saves a buffer). An affine combination per
    pixel, the blend commutes with the per-channel ImageNet normalisation: normalised images can be blended.
    """
    return torch.lerp(image, texture, mask * beta, out=out)


def _sample_rotated(
    images: torch.Tensor,
    degrees: torch.Tensor,
    quarter_turns: torch.Tensor | None,
    grid_out: torch.Tensor | None = None,
) -> torch.Tensor:
    theta = rotation_theta(degrees, quarter_turns).to(images.dtype)
    grid = rotation_grid(theta, images.shape[-1], out=grid_out)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotate_images(
    images: torch.Tensor,
    degrees: torch.Tensor,
    fill: float | torch.Tensor,
    quarter_turns: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rotate float images B x C x S x S counter-clockwise (as PIL) about the centre, bilinear, constant fill.

    Sampling ``images - fill`` with zero padding and adding ``fill`` back is exactly bilinear sampling with a
    constant border of ``fill`` (a scalar or a per-channel 1 x C x 1 x 1 tensor). ``quarter_turns`` adds exact
    90-degree turns (DeSTSeg's rotate_90).
    """
    return _sample_rotated(images - fill, degrees, quarter_turns).add_(fill)


class BatchComposer:
    """Synthetic-anomaly training batches composed on the device from a bank (as DeSTSeg's MVTecDataset)."""

    def __init__(
        self,
        images: torch.Tensor,
        masks_packed: torch.Tensor,
        textures: torch.Tensor,
        group: AugmentGroup,
        bank_cfg: BankConfig,
        augment: AugmentConfig,
        generator: torch.Generator,
    ) -> None:
        """``images`` uint8 N x 3 x S x S, ``masks_packed`` K x S x S/8 and ``textures`` M x 3 x S x S."""
        size = images.shape[-1]
        checks = {
            "images": (images, (3, size, size)),
            "masks_packed": (masks_packed, (size, size // 8)),
            "textures": (textures, (3, size, size)),
        }
        for name, (tensor, tail) in checks.items():
            if tensor.dtype != torch.uint8 or tuple(tensor.shape[1:]) != tail or len(tensor) == 0:
                raise ValueError(f"{name}: expected uint8 n x {' x '.join(map(str, tail))} with n >= 1, got "
                                 f"{tensor.dtype} {tuple(tensor.shape)}")
            if tensor.device.type != generator.device.type:
                raise ValueError(f"{name} is on {tensor.device} but the generator on {generator.device}")
        if group not in ("none", "slight", "rotate"):
            raise ValueError(f"unknown augmentation group {group!r}")
        self.images, self.masks_packed, self.textures = images, masks_packed, textures
        self.group, self.generator = group, generator
        self.size = size
        self.device = images.device
        self.slight_degrees = augment.slight_degrees
        self.opacity_min, self.opacity_max = bank_cfg.opacity_min, bank_cfg.opacity_max
        # normalize() is affine per channel: uint8 x -> x * scale + bias, and the fill in normalised units.
        zero = torch.zeros(1, 3, 1, 1, device=self.device)
        self._bias = normalize(zero)
        self._scale = normalize(zero + 1 / 255) - self._bias
        # The same constants as Python floats: a scalar op per channel is several times faster on a CPU than
        # one op broadcasting a 1 x 3 x 1 x 1 tensor, and needs no host sync on a GPU (they are fixed here).
        self._affine = [(float(a), float(b)) for a, b in zip(self._scale.flatten(), self._bias.flatten(), strict=True)]
        self._fill_value = float(augment.fill)
        self._arange = torch.arange(size, device=self.device)
        # The bank's masks followed by their transposes, as one table of packed rows: a transposed draw reads
        # the transposed mask, so each of the 8 flips/90-degree turns is a row pick and a column gather.
        self._mask_rows = torch.cat([masks_packed, transpose_packed_masks(masks_packed)]).flatten(0, 1)
        self._workspace: dict[str, torch.Tensor] = {}

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A private scratch tensor, kept between calls: never part of a returned batch."""
        buffer = self._workspace.get(name)
        if buffer is None or buffer.shape != shape or buffer.dtype != dtype:
            buffer = self._workspace[name] = torch.empty(shape, dtype=dtype, device=self.device)
        return buffer

    def _randint(self, high: int, *shape: int) -> torch.Tensor:
        return torch.randint(high, shape, generator=self.generator, device=self.device)

    def _rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator, device=self.device)

    def normalize_255(
        self, images: torch.Tensor, *, fill_offset: bool = False, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """B x 3 x S x S in [0, 255] (uint8 or float) -> float ImageNet-normalised images, into ``out`` or a new
        tensor; minus the normalised fill if ``fill_offset``."""
        out = torch.empty(images.shape, device=self.device) if out is None else out
        out.copy_(images)  # one conversion pass, then in-place scalar ops per channel: no float temporaries
        for c, (scale, bias) in enumerate(self._affine):
            out[:, c].mul_(scale).add_(-self._fill_value * scale if fill_offset else bias)
        return out

    def _pick(self, pool: torch.Tensor, b: int, name: str) -> torch.Tensor:
        """b uniform draws (with replacement) from a uint8 pool, into the scratch tensor ``name``."""
        out = self._buffer(name, (b, *pool.shape[1:]), pool.dtype)
        return torch.index_select(pool, 0, self._randint(len(pool), b), out=out)

    def _origin(self, b: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """The normal images, rotated per the group. ``out`` is filled unless a rotation makes a new tensor
        (``grid_sample`` has no true out= kernel): use the returned tensor."""
        images = self._pick(self.images, b, "images")
        if self.group == "none":
            return self.normalize_255(images, out=out)
        degrees = (2 * self._rand(b) - 1) * self.slight_degrees
        quarter_turns = self._randint(4, b) if self.group == "rotate" else None
        # rotate_images in normalised units: sample (x - fill) with zero padding, then add the fill back.
        shifted = self.normalize_255(images, fill_offset=True, out=self._buffer("shifted", images.shape))
        grid = self._buffer("grid", (b, self.size, self.size, 2))
        rotated = _sample_rotated(shifted, degrees, quarter_turns, grid_out=grid)
        for c, (scale, bias) in enumerate(self._affine):
            rotated[:, c].add_(bias + self._fill_value * scale)
        return rotated

    def _masks(self, b: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """b bank masks, each under a random flip/90-degree turn and cyclic offset: float B x 1 x S x S."""
        s = self.size
        index = self._randint(len(self.masks_packed), b)
        flip_rows, flip_cols, transpose = self._randint(2, 3, b).bool()[..., None]
        offsets = self._randint(s, 2, b)[..., None]
        rows = (torch.where(flip_rows, s - 1 - self._arange, self._arange) + offsets[0]) % s
        cols = (torch.where(flip_cols, s - 1 - self._arange, self._arange) + offsets[1]) % s
        # Output (i, j) reads source (rows[i], cols[j]), or, transposed, (rows[j], cols[i]) = transposed
        # source (cols[i], rows[j]). The rows are picked while still bit-packed, in one index_select.
        row_pick, col_pick = torch.where(transpose, cols, rows), torch.where(transpose, rows, cols)
        source = (index + transpose[:, 0] * len(self.masks_packed))[:, None] * s + row_pick
        packed = torch.index_select(self._mask_rows, 0, source.flatten(),
                                    out=self._buffer("packed", (b * s, s // 8), torch.uint8))
        bits = unpack_masks(packed.view(b, s, s // 8), out=self._buffer("bits", (b, s, s), torch.uint8))
        picked = torch.gather(bits, 2, col_pick[:, None, :].expand(b, s, s),
                              out=self._buffer("picked", (b, s, s), torch.uint8))
        out = torch.empty((b, 1, s, s), device=self.device) if out is None else out
        return out.copy_(picked.unsqueeze(1))

    def _textures(self, b: int, out: torch.Tensor | None = None) -> torch.Tensor:
        return self.normalize_255(self._pick(self.textures, b, "textures"), out=out)

    def _outputs(self, b: int, reuse: Batch | None) -> Batch:
        """The tensors a batch is written into: ``reuse``'s, checked, or new ones."""
        shapes = {"img_aug": (b, 3, self.size, self.size), "img_origin": (b, 3, self.size, self.size),
                  "mask": (b, 1, self.size, self.size)}
        if reuse is None:
            return {key: torch.empty(shape, device=self.device) for key, shape in shapes.items()}
        for key, shape in shapes.items():
            tensor = reuse.get(key)
            if tensor is None or tuple(tensor.shape) != shape or tensor.dtype != torch.float32 \
                    or tensor.device != self.device or not tensor.is_contiguous():
                raise ValueError(f"reuse: expected an earlier batch of {b} from this composer, but {key!r} is "
                                 f"{None if tensor is None else (tensor.dtype, tuple(tensor.shape))}")
        return reuse

    def sample(self, batch_size: int, reuse: Batch | None = None) -> Batch:
        """``img_aug``, ``img_origin``: float B x 3 x S x S, normalised; ``mask``: float B x 1 x S x S.

        ``reuse``: an earlier batch of the same size that the caller is done with; its tensors are overwritten
        (on a CPU, fresh output tensors cost about as much as composing them).
        """
        out = self._outputs(batch_size, reuse)
        origin = self._origin(batch_size, out["img_origin"])
        mask = self._masks(batch_size, out["mask"])
        texture = self._textures(batch_size, out["img_aug"])
        beta = self.opacity_max - (self.opacity_max - self.opacity_min) * self._rand(batch_size, 1, 1, 1)
        augmented = blend(origin, texture, mask, beta, out=texture)
        return {"img_aug": augmented, "img_origin": origin, "mask": mask}


def make_composer(
    cfg: Config,
    category: str,
    train_images_uint8: np.ndarray,
    bank: AnomalyBank,
    device: torch.device | str,
    generator: torch.Generator,
) -> BatchComposer:
    """A composer for ``category``: its images (uint8 N x S x S x 3) and the bank, moved to ``device``."""
    size = cfg.data.image_size
    if train_images_uint8.dtype != np.uint8 or train_images_uint8.shape[1:] != (size, size, 3):
        raise ValueError(f"{category}: training images must be uint8 N x {size} x {size} x 3 "
                         f"(data.image_size), got {train_images_uint8.dtype} {train_images_uint8.shape}")
    images = torch.from_numpy(np.ascontiguousarray(train_images_uint8.transpose(0, 3, 1, 2))).to(device)
    return BatchComposer(images, bank.masks_tensor(device), bank.textures_tensor(device),
                         cfg.train.augment.group_of(category), cfg.bank, cfg.train.augment, generator)


def _normalize_np(image: np.ndarray) -> np.ndarray:
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    return ((image - mean) / std).transpose(2, 0, 1)


def compose_sample_reference(
    image_uint8_hwc: np.ndarray,
    texture_uint8_hwc: np.ndarray,
    rng: np.random.Generator,
    bank_cfg: BankConfig,
    group: AugmentGroup,
    augment: AugmentConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sample the DeSTSeg way (PIL rotation, own Perlin mask, blend, normalise): CHW float32 arrays.

    Returns ``(img_aug, img_origin, mask)`` shaped 3 x S x S, 3 x S x S, 1 x S x S (as DeSTSeg's MVTecDataset).
    """
    pil = Image.fromarray(image_uint8_hwc)
    if group != "none":
        angle = rng.uniform(-augment.slight_degrees, augment.slight_degrees)
        if group == "rotate":
            angle += 90 * int(rng.integers(4))
        pil = pil.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=(augment.fill,) * 3)
    origin = np.asarray(pil, dtype=np.float32) / 255
    mask = perlin_mask_reference(origin.shape[0], bank_cfg, rng).astype(np.float32)[..., None]
    beta = bank_cfg.opacity_max - rng.uniform(0, bank_cfg.opacity_max - bank_cfg.opacity_min)
    texture = texture_uint8_hwc.astype(np.float32) / 255
    augmented = origin * (1 - mask) + beta * texture * mask + (1 - beta) * origin * mask
    return _normalize_np(augmented), _normalize_np(origin), mask.transpose(2, 0, 1)
