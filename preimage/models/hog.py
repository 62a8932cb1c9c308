"""Differentiable Histogram of Oriented Gradients (HOG) written as a small torch network.

Mahendran & Vedaldi, "Understanding Deep Image Representations by Inverting Them" (CVPR 2015)
invert HOG by expressing it as a chain of differentiable layers (their ``hog_net``). This module
does the same in pure torch ops, with two variants:

``"dalal-triggs"`` (Dalal & Triggs, CVPR 2005; the layout of :func:`skimage.feature.hog`)
    gradient ``g = (I[y+1]-I[y-1], I[x+1]-I[x-1])`` (zero on the image border), magnitude
    ``m = |g|``, unsigned angle ``theta = atan2(g_row, g_col) mod 180deg``, ``O`` orientation bins
    of width ``w = 180/O`` degrees; cell histogram ``h_o(cell) = mean_{p in cell} m(p) a_o(theta(p))``
    over non-overlapping ``c x c`` cells, ``floor(H/c) x floor(W/c)`` of them; every ``b x b``
    block of cells is normalised (``L2-Hys``: ``v/sqrt(|v|^2+eps^2)``, clip at 0.2, renormalise;
    also ``L1``, ``L1-sqrt``, ``L2``; ``eps = 1e-5``). Output ``(B, b*b*O, Hc-b+1, Wc-b+1)``, channel
    index ``(r*b + c)*O + o`` for cell ``(r, c)`` of the block, matching skimage's
    ``(n_blocks_row, n_blocks_col, b, b, O)`` array with ``feature_vector=False``.

``"uoctti"`` (Felzenszwalb, Girshick, McAllester & Ramanan, PAMI 2010; ``vl_hog``/DPM features)
    same gradient (but zero on the whole one-pixel image frame, as DPM), *signed* angle with ``2O`` bins centred at ``k*360/(2O)`` degrees, bilinear spatial
    binning into ``c x c`` cells (cell centres at ``(j+0.5)c - 0.5``). For each cell the four 2x2
    blocks containing it give ``n_k = 1/sqrt(E_k + eps)`` (``E_k`` the block sum of the cell
    energies ``sum_o (h_o + h_{o+O})^2``; cells outside the image count as zero). Features, 31 for
    ``O = 9``: ``2O`` contrast-sensitive ``0.5 sum_k min(h_o n_k, 0.2)``, ``O`` insensitive
    ``0.5 sum_k min((h_o + h_{o+O}) n_k, 0.2)``, and 4 texture features
    ``0.2357 sum_o min(h_o n_k, 0.2)``. Output ``(B, 3O+4, Hc, Wc)``. ``eps`` defaults to
    ``1e-4/255^2``, DPM's ``1e-4`` for 0..255 images rescaled to [0, 1] pixels. Unlike DPM, the
    border cells are kept (DPM crops them). No offline UoCTTI reference was available, so the
    variant is tested against a direct loop implementation of the formulas above, not against
    ``vl_hog``.

Colour: every channel gets its own gradient and each pixel keeps the gradient of the channel with
the largest magnitude (Dalal & Triggs; skimage with ``channel_axis``; DPM). The choice (an argmax)
is piecewise constant, so gradients flow only through the selected channel.

Differentiability: orientation binning is *soft* by default (``soft=True``): each pixel votes
into the two nearest bin centres with linear weights ``max(0, 1 - |theta - theta_o|/w)`` (Dalal &
Triggs' orientation interpolation; the paper's "HOGb" bilinear orientation assignment), so the
output is differentiable in the angle too. ``soft=False`` gives hard binning, which reproduces
``skimage.feature.hog`` to float precision (tested on ``skimage.data`` photos, max abs difference
< 1e-6; skimage sums cells in float32. Colour pixels whose channels' gradient magnitudes tie to
within 1 ulp may pick a different channel than skimage, since ``torch.hypot`` and ``np.hypot``
round differently: on raw ``chelsea`` < 0.5% of the values differ). With ``soft=True`` the
Dalal–Triggs features stay close to skimage's: measured on 256x256 crops of ``skimage.data``
photos (L2-Hys, 8x8 cells, 2x2 blocks, 9 bins), Pearson correlation over all feature values
0.973 / 0.965 / 0.959 / 0.882 and relative L2 error 0.137 / 0.186 / 0.181 / 0.325 for chelsea /
coffee / astronaut / camera (camera's large, faintly textured sky flips weak votes between
neighbouring bins); the tests assert these with a small margin. ``atan2`` and ``sqrt`` are evaluated on guarded inputs so
that gradients are finite everywhere, including flat images.

Usage::

    hog = HOG(cell_size=8, orientations=9)           # Dalal-Triggs, 36 channels per block
    feats = hog(images)                               # (B, 36, H//8 - 1, W//8 - 1)
    cells = hog.cell_histograms(images)               # (B, 9, H//8, W//8), e.g. for hog_glyph
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HOG", "ImageGradient", "OrientationBinning", "CellPooling", "BlockNormalization",
           "UoCTTINormalization"]

_VARIANTS = ("dalal-triggs", "uoctti")
_BLOCK_NORMS = ("L1", "L1-sqrt", "L2", "L2-Hys")


def _tiny(dtype: torch.dtype) -> float:
    """Squared magnitudes at or below this count as zero (keeps 1/|g| representable)."""
    return float(torch.finfo(dtype).eps) ** 4


def safe_sqrt(x: torch.Tensor, tiny: float = 0.0) -> torch.Tensor:
    """``sqrt(x)`` for ``x >= 0`` with value 0 and gradient 0 where ``x <= tiny`` (no inf/nan)."""
    ok = x > tiny
    return torch.where(ok, torch.sqrt(torch.where(ok, x, torch.ones_like(x))), torch.zeros_like(x))


def gradient_polar(g_row: torch.Tensor, g_col: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Magnitude and angle ``atan2(g_row, g_col)`` in radians, with finite gradients at ``g = 0``.

    Where ``|g|^2`` is (numerically) zero the magnitude is 0 and the angle is 0, both with zero
    gradient, exactly what ``atan2(0, 0) = 0`` gives in the forward pass.
    """
    m2 = g_row * g_row + g_col * g_col
    ok = m2 > _tiny(m2.dtype)
    mag = safe_sqrt(m2, _tiny(m2.dtype))
    angle = torch.atan2(torch.where(ok, g_row, torch.zeros_like(g_row)),
                        torch.where(ok, g_col, torch.ones_like(g_col)))
    return mag, angle


