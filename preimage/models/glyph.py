"""HOG glyph rendering: draw cell orientation histograms as oriented line segments.

The classic HOG visualisation (Dalal & Triggs, CVPR 2005; ``skimage.feature.hog(visualize=True)``;
Vondrick et al., "HOGgles: Visualizing Object Detection Features", ICCV 2013): every cell becomes a
``p x p`` tile in which each orientation bin ``o`` draws a line segment through the tile centre,
*perpendicular* to the bin's gradient direction ``phi_o`` (i.e. along the edge it detects), with
intensity proportional to the bin value::

    glyph[cell tile](y, x) = sum_o h_o(cell) * S_o(y, x),
    S_o(y, x) = max(0, 1 - dist((y, x), line_o)),   line_o through the centre along (cos phi_o, -sin phi_o)

where ``(row, col)`` direction ``(cos phi_o, -sin phi_o)`` is the edge direction for a gradient
angle ``phi_o`` measured as ``atan2(g_row, g_col)`` (the convention of :class:`preimage.models.hog.HOG`
and skimage), the segment has half-length ``p/2 - 1``, and the whole image is divided by its
maximum to land in [0, 1]. Rendering is plain numpy (not differentiable; not meant for the
optimisation path).

Accepted inputs (a torch tensor or numpy array, ``(D, Hc, Wc)`` or ``(B, D, Hc, Wc)``):
``D = O`` unsigned cell histograms (``HOG().cell_histograms(x)``), ``D = 2 O`` signed histograms
(UoCTTI cells; opposite bins are summed), or ``D = 3 O + 4`` UoCTTI features (the ``O``
contrast-insensitive channels are drawn).

Usage::

    hog = HOG(cell_size=8)
    cells = hog.cell_histograms(image[None])          # (1, 9, Hc, Wc)
    picture = hog_glyph(cells, cell_size=16)          # (Hc*16, Wc*16) float array in [0, 1]
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["hog_glyph", "glyph_stencils"]


def glyph_stencils(orientations: int = 9, cell_size: int = 16, line_width: float = 1.0) -> np.ndarray:
    """``(orientations, p, p)`` anti-aliased line stencils, one per unsigned orientation bin.

    Bin ``o`` has gradient angle ``(o + 0.5) * 180/orientations`` degrees (bin centre); its
    stencil is a segment through the tile centre along the perpendicular (edge) direction.
    """
    p = int(cell_size)
    if p < 3:
        raise ValueError("cell_size must be at least 3 pixels")
    centre = (p - 1) / 2.0
    half = p / 2.0 - 1.0
    rr, cc = np.meshgrid(np.arange(p, dtype=np.float64) - centre,
                         np.arange(p, dtype=np.float64) - centre, indexing="ij")
    phi = np.pi * (np.arange(orientations) + 0.5) / orientations
    out = np.empty((orientations, p, p))
    for o, a in enumerate(phi):
        er, ec = np.cos(a), -np.sin(a)                     # edge direction in (row, col)
        along = rr * er + cc * ec
        across = np.abs(-rr * ec + cc * er)
        beyond = np.clip(np.abs(along) - half, 0.0, None)  # distance past the segment ends
        dist = np.hypot(across, beyond)
        out[o] = np.clip(1.0 - dist / line_width, 0.0, 1.0)
    return out


def _as_numpy(features: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        return features.detach().to("cpu", torch.float64).numpy()
    return np.asarray(features, dtype=np.float64)


def hog_glyph(features: torch.Tensor | np.ndarray, cell_size: int = 16, orientations: int = 9,
              line_width: float = 1.0) -> np.ndarray:
    """Render HOG cell histograms as a glyph image.

    Args:
        features: ``(D, Hc, Wc)`` or ``(B, D, Hc, Wc)`` with ``D`` in ``{O, 2O, 3O+4}`` (see the
            module docstring).
        cell_size: tile side in output pixels per cell.
        orientations: ``O``, unsigned orientation bins.
        line_width: stroke half-width of the anti-aliased segments, in pixels.

    Returns:
        ``(Hc*cell_size, Wc*cell_size)`` float64 array in [0, 1] (``(B, ...)`` for a batch of
        more than one). Negative feature values are treated as 0; an all-zero input gives zeros.
    """
    f = _as_numpy(features)
    batched = f.ndim == 4
    if f.ndim == 3:
        f = f[None]
    if f.ndim != 4:
        raise ValueError(f"expected (D, Hc, Wc) or (B, D, Hc, Wc) features, got shape {f.shape}")
    o = int(orientations)
    d = f.shape[1]
    if d == o:
        h = f
    elif d == 2 * o:
        h = f[:, :o] + f[:, o:]
    elif d == 3 * o + 4:
        h = f[:, 2 * o:3 * o]
    else:
        raise ValueError(f"{d} channels do not match {o} orientations (expected {o}, {2 * o} or {3 * o + 4})")
    h = np.clip(h, 0.0, None)
    stencils = glyph_stencils(o, cell_size, line_width)      # (O, p, p)
    b, _, hc, wc = h.shape
    p = stencils.shape[1]
    tiles = np.einsum("bohw,oyx->bhywx", h, stencils)       # (B, Hc, p, Wc, p)
    img = tiles.reshape(b, hc * p, wc * p)
    peak = img.reshape(b, -1).max(axis=1).reshape(b, 1, 1)
    img = np.where(peak > 0, img / np.where(peak > 0, peak, 1.0), 0.0)
    img = np.clip(img, 0.0, 1.0)
    if batched and b > 1:
        return img
    return img[0]
