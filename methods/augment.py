"""Batched image augmentations on the run's device (no per-image Python loop, no PIL): images are float
[B, 3, S, S] in [0, 1]; every random draw uses torch's global generator, which the harness reseeds each epoch.

- `random_resized_crop`: per-image crop box (area fraction, aspect ratio) and horizontal flip, as one affine
  resampling (`affine_grid` + `grid_sample`).
- `color_jitter`, `random_grayscale`, `gaussian_blur`: per-image strengths, applied with per-image probability.
- `moco_v2_view`: the MoCo v2 "aug-plus" recipe (RandomResizedCrop scale 0.2-1, ColorJitter(0.4, 0.4, 0.4, 0.1)
  p=0.8, RandomGrayscale p=0.2, GaussianBlur sigma 0.1-2 px at 224 px p=0.5, HorizontalFlip).
- `crop_flip_view`: the weak view of CDS/PCS/CoDA (resize 256, RandomCrop 224, HorizontalFlip), as a random crop of
  224/256 of the side.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _uniform(n: int, low: float, high: float, device) -> torch.Tensor:
    return torch.rand(n, device=device) * (high - low) + low


def _apply_with_probability(images: torch.Tensor, transformed: torch.Tensor, p: float) -> torch.Tensor:
    if p >= 1.0:
        return transformed
    keep = (torch.rand(len(images), device=images.device) < p).view(-1, 1, 1, 1)
    return torch.where(keep, transformed, images)


def _affine_crop(images: torch.Tensor, width_fraction, height_fraction, centre_x, centre_y, flip, out_size: int):
    """Resample the box (centre, width, height given as fractions of the image; centres in [-1, 1]) to out_size."""
    n = len(images)
    theta = torch.zeros(n, 2, 3, device=images.device)
    theta[:, 0, 0] = width_fraction * torch.where(flip, -1.0, 1.0)
    theta[:, 1, 1] = height_fraction
    theta[:, 0, 2] = centre_x
    theta[:, 1, 2] = centre_y
    grid = F.affine_grid(theta, [n, images.shape[1], out_size, out_size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def random_resized_crop(images: torch.Tensor, out_size: int | None = None, scale=(0.2, 1.0),
                        ratio=(3 / 4, 4 / 3), flip_p: float = 0.5) -> torch.Tensor:
    n, device = len(images), images.device
    out_size = out_size or images.shape[-1]
    area = _uniform(n, *scale, device)
    log_ratio = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), device)
    aspect = torch.exp(log_ratio)
    width = torch.sqrt(area * aspect).clamp(max=1.0)
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    centre_x = (torch.rand(n, device=device) * 2 - 1) * (1 - width)
    centre_y = (torch.rand(n, device=device) * 2 - 1) * (1 - height)
    flip = torch.rand(n, device=device) < flip_p
    return _affine_crop(images, width, height, centre_x, centre_y, flip, out_size)


def crop_flip_view(images: torch.Tensor, crop_fraction: float = 224 / 256, flip_p: float = 0.5) -> torch.Tensor:
    n, device = len(images), images.device
    side = torch.full((n,), crop_fraction, device=device)
    centre_x = (torch.rand(n, device=device) * 2 - 1) * (1 - side)
    centre_y = (torch.rand(n, device=device) * 2 - 1) * (1 - side)
    flip = torch.rand(n, device=device) < flip_p
    return _affine_crop(images, side, side, centre_x, centre_y, flip, images.shape[-1])


LUMA = (0.299, 0.587, 0.114)          # ITU-R 601-2 luma, PIL's "L" conversion (and torchvision's rgb_to_grayscale)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """[B, 1, H, W] luma of [B, 3, H, W] images (any float dtype; the weights take the images' dtype)."""
    weights = torch.tensor(LUMA, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def _rotate_hue(images: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
    """Hue rotation by `fraction` of a turn, as a rotation about the grey axis in YIQ space."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                          device=images.device)
    to_rgb = torch.linalg.inv(to_yiq)
    angle = fraction * 2 * math.pi
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros(len(images), 3, 3, device=images.device)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2], rotation[:, 2, 1], rotation[:, 2, 2] = cos, -sin, sin, cos
    matrix = to_rgb @ rotation @ to_yiq                                   # [B, 3, 3]
    return torch.einsum("bij,bjhw->bihw", matrix, images)


def color_jitter(images: torch.Tensor, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
                 p: float = 0.8) -> torch.Tensor:
    n, device = len(images), images.device
    out = images * _uniform(n, 1 - brightness, 1 + brightness, device).view(-1, 1, 1, 1)
    mean_grey = grayscale(out).mean(dim=(2, 3), keepdim=True)
    out = mean_grey + (out - mean_grey) * _uniform(n, 1 - contrast, 1 + contrast, device).view(-1, 1, 1, 1)
    grey = grayscale(out)
    out = grey + (out - grey) * _uniform(n, 1 - saturation, 1 + saturation, device).view(-1, 1, 1, 1)
    out = _rotate_hue(out, _uniform(n, -hue, hue, device))
    return _apply_with_probability(images, out.clamp(0, 1), p)


def random_grayscale(images: torch.Tensor, p: float = 0.2) -> torch.Tensor:
    return _apply_with_probability(images, grayscale(images).expand_as(images), p)


def gaussian_blur(images: torch.Tensor, sigma=(0.1, 2.0), p: float = 0.5) -> torch.Tensor:
    """Per-image sigma (pixels at this resolution), separable kernel of radius ceil(3 * max sigma)."""
    n, c, h, w = images.shape
    device = images.device
    sigmas = _uniform(n, *sigma, device)
    radius = max(1, math.ceil(3 * sigma[1]))
    offsets = torch.arange(-radius, radius + 1, device=device, dtype=images.dtype)
    kernel = torch.exp(-offsets.view(1, -1) ** 2 / (2 * sigmas.view(-1, 1) ** 2))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)     # [n*c, 2r+1]
    flat = images.reshape(1, n * c, h, w)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), kernel.view(n * c, 1, 1, -1), groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), kernel.view(n * c, 1, -1, 1), groups=n * c)
    return _apply_with_probability(images, flat.view(n, c, h, w), p)


def moco_v2_view(images: torch.Tensor, out_size: int | None = None, min_crop_scale: float = 0.2) -> torch.Tensor:
    """`min_crop_scale` 0.2 is MoCo v2's; toy-scale images whose object fills a third of the frame keep their
    identity only with larger crops (the quickstart uses 0.5)."""
    size = images.shape[-1]
    view = random_resized_crop(images, out_size, scale=(min_crop_scale, 1.0))
    view = color_jitter(view, 0.4, 0.4, 0.4, 0.1, p=0.8)
    view = random_grayscale(view, p=0.2)
    # MoCo v2 blurs with sigma in [0.1, 2] px at 224 px; keep the same blur relative to the image side.
    return gaussian_blur(view, sigma=(0.1 * size / 224, max(0.2, 2.0 * size / 224)), p=0.5)
