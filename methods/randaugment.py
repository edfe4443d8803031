"""A batched RandAugment (Cubuk et al., "RandAugment: Practical automated data augmentation with a reduced search
space", CVPR Workshops 2020, arXiv:1909.13719), with FixMatch's op pool and per-image random magnitudes (Sohn et al.,
NeurIPS 2020, arXiv:2001.07685), on image tensors in [0, 1] of shape [B, 3, H, W], on any device.

- Op pool (`RANDAUG_OPS`): identity, autocontrast, equalize, brightness, color (saturation), contrast, sharpness,
  posterize, solarize, rotate, shear x/y, translate x/y (FixMatch's pool without cutout).
- `rand_augment`: each of `num_ops` rounds draws one op per image uniformly, a sign per image for the signed ops, and
  a strength s = M / 10 (or U(0, M / 10) per image and round with `random_magnitude`, FixMatch's variant). At s = 1:
  enhance factors 1 +- 0.9, posterize to 4 bits, solarize threshold 0 (inversion), rotate 30 degrees, shear 0.3,
  translate 0.3 of the side; geometric ops fill with grey 0.5.
- Equalize is the cumulative-histogram mapping on 256 levels (not PIL's integer rounding); sharpness blends with
  PIL's 3x3 smoothing kernel, replicate borders; the enhance ops blend with PIL ImageEnhance's degenerate images.

Randomness comes from torch's global generator, which the harness reseeds every epoch. Used by DN2A's strong view.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .augment import grayscale

RANDAUG_OPS = ("identity", "autocontrast", "equalize", "brightness", "color", "contrast", "sharpness", "posterize",
               "solarize", "rotate", "shear_x", "shear_y", "translate_x", "translate_y")
GEOMETRIC_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
MAX_ROTATION_DEGREES = 30.0
MAX_SHEAR = 0.3
MAX_TRANSLATE = 0.3                   # fraction of the side
MAX_ENHANCE = 0.9                     # enhance factor 1 +- 0.9 s


def _per_image(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def autocontrast(images: torch.Tensor) -> torch.Tensor:
    """Per image and channel, stretch [min, max] to [0, 1] (a flat channel stays as it is)."""
    low = images.amin(dim=(2, 3), keepdim=True)
    high = images.amax(dim=(2, 3), keepdim=True)
    span = high - low
    stretched = (images - low) / span.clamp_min(1e-12)
    return torch.where(span > 0, stretched, images)


def equalize(images: torch.Tensor) -> torch.Tensor:
    """Per image and channel histogram equalisation on 256 levels: level v -> (cdf(v) - cdf_min) / (n - cdf_min),
    cdf_min the count of the lowest occupied level (a flat channel stays as it is)."""
    n, c, h, w = images.shape
    levels = (images.clamp(0, 1) * 255).round().long().view(n * c, h * w)
    counts = torch.zeros(n * c, 256, device=images.device, dtype=images.dtype)
    counts.scatter_add_(1, levels, torch.ones_like(levels, dtype=images.dtype))
    cdf = counts.cumsum(dim=1)
    lowest = cdf.gather(1, levels.min(dim=1, keepdim=True).values)        # count at the lowest occupied level
    total = float(h * w)
    mapped = ((cdf - lowest) / (total - lowest).clamp_min(1.0)).clamp(0, 1)
    out = mapped.gather(1, levels).view(n, c, h, w)
    flat = (lowest == total).view(n, c, 1, 1)
    return torch.where(flat, images, out)


def _blend(degenerate: torch.Tensor, images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ImageEnhance: degenerate + factor (image - degenerate), clipped."""
    return (degenerate + _per_image(factor) * (images - degenerate)).clamp(0, 1)


def brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(torch.zeros_like(images), images, factor)


def color(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(grayscale(images).expand_as(images), images, factor)


def contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(grayscale(images).mean(dim=(2, 3), keepdim=True).expand_as(images), images, factor)


def sharpness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with PIL's smoothing filter [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 (replicate borders)."""
    c = images.shape[1]
    kernel = torch.ones(3, 3, device=images.device, dtype=images.dtype)
    kernel[1, 1] = 5.0
    kernel = (kernel / 13.0).expand(c, 1, 3, 3)
    smooth = F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), kernel, groups=c)
    return _blend(smooth, images, factor)


