"""Batched augmentation on the training device: per-sample random rotation, translation and zoom.

One ``affine_grid`` + ``grid_sample`` per batch replaces the seeds' per-image PIL transforms.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(
    images: torch.Tensor,
    generator: torch.Generator,
    rotation: float = 0.0,
    translate: float = 0.0,
    scale: tuple[float, float] = (1.0, 1.0),
    fill: float = 0.0,
) -> torch.Tensor:
    """Rotate by U(-rotation, rotation) degrees, shift by U(-t, t) of the side, zoom by U(scale).

    ``images`` is N x C x H x W; pixels that come from outside the image get ``fill``
    (pass the normalised value of black when the images are normalised).
    """
    n = images.shape[0]
    device, dtype = images.device, images.dtype

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(n, device=device, dtype=dtype, generator=generator) * (high - low) + low

    angle = uniform(-rotation, rotation) * (math.pi / 180)
    zoom = uniform(*scale)
    # affine_grid maps output coordinates to input coordinates in [-1, 1]: the inverse transform.
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    shift_x, shift_y = uniform(-translate, translate) * 2, uniform(-translate, translate) * 2
    theta = torch.stack(
        [torch.stack([cos, -sin, shift_x], dim=1), torch.stack([sin, cos, shift_y], dim=1)], dim=1
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    shifted = images - fill  # grid_sample pads with zeros: shift so that padding is `fill`
    return F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
