"""Random transforms applied to the network input at each step (robustness, as in Lucid and the
natural pre-images of Mahendran & Vedaldi 2016). Each takes a seeded ``torch.Generator`` and
follows the input's device and dtype. Spatial transforms commute with per-channel normalization,
so they act on the normalized input directly.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["Transform", "jitter", "random_scale", "compose", "gaussian_blur"]

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _randint(lo: int, hi: int, g: torch.Generator) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=g).item())


def jitter(pixels: int) -> Transform:
    """Roll the image by a random offset in ``[-pixels, pixels]`` on each axis (wrapping around)."""

    def fn(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if pixels <= 0:
            return x
        dy, dx = _randint(-pixels, pixels, g), _randint(-pixels, pixels, g)
        return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))

    return fn


def random_scale(scales: Sequence[float]) -> Transform:
    """Resize by a factor drawn from ``scales`` (bilinear)."""

    def fn(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        s = scales[_randint(0, len(scales) - 1, g)]
        if s == 1:
            return x
        return F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)

    return fn


def compose(transforms: Sequence[Transform]) -> Transform:
    def fn(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        for t in transforms:
            x = t(x, g)
        return x

    return fn


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a ``B x C x H x W`` tensor (reflect padding)."""
    if sigma <= 0:
        return x
    radius = max(1, int(3 * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t * t) / (2 * sigma * sigma))
    k = k / k.sum()
    c = x.shape[1]
    radius_y = min(radius, x.shape[-2] - 1)
    radius_x = min(radius, x.shape[-1] - 1)
    ky = k[radius - radius_y: radius + radius_y + 1].view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    kx = k[radius - radius_x: radius + radius_x + 1].view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    x = F.conv2d(F.pad(x, (0, 0, radius_y, radius_y), mode="reflect"), ky / ky.sum(), groups=c)
    x = F.conv2d(F.pad(x, (radius_x, radius_x, 0, 0), mode="reflect"), kx / kx.sum(), groups=c)
    return x
