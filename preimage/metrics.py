"""Metrics reported next to every picture.

- :func:`feature_error`: ``||Φ(x̂) - Φ0|| / ||Φ0||`` (not squared), per image and layer.
- :func:`shift`: an image moved one pixel right and down; the feature error of the reconstruction
  moved so, beside that of the photo moved so, says whether a fit survives a one-pixel shift (a
  natural image's features change little) or holds for one alignment of the network's grid only.
- :func:`psnr`: ``10 log10(1 / MSE)`` on [0, 1] images, in dB.
- :func:`ssim`: structural similarity (Wang et al. 2004) with an 11x11 Gaussian window (σ = 1.5),
  K1 = 0.01, K2 = 0.03, computed per channel on [0, 1] images and averaged.
- :func:`tv_ratio`: ``TV(x̂) / TV(x)`` with ``TV = Σ sqrt(dx² + dy²)`` (isotropic, colour channels
  summed) in [0, 1] pixel units: below 1 the reconstruction is smoother than the photo, far above 1
  it is noisier.
- :func:`judge_recognition`: cross-model recognition, a naturalness measure that is not the objective
  itself: another network (the *judge*) classifies each reconstruction and its original; the
  reconstruction passes when the judge's top-1 class is the one it gives the original. A pre-image that
  is noise tuned to the inverted network's features fails it; a natural one passes.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["feature_error", "shift", "psnr", "ssim", "tv", "tv_ratio", "judge_recognition"]


def feature_error(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``||Φ(x̂) - Φ0|| / ||Φ0||`` per image, shape ``(B,)``."""
    b = features.shape[0]
    diff = (features - target).reshape(b, -1).norm(dim=1)
    return diff / target.reshape(target.shape[0], -1).norm(dim=1).clamp_min(1e-12)


def shift(x: torch.Tensor, pixels: int = 1) -> torch.Tensor:
    """The content of ``x`` (B x C x H x W) moved ``pixels`` right and down; the uncovered border is
    filled by reflection. A natural image changes by one pixel's worth of detail; a pre-image fitted
    to one alignment of a strided network's grid can change its features far more."""
    if pixels == 0:
        return x
    padded = F.pad(x, (pixels, 0, pixels, 0), mode="reflect")
    return padded[..., : x.shape[-2], : x.shape[-1]]


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image; images are clamped to [0, 1] first."""
    mse = (x.clamp(0, 1) - y.clamp(0, 1)).pow(2).reshape(x.shape[0], -1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def _gaussian_1d(size: int, sigma: float, device, dtype) -> torch.Tensor:
    t = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(t * t) / (2 * sigma * sigma))
    return g / g.sum()


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Valid-region Gaussian filter, per channel, as two 1-D passes (the window is separable)."""
    c, k = x.shape[1], g.numel()
    x = F.conv2d(x, g.reshape(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, g.reshape(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM per image (valid-region windows, no padding), images clamped to [0, 1]. An image
    with a side shorter than ``window`` uses the largest odd window that fits (``sigma`` scaled with it)."""
    x, y = x.clamp(0, 1).double(), y.clamp(0, 1).double()
    fit = min(window, *x.shape[-2:])
    fit -= 1 - fit % 2
    if fit < window:
        window, sigma = fit, sigma * fit / window
    g = _gaussian_1d(window, sigma, x.device, x.dtype)
    mu_x, mu_y = _blur(x, g), _blur(y, g)
    sxx = _blur(x * x, g) - mu_x ** 2
    syy = _blur(y * y, g) - mu_y ** 2
    sxy = _blur(x * y, g) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return s.reshape(x.shape[0], -1).mean(1).float()


def tv(x: torch.Tensor) -> torch.Tensor:
    """Isotropic total variation ``Σ sqrt(dx² + dy²)`` per image (forward differences)."""
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]
    return (dx * dx + dy * dy).sqrt().reshape(x.shape[0], -1).sum(1)


def tv_ratio(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``TV(x̂) / TV(x)`` on images clamped to [0, 1]; 1 when both are flat (equally smooth)."""
    num, den = tv(x.clamp(0, 1)), tv(reference.clamp(0, 1))
    return torch.where((num == 0) & (den == 0), torch.ones_like(num), num / den.clamp_min(1e-12))


def judge_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """``images`` as a second classifier sees them: resized to ``size`` x ``size`` (bilinear,
    antialiased) unless they are that size already."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


@torch.no_grad()
def judge_recognition(judge: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                      references: torch.Tensor, *, input_size: int | None = None) -> dict[str, torch.Tensor]:
    """Cross-model recognition of reconstructions ``images`` of ``references`` (both [0, 1], B x 3 x H x W).

    ``judge`` maps [0, 1] images to logits (a :class:`preimage.models.Model`: another network than the
    inverted one, e.g. efficientnet_lite2 judging lite0's pre-images). Both batches are clamped and
    resized (bilinear, antialiased) to ``input_size`` (default: ``judge.input_size``) and classified.
    With ``c0 = argmax p_judge(x0)`` the judge's class for the original, per image:

    - ``agrees``: ``argmax p_judge(x̂) == c0`` (top-1 agreement);
    - ``rank``: ``1 + #{c : p_judge(c | x̂) > p_judge(c0 | x̂)}``, where c0 comes in the judge's
      ranking of the reconstruction (1 when it agrees);
    - ``p``: ``p_judge(c0 | x̂)``; ``original_class`` / ``class``: c0 and the reconstruction's top-1.
    """
    size = int(input_size if input_size is not None else getattr(judge, "input_size"))
    device = getattr(judge, "device", images.device)
    x = judge_input(images.clamp(0, 1).float(), size).to(device)
    r = judge_input(references.clamp(0, 1).float(), size).to(device)
    p_img = judge(x).float().softmax(-1).cpu()
    p_ref = judge(r).float().softmax(-1).cpu()
    c0, c = p_ref.argmax(-1), p_img.argmax(-1)
    p0 = p_img.gather(1, c0[:, None])
    rank = (p_img > p0).sum(1) + 1
    return {"agrees": c == c0, "rank": rank, "p": p0[:, 0], "original_class": c0, "class": c}
