"""DRAEM data_loader.py texture augmenters as batched torch ops (ADPS Sec. III-D follows DRAEM).

DRAEM draws 3 of these 10 imgaug augmenters without replacement for every anomaly-source texture and applies
them in the drawn order. Here each op works on float B x 3 x S x S RGB images in [0, 255], draws its own
parameters per sample from an explicit ``torch.Generator`` on the images' device (CPU or CUDA, no host sync),
and has a pure, parameter-taking form for tests. The parameter ranges are DRAEM's arguments, the rest imgaug's
defaults:

==================  ===========================================  ==================================================
op                  imgaug augmenter (DRAEM's arguments)          parameters per sample
==================  ===========================================  ==================================================
``gamma``           GammaContrast((0.5, 2.0), per_channel=True)  gamma ~ U(0.5, 2) per channel
``brightness``      MultiplyAndAddToBrightness(mul=(0.8, 1.2),   mul ~ U(0.8, 1.2), add ~ U(-30, 30), random order
                    add=(-30, 30))
``sharpness``       pillike.EnhanceSharpness()                   factor ~ U(0, 2)
``hue_saturation``  AddToHueAndSaturation((-50, 50),             hue, saturation ~ U{-50..50} independently
                    per_channel=True)
``solarize``        Solarize(0.5, threshold=(32, 128))           p = 0.5; threshold ~ U(32, 128), floored
``posterize``       Posterize()                                  bits ~ U{1..8}
``invert``          Invert()                                     none
``autocontrast``    pillike.Autocontrast()                       cutoff ~ U{0..20} percent, same for all channels
``equalize``        pillike.Equalize()                           none
``rotate``          Affine(rotate=(-45, 45))                     angle ~ U(-45, 45); bilinear, zero fill
==================  ===========================================  ==================================================

Where imgaug is not reproduced exactly: colour spaces are continuous (no uint8 rounding of H, S, Y inside an
op); MultiplyAndAddToBrightness uses the luma Y of YCrCb (imgaug picks per image one of YCrCb, HSV, HLS, Lab,
Luv, YUV; YUV has the same Y); DRAEM feeds cv2's BGR arrays to these RGB ops, which mirrors the hue shift
(a symmetric range, so the same distribution) and swaps the R/B luma weights. Equalize follows
``PIL.ImageOps.equalize`` (imgaug's own port for images of 64 x 64 and more divides by the pixels below 255
instead of below the top occupied level).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pfadseg.synth.perlin import rotation_grid, rotation_theta

_LUMA = (0.299, 0.587, 0.114)  # BT.601, cv2's RGB -> YCrCb Y


def _per_sample(p: torch.Tensor) -> torch.Tensor:
    """B or B x C parameters -> B x C x 1 x 1 (C = 1 broadcasts over the channels)."""
    return p.reshape(len(p), -1, 1, 1)


def gamma_contrast(x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """255 (x / 255) ** gamma; ``gamma`` B x 3 (per channel) or B."""
    return (x / 255).pow(_per_sample(gamma)).mul(255)


def multiply_and_add_to_brightness(
    x: torch.Tensor, mul: torch.Tensor, add: torch.Tensor, add_first: torch.Tensor
) -> torch.Tensor:
    """Luma Y -> Y * mul + add (or (Y + add) * mul where ``add_first``), clipped per step; chroma kept.

    With Cr and Cb fixed, a change of Y moves R, G and B by the same amount.
    """
    luma = sum(w * x[:, c : c + 1] for c, w in enumerate(_LUMA))
    mul, add, add_first = _per_sample(mul), _per_sample(add), _per_sample(add_first)
    first = torch.where(add_first, luma + add, luma * mul).clamp(0, 255)
    second = torch.where(add_first, first * mul, first + add).clamp(0, 255)
    return (x + (second - luma)).clamp(0, 255)


def enhance_sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ImageEnhance.Sharpness: lerp from the SMOOTH-filtered image (border pixels kept) to ``x``."""
    b, c, h, w = x.shape
    # PIL.ImageFilter.SMOOTH, built on the device (no host-to-device copy): [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13.
    kernel = torch.ones(1, 1, 3, 3, device=x.device, dtype=x.dtype)
    kernel[..., 1, 1] = 5
    kernel /= 13
    degenerate = x.clone()
    smooth = F.conv2d(x.reshape(b * c, 1, h, w), kernel).view(b, c, h - 2, w - 2)
    degenerate[..., 1:-1, 1:-1] = smooth.round()  # PIL's filtered image is uint8
    return torch.lerp(degenerate, x, _per_sample(factor).to(x.dtype)).clamp(0, 255)