def posterize(images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the top `bits` (per image) of the 8-bit levels."""
    step = _per_image(2.0 ** (8 - bits.to(images.dtype)))
    levels = (images.clamp(0, 1) * 255).round()
    return torch.floor(levels / step) * step / 255.0


def solarize(images: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Invert the pixels at or above the (per image) threshold."""
    return torch.where(images >= _per_image(threshold), 1.0 - images, images)


def _geometric_theta(op: torch.Tensor, strength: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Per-image affine maps (output -> input, normalised coordinates) for the geometric ops; identity otherwise."""
    n = len(op)
    theta = torch.zeros(n, 2, 3, device=strength.device, dtype=strength.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    signed = strength * sign
    angle = signed * math.radians(MAX_ROTATION_DEGREES)
    rotate = op == RANDAUG_OPS.index("rotate")
    theta[:, 0, 0] = torch.where(rotate, torch.cos(angle), theta[:, 0, 0])
    theta[:, 0, 1] = torch.where(rotate, -torch.sin(angle), theta[:, 0, 1])
    theta[:, 1, 0] = torch.where(rotate, torch.sin(angle), theta[:, 1, 0])
    theta[:, 1, 1] = torch.where(rotate, torch.cos(angle), theta[:, 1, 1])
    theta[:, 0, 1] += torch.where(op == RANDAUG_OPS.index("shear_x"), signed * MAX_SHEAR, 0.0)
    theta[:, 1, 0] += torch.where(op == RANDAUG_OPS.index("shear_y"), signed * MAX_SHEAR, 0.0)
    # A shift of a fraction t of the side is 2t in normalised coordinates.
    theta[:, 0, 2] = torch.where(op == RANDAUG_OPS.index("translate_x"), 2 * signed * MAX_TRANSLATE, 0.0)
    theta[:, 1, 2] = torch.where(op == RANDAUG_OPS.index("translate_y"), 2 * signed * MAX_TRANSLATE, 0.0)
    return theta


def _warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Affine resampling; zero padding around (image - 0.5), then + 0.5: the uncovered area is grey."""
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return (F.grid_sample(images - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            + 0.5).clamp(0, 1)


def apply_randaug_ops(images: torch.Tensor, op: torch.Tensor, strength: torch.Tensor, sign: torch.Tensor,
                      per_op_subsets: bool | None = None) -> torch.Tensor:
    """One RandAugment round with given per-image draws: op index into RANDAUG_OPS, strength s in [0, 1], sign +-1.
    Vectorised over the batch, a loop over the 14 ops, never over images: one affine resampling for the geometric
    ops, one call per photometric op. On the CPU each op runs on its own images only (boolean indexing); on an
    accelerator each runs on the whole batch and is selected per image (no host synchronisation); `per_op_subsets`
    forces either way (the results are the same)."""
    strength = strength.to(images.dtype)
    sign = sign.to(images.dtype)
    factor = 1.0 + MAX_ENHANCE * strength * sign
    theta = _geometric_theta(op, strength, sign)
    transforms = {
        GEOMETRIC_OPS: lambda x, t, f, s: _warp(x, t),
        ("autocontrast",): lambda x, t, f, s: autocontrast(x),
        ("equalize",): lambda x, t, f, s: equalize(x),
        ("brightness",): lambda x, t, f, s: brightness(x, f),
        ("color",): lambda x, t, f, s: color(x, f),
        ("contrast",): lambda x, t, f, s: contrast(x, f),
        ("sharpness",): lambda x, t, f, s: sharpness(x, f),
        ("posterize",): lambda x, t, f, s: posterize(x, 8 - torch.round(4 * s)),
        ("solarize",): lambda x, t, f, s: solarize(x, 1.0 - s),
    }
    out = images.clone()
    on_cpu = images.device.type == "cpu" if per_op_subsets is None else per_op_subsets
    for names, transform in transforms.items():
        chosen = torch.zeros_like(op, dtype=torch.bool)
        for name in names:
            chosen |= op == RANDAUG_OPS.index(name)
        if on_cpu:
            if chosen.any():
                out[chosen] = transform(images[chosen], theta[chosen], factor[chosen], strength[chosen])
        else:
            out = torch.where(_per_image(chosen), transform(images, theta, factor, strength), out)
    return out


def rand_augment(images: torch.Tensor, num_ops: int = 2, magnitude: float = 10.0,
                 random_magnitude: bool = False) -> torch.Tensor:
    """RandAugment on a batch in [0, 1]: `num_ops` rounds, each drawing one op per image uniformly from RANDAUG_OPS,
    a sign per image and (with `random_magnitude`) a strength U(0, magnitude / 10) per image; torch's global
    generator (reseeded per epoch by the harness)."""
    n, device = len(images), images.device
    top = min(max(magnitude, 0.0), 10.0) / 10.0
    for _ in range(num_ops):
        op = torch.randint(len(RANDAUG_OPS), (n,), device=device)
        sign = torch.where(torch.rand(n, device=device) < 0.5, -1.0, 1.0)
        strength = torch.rand(n, device=device) * top if random_magnitude else torch.full((n,), top, device=device)
        images = apply_randaug_ops(images, op, strength, sign)
    return images
