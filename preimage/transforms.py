"""Random transforms applied to the network input at each step (robustness, as in Lucid and the
natural pre-images of Mahendran & Vedaldi 2016). Each takes a seeded ``torch.Generator`` and
follows the input's device and dtype. Spatial transforms commute with per-channel normalization,
so they act on the normalized input directly.

Augmentation ensembling (Ghiasi et al. 2022, "What do Vision Transformers Learn? A Visual
Exploration", for ViTs): :func:`repeat` makes ``n`` copies of every image at each step, the
per-image transforms that follow (``jitter(..., per_image=True)``, :func:`color_shift`,
:func:`gaussian_noise`) draw a different augmentation for each copy, and the loss of each image is the
mean over its copies (:class:`~preimage.objectives.Objective` folds a batch of ``n·B`` values back to
``B``). Copies are laid out copy-major: row ``r`` is a copy of image ``r mod B``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["Transform", "jitter", "random_scale", "random_affine", "random_rotate", "pad", "compose",
           "gaussian_blur", "repeat", "color_shift", "gaussian_noise", "ensemble"]

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _randint(lo: int, hi: int, g: torch.Generator) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=g).item())


def jitter(pixels: int, *, per_image: bool = False) -> Transform:
    """Roll the image by a random offset in ``[-pixels, pixels]`` on each axis (wrapping around): one
    offset for the whole batch, or with ``per_image`` one for each image (each copy, after
    :func:`repeat`)."""

    def fn(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if pixels <= 0:
            return x
        if not per_image:
            dy, dx = _randint(-pixels, pixels, g), _randint(-pixels, pixels, g)
            return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
        shifts = torch.randint(-pixels, pixels + 1, (x.shape[0], 2), generator=g).tolist()
        return torch.cat([torch.roll(x[i:i + 1], shifts=(dy, dx), dims=(-2, -1)) for i, (dy, dx) in enumerate(shifts)])

    return fn


def repeat(copies: int) -> Transform:
    """``n`` copies of the batch, ``[x; x; ...]`` (``n·B`` rows): put it first, then per-image
    transforms augment each copy differently and the objective averages each image's copies."""
    if copies < 1:
        raise ValueError("copies must be at least 1")

    def fn(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return x if copies == 1 else x.repeat(copies, *([1] * (x.dim() - 1)))

    return fn


def color_shift(shift: float = 1.0, scale: float = 1.0) -> Transform:
    """Per image and channel, ``x ← σ x + μ`` with ``μ ~ U(-shift, shift)`` and ``σ = exp(u)``,
    ``u ~ U(-scale, scale)``, in the normalized input's units (the ColorShift of Ghiasi et al. 2022)."""

    def fn(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, c = x.shape[:2]
        mu = (torch.rand(b, c, 1, 1, generator=g) * 2 - 1) * shift
        sigma = torch.exp((torch.rand(b, c, 1, 1, generator=g) * 2 - 1) * scale)
        return x * sigma.to(x) + mu.to(x)

    return fn


def gaussian_noise(std: float) -> Transform:
    """``x + ε``, ``ε ~ N(0, std²)`` per element, in the normalized input's units."""

    def fn(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if std <= 0:
            return x
        return x + (torch.randn(x.shape, generator=g) * std).to(x)

    return fn


def ensemble(copies: int, *, jitter_pixels: int = 0, shift: float = 0.0, noise: float = 0.0) -> list[Transform]:
    """Augmentation ensembling (Ghiasi et al. 2022): ``copies`` copies per image, each jittered by up to
    ``jitter_pixels``, colour-shifted (``shift`` = μ range = log σ range) and noised (std ``noise``)
    independently. The list goes first in a step's transforms; empty when it would do nothing."""
    if copies <= 1 and not (jitter_pixels or shift or noise):
        return []
    out: list[Transform] = [repeat(max(1, copies))]
    if jitter_pixels:
        out.append(jitter(jitter_pixels, per_image=True))
    if shift:
        out.append(color_shift(shift, shift))
    if noise:
        out.append(gaussian_noise(noise))
    return out


def random_scale(scales: Sequence[float]) -> Transform:
    """Resize by a factor drawn from ``scales`` (bilinear)."""

    def fn(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        s = scales[_randint(0, len(scales) - 1, g)]
        if s == 1:
            return x
        return F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)

    return fn


def random_affine(scale: float = 0.0, degrees: float = 0.0) -> Transform:
    """Zoom by a factor ``exp(u)``, ``u ~ U(-log(1 + scale), log(1 + scale))``, and rotate by an angle
    ``~ U(-degrees, degrees)`` about the centre, one draw for the batch, bilinear with reflected borders
    (the image keeps its size): the small random scalings and rotations of feature visualization
    (Olah et al. 2017, "Feature Visualization", transformation robustness), which keep an optimized
    image from leaning on one exact pixel grid."""

    def fn(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if scale <= 0 and degrees <= 0:
            return x
        u = torch.rand(2, generator=g) * 2 - 1
        zoom = float(torch.exp(u[0] * torch.log1p(torch.tensor(max(scale, 0.0)))))
        return _affine(x, float(u[1]) * max(degrees, 0.0), zoom)

    return fn


def random_rotate(degrees: float, *, fill: float | Sequence[float] = 0.0) -> Transform:
    """Rotate the batch about its centre by an angle drawn uniformly from ``[-degrees, degrees]``
    (bilinear; the corners that come from outside the image take the value ``fill``, per channel or
    one for all, in the input's units)."""

    def fn(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if degrees <= 0:
            return x
        angle = (float(torch.rand((), generator=g)) * 2 - 1) * degrees
        return rotate(x, angle, fill=fill)

    return fn


def rotate(x: torch.Tensor, angle: float, *, fill: float | Sequence[float] = 0.0) -> torch.Tensor:
    """``x`` rotated counter-clockwise by ``angle`` degrees about the centre of the image (same size)."""
    return x if angle == 0 else _affine(x, angle, 1.0, fill=fill)


def _affine(x: torch.Tensor, angle: float, zoom: float, *, fill: float | Sequence[float] | None = None) -> torch.Tensor:
    """``x`` rotated counter-clockwise by ``angle`` degrees and magnified ``zoom`` times about the centre
    (same size, bilinear). What comes from outside the image is its reflection (``fill`` None) or the
    value ``fill``, per channel or one for all."""
    import math

    h, w = x.shape[-2:]
    t = math.radians(angle)
    cos, sin = math.cos(t) / zoom, math.sin(t) / zoom
    # affine_grid works in [-1, 1] coordinates; scale the off-diagonal terms for non-square images
    theta = torch.tensor([[cos, -sin * h / w, 0.0], [sin * w / h, cos, 0.0]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    if fill is None:
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    fill_t = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    return F.grid_sample(x - fill_t, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill_t


def pad(pixels: int, *, fill: float | Sequence[float] = 0.0) -> Transform:
    """Add a border of ``pixels`` on every side filled with the constant ``fill`` (per channel or one for
    all, in the input's units), as Lucid's recipe does before jitter: the edges of the image are then
    seen by units whose receptive field is inside the image, and a larger map results."""

    def fn(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if pixels <= 0:
            return x
        fill_t = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
        return F.pad(x - fill_t, (pixels,) * 4) + fill_t

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