def _rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RGB in [0, 255] -> hue in [0, 6) sextants, saturation in [0, 1], value in [0, 255]; each B x S x S."""
    r, g, b = x.unbind(1)
    value, arg = x.max(1)
    chroma = value - x.amin(1)
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue = torch.where(arg == 0, ((g - b) / safe).remainder(6),
                      torch.where(arg == 1, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = torch.where(chroma > 0, hue, torch.zeros_like(hue))
    saturation = torch.where(value > 0, chroma / torch.where(value > 0, value, torch.ones_like(value)), 0.0)
    return hue, saturation, value


def _hsv_to_rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    n = torch.arange(5, 0, -2, device=hue.device, dtype=hue.dtype).view(1, 3, 1, 1)  # R, G, B
    k = (n + hue.unsqueeze(1)).remainder(6)
    ramp = torch.minimum(k, 4 - k).clamp(0, 1)
    v = value.unsqueeze(1)
    return v - v * saturation.unsqueeze(1) * ramp


def add_to_hue_and_saturation(x: torch.Tensor, hue: torch.Tensor, saturation: torch.Tensor) -> torch.Tensor:
    """imgaug AddToHueAndSaturation with integer ``hue``, ``saturation`` (B, imgaug units in [-255, 255]).

    Hue moves by trunc(hue * 180 / 255) OpenCV steps of 2 degrees; saturation (0..255) by ``saturation``.
    """
    h, s, v = _rgb_to_hsv(x)
    steps = torch.sign(hue) * torch.div(hue.abs() * 12, 17, rounding_mode="floor")  # 180 / 255 = 12 / 17
    h = (h + _per_sample(steps).squeeze(1).to(x.dtype) / 30).remainder(6)  # 30 OpenCV steps per sextant
    s = (s + _per_sample(saturation).squeeze(1).to(x.dtype) / 255).clamp(0, 1)
    return _hsv_to_rgb(h, s, v)


def solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Invert the values >= ``threshold`` (B; a threshold above 255 leaves the image unchanged)."""
    return torch.where(x >= _per_sample(threshold), 255 - x, x)


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the ``bits`` (B, 1..8) most significant bits of each value: floor(x / 2^(8-bits)) 2^(8-bits)."""
    step = torch.pow(2.0, 8 - _per_sample(bits).to(x.dtype))
    return torch.div(x, step, rounding_mode="floor").mul(step)


def invert(x: torch.Tensor) -> torch.Tensor:
    """255 - x."""
    return 255 - x


def _levels(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer levels (B x 3 x S*S, int64) and their histograms (B x 3 x 256)."""
    levels = x.round().clamp(0, 255).long().flatten(2)
    histogram = torch.zeros(*levels.shape[:2], 256, dtype=torch.long, device=x.device)
    return levels, histogram.scatter_add_(2, levels, torch.ones_like(levels))


