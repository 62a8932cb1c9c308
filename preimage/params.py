"""Image parameterizations: how the optimized image is represented.

A parameterization is an ``nn.Module`` whose ``forward()`` returns the current image batch. It says
which space it returns (``space = "pixel"``: [0, 1] RGB; ``"input"``: the model's normalized input,
as the original inversion script optimizes) and may constrain itself after each step (``project_``).

- :class:`Pixels`: one free value per pixel, optionally kept in a box (the bounded-range constraint).
- :class:`Upsampled`: free pixels on a coarser grid, bilinearly upsampled to the full size (the
  first phase of coarse-to-fine optimization).
- :class:`Fourier`: a scaled Fourier spectrum with decorrelated colour and a sigmoid (as Lucid's
  ``fft_image`` + ``to_valid_rgb``), which favours smooth, natural-looking images.
- :class:`Latent`: the image is a frozen generator's output ``G(z)`` and ``z`` is what moves, so
  the optimized image can only be one the generator makes (GAN inversion).
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ImageParam", "Pixels", "Upsampled", "Fourier", "Latent"]


class ImageParam(nn.Module):
    space: str = "pixel"

    def forward(self) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    @torch.no_grad()
    def project_(self) -> None:
        """Apply hard constraints after an optimizer step (default: none)."""

    @torch.no_grad()
    def set_(self, image: torch.Tensor) -> None:
        """Overwrite the current image (used to restore the last finite state)."""
        raise NotImplementedError


class Pixels(ImageParam):
    """Free pixels ``x`` (``B x 3 x H x W``) in ``space`` ("pixel" or "input"), started at ``init``.

    ``bounds=(lo, hi)`` clamps after every step (projected gradient descent), e.g. (0, 1) in pixel
    space.
    """

    def __init__(self, init: torch.Tensor, *, space: str = "pixel", bounds: tuple[float, float] | None = None):
        super().__init__()
        if space not in ("pixel", "input"):
            raise ValueError(f"space must be 'pixel' or 'input', not {space!r}")
        self.space = space
        self.bounds = bounds
        # contiguous: L-BFGS views the gradient flat, and a permuted init (pil_to_tensor) would break it
        self.x = nn.Parameter(init.detach().clone(memory_format=torch.contiguous_format))
        self.project_()

    def forward(self) -> torch.Tensor:
        return self.x

    @torch.no_grad()
    def project_(self) -> None:
        if self.bounds is not None:
            self.x.clamp_(*self.bounds)

    @torch.no_grad()
    def set_(self, image: torch.Tensor) -> None:
        self.x.copy_(image)


class Upsampled(ImageParam):
    """Pixels ``x`` on a grid ``factor`` times coarser than ``size`` (H, W); the image is
    ``bilinear_upsample(x)`` (align_corners=False), so it holds no detail finer than ``factor`` pixels.

    Started from ``init`` (full size, area-downsampled) and kept in ``bounds`` like :class:`Pixels`
    (an upsampled image stays in the box when its grid does). Only the pixel space is supported.
    """

    space = "pixel"

    def __init__(self, init: torch.Tensor, *, factor: int, bounds: tuple[float, float] | None = None):
        super().__init__()
        if factor < 1:
            raise ValueError(f"factor must be >= 1, not {factor}")
        self.size = tuple(init.shape[-2:])
        self.bounds = bounds
        small = (max(1, self.size[0] // factor), max(1, self.size[1] // factor))
        coarse = torch.nn.functional.interpolate(init.detach().float(), size=small, mode="area")
        self.x = nn.Parameter(coarse.to(init.dtype).contiguous())
        self.project_()

    def forward(self) -> torch.Tensor:
        return torch.nn.functional.interpolate(self.x, size=self.size, mode="bilinear", align_corners=False)

    @torch.no_grad()
    def project_(self) -> None:
        if self.bounds is not None:
            self.x.clamp_(*self.bounds)

    @torch.no_grad()
    def set_(self, image: torch.Tensor) -> None:
        self.x.copy_(torch.nn.functional.interpolate(image, size=tuple(self.x.shape[-2:]), mode="area"))


# Square root of the colour covariance of ImageNet pixels (as estimated by Lucid), used to
# decorrelate colour channels: each column is a direction in RGB.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])


def _freqs(h: int, w: int) -> torch.Tensor:
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


class Fourier(ImageParam):
    """Image = sigmoid(decorrelate(irfft2(spectrum · scale))), ``scale = 1 / max(f, 1/max(H, W))^decay``.

    Starts from small random spectra (``sd``) drawn from ``generator``; output in [0, 1] pixel space.
    """

    space = "pixel"

    def __init__(self, shape: tuple[int, int, int, int], *, sd: float = 0.01, decay: float = 1.0,
                 decorrelate: bool = True, generator: torch.Generator | None = None,
                 device: str | torch.device = "cpu"):
        super().__init__()
        b, c, h, w = shape
        self.shape = shape
        freqs = _freqs(h, w)
        scale = 1.0 / freqs.clamp_min(1.0 / max(h, w)) ** decay
        scale = scale * math.sqrt(h * w)
        self.register_buffer("scale", scale.to(device))
        spec = torch.randn(b, c, *freqs.shape, 2, generator=generator) * sd
        self.spectrum = nn.Parameter(spec.to(device))
        self.decorrelate = decorrelate and c == 3  # colour decorrelation is for RGB only
        max_norm = _COLOR_SQRT.norm(dim=0).max()
        self.register_buffer("color", (_COLOR_SQRT / max_norm).to(device))

    def _linear(self) -> torch.Tensor:
        spec = torch.view_as_complex(self.spectrum) * self.scale
        img = torch.fft.irfft2(spec, s=self.shape[-2:])  # 1/(H W), as TF irfft2d: with the sqrt(H W) scale, sd is size-independent
        img = img / 4.0
        if self.decorrelate:
            img = torch.einsum("bchw,dc->bdhw", img, self.color.to(img.dtype))
        return img

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(self._linear())

    @torch.no_grad()
    def set_(self, image: torch.Tensor) -> None:
        raise NotImplementedError("a Fourier image is restored through its spectrum")


class Latent(ImageParam):
    """Image = ``decode(z)``: the optimized values are the latent codes ``z`` (``B x D``), started at
    ``init``; ``decode`` (a frozen network, e.g. a GAN generator mapped to [0, 1] RGB) turns them into
    ``B x 3 x H x W`` pixels. ``bounds=(lo, hi)`` keeps ``z`` in the box after every step (the
    support of a uniform prior).
    """

    space = "pixel"

    def __init__(self, decode: nn.Module, init: torch.Tensor, *, bounds: tuple[float, float] | None = None):
        super().__init__()
        self.decode = decode
        for p in self.decode.parameters():
            p.requires_grad_(False)
        self.bounds = bounds
        self.z = nn.Parameter(init.detach().clone(memory_format=torch.contiguous_format))
        self.project_()

    def forward(self) -> torch.Tensor:
        return self.decode(self.z)

    @torch.no_grad()
    def project_(self) -> None:
        if self.bounds is not None:
            self.z.clamp_(*self.bounds)

    @torch.no_grad()
    def set_(self, image: torch.Tensor) -> None:
        raise NotImplementedError("a generated image is restored through its latent code")