def central_differences(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(I[y+1]-I[y-1], I[x+1]-I[x-1])`` per channel of ``(B, C, H, W)``, zero on the border rows/cols."""
    g_row = F.pad(x[:, :, 2:, :] - x[:, :, :-2, :], (0, 0, 1, 1))
    g_col = F.pad(x[:, :, :, 2:] - x[:, :, :, :-2], (1, 1, 0, 0))
    return g_row, g_col


def _check_image(x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise TypeError(f"expected a floating point image in [0, 1], got {x.dtype}")


class ImageGradient(nn.Module):
    """Image ``(B, C, H, W)`` -> ``(B, 2, H, W)`` = (row gradient, column gradient).

    Central differences without scaling. ``frame=False`` (skimage): the row gradient is zero on
    the first/last row and the column gradient on the first/last column. ``frame=True`` (DPM):
    both are zero on the whole one-pixel frame. With ``C > 1`` each pixel keeps the gradient of
    the channel with the largest magnitude (first such channel on ties).
    """

    def __init__(self, frame: bool = False) -> None:
        super().__init__()
        self.frame = bool(frame)

    def extra_repr(self) -> str:
        return f"frame={self.frame}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x)
        g_row, g_col = central_differences(x)
        if self.frame:
            g_row = F.pad(g_row[:, :, :, 1:-1], (1, 1, 0, 0))
            g_col = F.pad(g_col[:, :, 1:-1, :], (0, 0, 1, 1))
        if x.shape[1] > 1:
            with torch.no_grad():
                best = torch.hypot(g_row, g_col).argmax(dim=1, keepdim=True)
            g_row = torch.gather(g_row, 1, best)
            g_col = torch.gather(g_col, 1, best)
        return torch.cat([g_row, g_col], dim=1)


class OrientationBinning(nn.Module):
    """Gradient ``(B, 2, H, W)`` -> magnitude-weighted orientation votes ``(B, n_bins, H, W)``.

    Args:
        n_bins: number of orientation bins over the angular range.
        signed: range 360 degrees (contrast-sensitive) instead of 180.
        centered: bin ``o`` is centred at ``o*w`` (``True``, UoCTTI) or spans ``[o*w, (o+1)*w)``
            with centre ``(o+0.5)*w`` (``False``, Dalal–Triggs / skimage).
        soft: linear interpolation between the two nearest bin centres (differentiable in the
            angle); ``False`` votes into one bin only (the nearest centre when ``centered``, the
            containing interval otherwise, using skimage's degree arithmetic).
    """

    def __init__(self, n_bins: int = 9, signed: bool = False, centered: bool = False,
                 soft: bool = True) -> None:
        super().__init__()
        if n_bins < 1:
            raise ValueError("n_bins must be positive")
        self.n_bins, self.signed, self.centered, self.soft = int(n_bins), bool(signed), bool(centered), bool(soft)

    def extra_repr(self) -> str:
        return f"n_bins={self.n_bins}, signed={self.signed}, centered={self.centered}, soft={self.soft}"

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        mag, angle = gradient_polar(g[:, 0:1], g[:, 1:2])
        n = self.n_bins
        k = torch.arange(n, device=g.device, dtype=g.dtype).view(1, n, 1, 1)
        if self.soft:
            period = 2 * math.pi if self.signed else math.pi
            width = period / n
            centres = (k + (0.0 if self.centered else 0.5)) * width
            diff = torch.remainder(angle - centres + period / 2, period) - period / 2
            weights = torch.relu(1.0 - diff.abs() / width)
        elif self.centered:
            period = 2 * math.pi if self.signed else math.pi
            width = period / n
            with torch.no_grad():
                # nearest centre; an angle exactly half-way (e.g. a vertical gradient with 18
                # bins) goes to the lower bin, as DPM's first-best direction search does
                idx = torch.remainder(torch.ceil(angle / width - 0.5 - 1e-9), n)
            weights = (idx == k).to(g.dtype)
        else:
            # skimage: orientation = rad2deg(atan2(g_row, g_col)) % 180; bin i = [i*w, (i+1)*w)
            period_deg = 360.0 if self.signed else 180.0
            width = period_deg / n
            with torch.no_grad():
                deg = torch.remainder(torch.rad2deg(angle), period_deg)
                lo = torch.tensor([width * i for i in range(n)], device=g.device, dtype=g.dtype)
                hi = torch.tensor([width * (i + 1) for i in range(n)], device=g.device, dtype=g.dtype)
                weights = ((deg >= lo.view(1, n, 1, 1)) & (deg < hi.view(1, n, 1, 1))).to(g.dtype)
        return mag * weights


def _triangle_pool_1d(x: torch.Tensor, dim: int, size: int, n_out: int) -> torch.Tensor:
    """Bilinear (triangle) pooling along ``dim`` (2 or 3) of ``(B, C, H, W)``: output ``j`` is
    ``sum_p max(0, 1 - |p - ((j+0.5)size - 0.5)|/size) x[p]``, pixels outside the image are 0."""
    m = (size - 1) / 2.0
    lo = math.floor(m - size) + 1
    hi = math.ceil(m + size) - 1
    taps = torch.arange(lo, hi + 1, device=x.device, dtype=x.dtype)
    kernel = torch.clamp(1.0 - (taps - m).abs() / size, min=0.0)
    length = x.shape[dim]
    pad_lo = -lo
    pad_hi = max(0, (n_out - 1) * size + hi - (length - 1))
    b, c, h, w = x.shape
    flat = x.reshape(b * c, 1, h, w)
    if dim == 2:
        flat = F.pad(flat, (0, 0, pad_lo, pad_hi))
        out = F.conv2d(flat, kernel.view(1, 1, -1, 1), stride=(size, 1))[:, :, :n_out, :]
    else:
        flat = F.pad(flat, (pad_lo, pad_hi, 0, 0))
        out = F.conv2d(flat, kernel.view(1, 1, 1, -1), stride=(1, size))[:, :, :, :n_out]
    return out.reshape(b, c, out.shape[2], out.shape[3])


class CellPooling(nn.Module):
    """Orientation votes ``(B, O, H, W)`` -> cell histograms ``(B, O, H//c, W//c)``.

    ``mode="box"``: mean over each ``c x c`` cell (skimage; pixels past the last full cell are
    dropped). ``mode="bilinear"``: sum with bilinear spatial weights over the 2c x 2c
    neighbourhood of each cell centre (UoCTTI / DPM).
    """

    def __init__(self, cell_size: int = 8, mode: str = "box") -> None:
        super().__init__()
        if mode not in ("box", "bilinear"):
            raise ValueError(f"mode must be 'box' or 'bilinear', got {mode!r}")
        if cell_size < 1:
            raise ValueError("cell_size must be positive")
        self.cell_size, self.mode = int(cell_size), mode

    def extra_repr(self) -> str:
        return f"cell_size={self.cell_size}, mode={self.mode!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.cell_size
        hc, wc = x.shape[2] // c, x.shape[3] // c
        if hc < 1 or wc < 1:
            raise ValueError(f"image {tuple(x.shape[2:])} is smaller than one {c}x{c} cell")
        if self.mode == "box":
            return F.avg_pool2d(x, kernel_size=c, stride=c)
        return _triangle_pool_1d(_triangle_pool_1d(x, 3, c, wc), 2, c, hc)


class BlockNormalization(nn.Module):
    """Cell histograms ``(B, O, Hc, Wc)`` -> normalised blocks ``(B, b*b*O, Hc-b+1, Wc-b+1)``.

    Block ``(i, j)`` holds cells ``(i..i+b-1, j..j+b-1)``; channel ``(r*b + c)*O + o``. Methods as
    in skimage (``eps = 1e-5``): ``L1`` ``v/(|v|_1+eps)``, ``L1-sqrt`` ``sqrt(v/(|v|_1+eps))``,
    ``L2`` ``v/sqrt(|v|^2+eps^2)``, ``L2-Hys`` (L2, clip at 0.2, L2 again).
    """

    def __init__(self, block_size: int = 2, method: str = "L2-Hys", eps: float = 1e-5,
                 clip: float = 0.2) -> None:
        super().__init__()
        if method not in _BLOCK_NORMS:
            raise ValueError(f"block_norm must be one of {_BLOCK_NORMS}, got {method!r}")
        if block_size < 1:
            raise ValueError("block_size must be positive")
        self.block_size, self.method, self.eps, self.clip = int(block_size), method, float(eps), float(clip)

    def extra_repr(self) -> str:
        return f"block_size={self.block_size}, method={self.method!r}, eps={self.eps}"

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b = self.block_size
        n, o, hc, wc = h.shape
        if hc < b or wc < b:
            raise ValueError(f"{hc}x{wc} cells are fewer than one {b}x{b} block")
        blocks = h.unfold(2, b, 1).unfold(3, b, 1)              # (N, O, Hb, Wb, b, b)
        blocks = blocks.permute(0, 4, 5, 1, 2, 3).reshape(n, b * b * o, hc - b + 1, wc - b + 1)
        eps = self.eps
        if self.method == "L1":
            return blocks / (blocks.abs().sum(1, keepdim=True) + eps)
        if self.method == "L1-sqrt":
            return safe_sqrt(blocks / (blocks.abs().sum(1, keepdim=True) + eps))
        out = blocks / torch.sqrt(blocks.pow(2).sum(1, keepdim=True) + eps * eps)
        if self.method == "L2-Hys":
            out = torch.clamp(out, max=self.clip)
            out = out / torch.sqrt(out.pow(2).sum(1, keepdim=True) + eps * eps)
        return out


class UoCTTINormalization(nn.Module):
    """Signed cell histograms ``(B, 2O, Hc, Wc)`` -> UoCTTI features ``(B, 3O+4, Hc, Wc)``.

    See the module docstring for the formulas (four 2x2-block normalisations, truncation at 0.2,
    contrast-sensitive / insensitive / texture projections).
    """

    def __init__(self, eps: float = 1e-4 / 255.0 ** 2, clip: float = 0.2) -> None:
        super().__init__()
        self.eps, self.clip = float(eps), float(clip)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, clip={self.clip}"

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        two_o = h.shape[1]
        if two_o % 2:
            raise ValueError("UoCTTI expects an even number of signed orientation bins")
        o = two_o // 2
        unsigned = h[:, :o] + h[:, o:]
        energy = unsigned.pow(2).sum(1, keepdim=True)                    # (B, 1, Hc, Wc)
        block = F.avg_pool2d(F.pad(energy, (1, 1, 1, 1)), 2, stride=1) * 4  # (B, 1, Hc+1, Wc+1)
        hc, wc = h.shape[2], h.shape[3]
        inv = [1.0 / torch.sqrt(block[:, :, dy:dy + hc, dx:dx + wc] + self.eps)
               for dy in (0, 1) for dx in (0, 1)]
        sensitive = sum(torch.clamp(h * n, max=self.clip) for n in inv) * 0.5
        insensitive = sum(torch.clamp(unsigned * n, max=self.clip) for n in inv) * 0.5
        texture = [torch.clamp(h * n, max=self.clip).sum(1, keepdim=True) * 0.2357 for n in inv]
        return torch.cat([sensitive, insensitive, *texture], dim=1)


class HOG(nn.Module):
    """Differentiable HOG as a network of named stages (see the module docstring).

    Children, run in this order: ``gradient`` (:class:`ImageGradient`), ``orientation``
    (:class:`OrientationBinning`), ``cells`` (:class:`CellPooling`), ``normalize``
    (:class:`BlockNormalization` or :class:`UoCTTINormalization`). The last one's output is the
    HOG feature map.

    Args:
        cell_size: pixels per (square) cell.
        orientations: orientation bins over 180 degrees (UoCTTI adds as many signed ones).
        variant: ``"dalal-triggs"`` (skimage layout) or ``"uoctti"`` (31-dim Felzenszwalb HOG).
        block_size: cells per block side (Dalal–Triggs only).
        block_norm: ``"L2-Hys"``, ``"L2"``, ``"L1"`` or ``"L1-sqrt"`` (Dalal–Triggs only).
        soft: soft (linear) orientation binning, differentiable in the angle. ``False`` = hard
            binning (exactly skimage for Dalal–Triggs; DPM's nearest direction for UoCTTI).
        signed: Dalal–Triggs over 360 degrees instead of 180 (UoCTTI is always both).
        eps: normalisation constant; ``None`` = 1e-5 (Dalal–Triggs) or 1e-4/255^2 (UoCTTI).
        spatial: ``"box"`` or ``"bilinear"`` cell pooling; ``None`` = the variant's own
            (box for Dalal–Triggs as in skimage, bilinear for UoCTTI).

    Input ``(B, 3 or 1, H, W)`` floats in [0, 1]; output ``(B, D, Hout, Wout)`` with
    :meth:`output_shape` giving ``(D, Hout, Wout)``.
    """

    def __init__(self, cell_size: int = 8, orientations: int = 9, variant: str = "dalal-triggs",
                 block_size: int = 2, block_norm: str = "L2-Hys", soft: bool = True,
                 signed: bool = False, eps: float | None = None, spatial: str | None = None) -> None:
        super().__init__()
        variant = variant.lower().replace("_", "-")
        if variant in ("dalaltriggs", "dt"):
            variant = "dalal-triggs"
        if variant not in _VARIANTS:
            raise ValueError(f"variant must be one of {_VARIANTS}, got {variant!r}")
        self.variant, self.cell_size, self.orientations = variant, int(cell_size), int(orientations)
        self.block_size = int(block_size) if variant == "dalal-triggs" else 2
        self.block_norm = block_norm
        if variant == "dalal-triggs":
            self.gradient = ImageGradient()
            self.orientation = OrientationBinning(orientations, signed=signed, centered=False, soft=soft)
            self.cells = CellPooling(cell_size, spatial or "box")
            self.normalize = BlockNormalization(block_size, block_norm, 1e-5 if eps is None else eps)
        else:
            self.gradient = ImageGradient(frame=True)
            self.orientation = OrientationBinning(2 * orientations, signed=True, centered=True, soft=soft)
            self.cells = CellPooling(cell_size, spatial or "bilinear")
            self.normalize = UoCTTINormalization(1e-4 / 255.0 ** 2 if eps is None else eps)

    @property
    def dim(self) -> int:
        """Channels of the output feature map."""
        if self.variant == "uoctti":
            return 3 * self.orientations + 4
        return self.block_size ** 2 * self.orientation.n_bins

    def output_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """``(D, Hout, Wout)`` of the feature map for an ``height x width`` image."""
        hc, wc = height // self.cell_size, width // self.cell_size
        if self.variant == "uoctti":
            return self.dim, hc, wc
        return self.dim, hc - self.block_size + 1, wc - self.block_size + 1

    def cell_histograms(self, x: torch.Tensor) -> torch.Tensor:
        """Un-normalised cell histograms ``(B, n_bins, Hc, Wc)`` (input of ``normalize``)."""
        return self.cells(self.orientation(self.gradient(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.cell_histograms(x))
