"""Image parameterizations: how the optimized image is represented.

A parameterization is an ``nn.Module`` whose ``forward()`` returns the current image batch. It says
which space it returns (``space = "pixel"``: [0, 1] RGB; ``"input"``: the model's normalized input,
as the original inversion script optimizes) and may constrain itself after each step (``project_``).

- :class:`Pixels`: one free value per pixel, optionally kept in a box (the bounded-range constraint).
- :class:`Upsampled`: free pixels on a coarser grid, bilinearly upsampled to the full size (the
  first phase of coarse-to-fine optimization).
- :class:`Pyramid`: a Laplacian pyramid of free levels, each bilinearly upsampled and summed, so
  coarse structure moves as fast as fine detail under Adam (a multi-scale pixel image).
- :class:`Fourier`: a scaled Fourier spectrum with decorrelated colour and a sigmoid (as Lucid's
  ``fft_image`` + ``to_valid_rgb``), which favours smooth, natural-looking images.
- :class:`Latent`: the image is a frozen generator's output ``G(z)`` and ``z`` is what moves, so
  the optimized image can only be one the generator makes (GAN inversion).
- :class:`DeepPrior`: the image is an untrained convolutional network's output on fixed noise and
  the network's weights are what moves (the deep image prior, Ulyanov, Vedaldi & Lempitsky 2018).
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ImageParam", "Pixels", "Near", "Upsampled", "Pyramid", "Fourier", "Latent", "DeepPrior"]


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


class Near(Pixels):
    """Pixels kept within ``radius`` of ``centre`` (an L∞ ball, as a fooling image's budget) and in
    ``bounds``: a finish that adjusts a finished image only by changes of at most ``radius`` per pixel."""

    def __init__(self, centre: torch.Tensor, radius: float, *, bounds: tuple[float, float] | None = (0.0, 1.0)):
        if not radius >= 0:
            raise ValueError(f"radius must be >= 0, not {radius}")
        self.radius = float(radius)
        super().__init__(centre, space="pixel", bounds=bounds)
        self.register_buffer("centre", self.x.detach().clone())

    @torch.no_grad()
    def project_(self) -> None:
        centre = getattr(self, "centre", None)
        if centre is not None:
            torch.minimum(torch.maximum(self.x, centre - self.radius), centre + self.radius, out=self.x)
        super().project_()


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

    project_ = Pixels.project_  # the coarse grid clamped to the box, as free pixels are

    @torch.no_grad()
    def set_(self, image: torch.Tensor) -> None:
        self.x.copy_(torch.nn.functional.interpolate(image, size=tuple(self.x.shape[-2:]), mode="area"))


# Square root of the colour covariance of ImageNet pixels (as estimated by Lucid), used to
# decorrelate colour channels: each column is a direction in RGB.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])


class Pyramid(ImageParam):
    """A Laplacian pyramid of ``levels`` free tensors: level k lives on a grid 2^k times coarser than
    the image, and the image is their sum, each bilinearly upsampled (align_corners=False):

        x = Σ_k up_k(L_k),   k = 0 … levels − 1

    Every value of level k moves a 2^k × 2^k patch, so an optimizer with per-parameter steps (Adam)
    moves coarse structure (layout, colour) as fast as fine detail: a multi-scale pixel image (as
    Lucid's Laplacian-pyramid parameterization). Started from ``init`` (the coarsest level holds
    its area-downsampled copy, each finer level what the coarser ones miss, so the sum is ``init``)
    and, with ``bounds``, kept in the box in image space: after each step the finest level absorbs
    ``clamp(x) − x``, the exact projection of the image, the coarse levels untouched.

    With ``decorrelate``, the levels hold colour in ImageNet's decorrelated basis (as :class:`Fourier`):
    ``x = M Σ_k up_k(L_k)`` with ``M`` the square root of the pixel colour covariance scaled so its
    largest column has norm 1; equal steps on the levels then move brightness most and hue least, so
    the image does not drift into colours no photo has.
    """

    space = "pixel"

    def __init__(self, init: torch.Tensor, *, levels: int = 4, bounds: tuple[float, float] | None = None,
                 decorrelate: bool = False):
        super().__init__()
        if levels < 1:
            raise ValueError(f"levels must be >= 1, not {levels}")
        self.size = tuple(init.shape[-2:])
        self.bounds = bounds
        self.decorrelate = decorrelate and init.shape[1] == 3  # colour decorrelation is for RGB only
        color = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()
        self.register_buffer("color", color.to(init))
        self.register_buffer("uncolor", torch.linalg.inv(color).to(init))
        self.sizes = [(max(1, self.size[0] >> k), max(1, self.size[1] >> k)) for k in range(levels)]
        self.levels = nn.ParameterList([nn.Parameter(torch.zeros(*init.shape[:2], *s, dtype=init.dtype,
                                                                 device=init.device)) for s in self.sizes])
        self.set_(init.detach())

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == self.size:
            return x
        return torch.nn.functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False)

    def _mix(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,dc->bdhw", x, m) if self.decorrelate else x

    def forward(self) -> torch.Tensor:
        out = self.levels[0]
        for level in list(self.levels)[1:]:
            out = out + self._up(level)
        return self._mix(out, self.color)

    @torch.no_grad()
    def project_(self) -> None:
        if self.bounds is not None:
            x = self.forward()
            self.levels[0].add_(self._mix(x.clamp(*self.bounds) - x, self.uncolor))

    @torch.no_grad()
    def set_(self, image: torch.Tensor) -> None:
        image = self._mix(image.to(self.levels[0]), self.uncolor)
        downs = [image] + [torch.nn.functional.interpolate(image, size=s, mode="area") for s in self.sizes[1:]]
        self.levels[-1].copy_(downs[-1])
        for k in range(len(self.sizes) - 2, -1, -1):  # each level: what the coarser ones leave out
            coarser = torch.nn.functional.interpolate(downs[k + 1], size=self.sizes[k], mode="bilinear",
                                                      align_corners=False)
            self.levels[k].copy_(downs[k] - coarser)
        # the sum of upsampled levels is only approximately `image` (bilinear up of a bilinear up is not
        # one bilinear up): the finest level takes up the difference, so the sum is exact
        self.levels[0].add_(image - self._mix(self.forward(), self.uncolor))
        self.project_()


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
    def set_(self, image: torch.Tensor, eps: float = 1e-3) -> None:
        """The spectrum whose image is ``image`` (clamped to [eps, 1 − eps], where the sigmoid is
        invertible): logit, colour correlation undone, rfft2, divided by the frequency scale; so a
        Fourier image can continue from any picture (a two-stage recipe, a restored state)."""
        img = torch.logit(image.to(self.scale.dtype).clamp(eps, 1 - eps)) * 4.0
        if self.decorrelate:
            img = torch.einsum("bdhw,cd->bchw", img, torch.linalg.inv(self.color.to(img.dtype)))
        spec = torch.fft.rfft2(img, s=self.shape[-2:]) / self.scale
        self.spectrum.copy_(torch.view_as_real(spec).to(self.spectrum))


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


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, padding_mode="reflect"), nn.BatchNorm2d(c_out),
                         nn.LeakyReLU(0.2))


class _Hourglass(nn.Module):
    """Encoder-decoder with skip connections: ``depth`` stride-2 stages of ``width`` channels down, bilinear
    upsampling back, each decoder stage fed the encoder's ``skip`` channels of the same scale; sigmoid out."""

    def __init__(self, c_in: int, c_out: int, width: int, depth: int, skip: int):
        super().__init__()
        self.down = nn.ModuleList([nn.Sequential(_conv(c_in if i == 0 else width, width, 2), _conv(width, width))
                                   for i in range(depth)])
        self.skips = nn.ModuleList([_conv(c_in if i == 0 else width, skip) for i in range(depth)])
        self.up = nn.ModuleList([nn.Sequential(_conv(width + skip, width), _conv(width, width, 1))
                                 for _ in range(depth)])
        self.out = nn.Conv2d(width, c_out, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        feats, x = [], z
        for down, skip in zip(self.down, self.skips):
            feats.append((skip(x), x.shape[-2:]))
            x = down(x)
        for up, (s, size) in zip(reversed(self.up), reversed(feats)):
            x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
            x = up(torch.cat([x, s], 1))
        return torch.sigmoid(self.out(x))


class DeepPrior(ImageParam):
    """The deep image prior (Ulyanov, Vedaldi & Lempitsky 2018): each image is the output of its own
    randomly initialized encoder-decoder (``width`` channels; ``depth`` stride-2 stages, fewer on
    images too small for them; skip connections; sigmoid output in [0, 1]) on a fixed input of
    uniform noise (``noise`` channels, amplitude 0.1), and the optimizer moves the network's weights. A convolutional network fits
    natural structure long before noise, so the architecture itself is the image prior. Built from
    ``generator`` (weights and input), so a seed reproduces the run. ``set_`` is not supported: the
    image is reached through the weights.
    """

    space = "pixel"

    def __init__(self, shape: tuple[int, int, int, int], *, width: int = 32, depth: int = 4, skip: int = 4,
                 noise: int = 16, generator: torch.Generator | None = None, device: torch.device | str | None = None):
        super().__init__()
        b, c, h, w = shape
        depth = max(1, min(depth, int(math.log2(min(h, w))) - 1))  # the coarsest map keeps at least 2 x 2
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
            self.nets = nn.ModuleList([_Hourglass(noise, c, width, depth, skip) for _ in range(b)])
        self.register_buffer("z", 0.1 * torch.rand(b, noise, h, w, generator=g))
        self.to(device or "cpu")

    def forward(self) -> torch.Tensor:
        return torch.cat([net(self.z[i:i + 1]) for i, net in enumerate(self.nets)])

    @torch.no_grad()
    def set_(self, image: torch.Tensor) -> None:
        raise NotImplementedError("a deep-prior image is reached through its network's weights")