def _apply_lut(x: torch.Tensor, levels: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    return lut.gather(2, levels).view(x.shape).to(x.dtype)


def autocontrast(x: torch.Tensor, cutoff: torch.Tensor) -> torch.Tensor:
    """PIL ImageOps.autocontrast per channel, cutting ``cutoff`` percent (B, integer) at each end.

    The linear map is computed exactly in integers (PIL's float map can land one level lower at exact steps).
    """
    levels, histogram = _levels(x)
    n = levels.shape[-1]
    cumulative = histogram.cumsum(2)
    cut = (n * _per_sample(cutoff).squeeze(-1).long()) // 100  # B x 1 x 1
    lo = (cumulative <= cut).sum(2, keepdim=True)  # first level left after cutting `cut` pixels from below
    hi = (n - (cumulative - histogram) > cut).sum(2, keepdim=True) - 1  # last level left from above
    ramp = torch.arange(256, device=x.device)
    stretched = ((ramp - lo) * 255).div((hi - lo).clamp(min=1), rounding_mode="floor").clamp(0, 255)
    return _apply_lut(x, levels, torch.where(hi > lo, stretched, ramp))


def equalize(x: torch.Tensor) -> torch.Tensor:
    """PIL ImageOps.equalize per channel (a channel with a single level, or too few pixels, is unchanged)."""
    levels, histogram = _levels(x)
    top = histogram.gather(2, levels.amax(2, keepdim=True))  # pixels at the highest occupied level
    step = (levels.shape[-1] - top) // 255
    below = histogram.cumsum(2) - histogram
    ramp = torch.arange(256, device=x.device)
    lut = ((step // 2 + below) // step.clamp(min=1)).clamp(max=255)
    return _apply_lut(x, levels, torch.where(step > 0, lut, ramp))


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate square images by ``degrees`` (B) about the centre: bilinear, zero fill, no expansion."""
    grid = rotation_grid(rotation_theta(degrees).to(x.dtype), x.shape[-1])
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _uniform(b: int, generator: torch.Generator, lo: float, hi: float, *shape: int) -> torch.Tensor:
    return torch.rand((b, *shape), generator=generator, device=generator.device).mul_(hi - lo).add_(lo)


def _integers(b: int, generator: torch.Generator, lo: int, hi: int) -> torch.Tensor:
    """U{lo..hi}, both ends included."""
    return torch.randint(lo, hi + 1, (b,), generator=generator, device=generator.device)


def _solarize_threshold(b: int, generator: torch.Generator) -> tuple[torch.Tensor]:
    applied = _uniform(b, generator, 0.0, 1.0) < 0.5
    return (torch.where(applied, _uniform(b, generator, 32.0, 128.0).floor_(), 256.0),)


@dataclass(frozen=True)
class TextureOp:
    """A pure ``transform(x, *params)`` and ``sample(b, generator)``, its per-sample params (leading dim b)."""

    transform: Callable[..., torch.Tensor]
    sample: Callable[[int, torch.Generator], tuple[torch.Tensor, ...]]


# The 10 ops, in DRAEM's list order.
TEXTURE_OPS: dict[str, TextureOp] = {
    "gamma": TextureOp(gamma_contrast, lambda b, g: (_uniform(b, g, 0.5, 2.0, 3),)),
    "brightness": TextureOp(multiply_and_add_to_brightness, lambda b, g: (
        _uniform(b, g, 0.8, 1.2), _uniform(b, g, -30.0, 30.0), _uniform(b, g, 0.0, 1.0) < 0.5)),
    "sharpness": TextureOp(enhance_sharpness, lambda b, g: (_uniform(b, g, 0.0, 2.0),)),
    "hue_saturation": TextureOp(add_to_hue_and_saturation,
                                lambda b, g: (_integers(b, g, -50, 50), _integers(b, g, -50, 50))),
    "solarize": TextureOp(solarize, _solarize_threshold),
    "posterize": TextureOp(posterize, lambda b, g: (_integers(b, g, 1, 8),)),
    "invert": TextureOp(invert, lambda b, g: ()),
    "autocontrast": TextureOp(autocontrast, lambda b, g: (_integers(b, g, 0, 20),)),
    "equalize": TextureOp(equalize, lambda b, g: ()),
    "rotate": TextureOp(rotate, lambda b, g: (_uniform(b, g, -45.0, 45.0),)),
}


def choose_ops(batch_size: int, generator: torch.Generator, n_ops: int = 3) -> torch.Tensor:
    """Per sample, ``n_ops`` distinct op indices into :data:`TEXTURE_OPS` in random order: B x n_ops int64."""
    if not 1 <= n_ops <= len(TEXTURE_OPS):
        raise ValueError(f"n_ops must be in 1..{len(TEXTURE_OPS)}, got {n_ops}")
    keys = torch.rand(batch_size, len(TEXTURE_OPS), generator=generator, device=generator.device)
    return keys.argsort(dim=1)[:, :n_ops]


def apply_ops(
    textures: torch.Tensor, ops: torch.Tensor, generator: torch.Generator, *, masked: bool | None = None
) -> torch.Tensor:
    """Apply the ops of :func:`choose_ops` to B x 3 x S x S textures (uint8 or float in [0, 255]).

    Round r applies every sample's r-th op, so each sample gets its ops in its own drawn order (as DRAEM).
    Every op's parameters are drawn for the whole batch in every round. ``masked`` (default: off the CPU)
    runs each op on the whole batch and keeps it where drawn (``torch.where``, no host sync); otherwise each
    op runs on the samples that drew it (10 x less work; finding them syncs). Both give the same images.
    Values are rounded to integers on input and after every op, as imgaug's uint8 images. Returns float.
    """
    if masked is None:
        masked = textures.device.type != "cpu"
    x = textures.float().round().clamp(0, 255)
    for column in ops.T:
        out = x if masked else x.clone()
        for k, op in enumerate(TEXTURE_OPS.values()):
            params = op.sample(len(x), generator)
            if masked:
                out = torch.where(column.view(-1, 1, 1, 1) == k, op.transform(x, *params), out)
            elif len(index := (column == k).nonzero().squeeze(1)):
                out[index] = op.transform(x[index], *(p[index] for p in params))
        x = out.round_().clamp_(0, 255)
    return x


def augment_textures(textures: torch.Tensor, generator: torch.Generator, n_ops: int = 3) -> torch.Tensor:
    """DRAEM's texture augmentation: ``n_ops`` distinct random ops per sample, in a per-sample random order.

    ``textures`` B x 3 x S x S, uint8 or float in [0, 255], on the generator's device; returns float [0, 255].
    """
    return apply_ops(textures, choose_ops(len(textures), generator, n_ops), generator)
