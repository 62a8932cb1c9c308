"""Pictures of results: heatmaps, overlays, magnified differences and labelled grids.

Everything here takes and returns tensors in [0, 1] RGB (``3 x H x W`` or ``B x 3 x H x W``) except
:func:`grid`, which returns a Pillow image ready to save. No function prints or opens a window.

- :func:`normalize_map`: scale a non-negative map to [0, 1] per image, clipping at a percentile
  (SmoothGrad, Smilkov et al. 2017, caps at the 99th percentile so a few pixels do not wash out the rest).
- :func:`heatmap`: colour a ``[0, 1]`` map with a matplotlib colormap (a 256-entry lookup table).
- :func:`overlay`: blend a heatmap over a photo, weighted by the map itself.
- :func:`difference`: ``0.5 + k (b - a)``, a signed change made visible (grey = unchanged).
- :func:`grid`: rows and columns of images with optional captions.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = ["normalize_map", "heatmap", "overlay", "difference", "grid"]


def normalize_map(m: torch.Tensor, *, percentile: float = 99.0) -> torch.Tensor:
    """Per-image scaling of a non-negative map (``H x W`` or ``B x H x W``) to [0, 1]:
    ``min(m / q, 1)`` with ``q`` the ``percentile``-th percentile of that image's values (its
    maximum when ``percentile >= 100``). An all-zero map stays zero."""
    single = m.dim() == 2
    m = m.unsqueeze(0) if single else m
    flat = m.reshape(m.shape[0], -1).float()
    q = flat.max(1).values if percentile >= 100 else torch.quantile(flat, percentile / 100.0, dim=1)
    q = torch.where(q > 0, q, flat.max(1).values).clamp_min(1e-12)
    out = (m.float() / q.view(-1, 1, 1)).clamp(0, 1).to(m.dtype)
    return out[0] if single else out


@functools.cache
def _lut(cmap: str) -> torch.Tensor:
    import matplotlib

    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError:
        from .errors import PreimageError, did_you_mean

        raise PreimageError(f"unknown colormap {cmap!r}" + did_you_mean(cmap, list(matplotlib.colormaps))) from None
    table = colormap(torch.linspace(0, 1, 256).numpy())[:, :3]
    return torch.tensor(table, dtype=torch.float32)


def heatmap(m: torch.Tensor, *, cmap: str = "inferno") -> torch.Tensor:
    """Colour a map with values in [0, 1] (``H x W`` -> ``3 x H x W``; ``B x H x W`` -> ``B x 3 x H x W``)."""
    lut = _lut(cmap).to(m.device)
    idx = (m.detach().float().clamp(0, 1) * 255).round().long()
    rgb = lut[idx]  # ... x H x W x 3
    return rgb.movedim(-1, -3).contiguous()


def overlay(image: torch.Tensor, m: torch.Tensor, *, cmap: str = "inferno", alpha: float = 0.7,
            dim: float = 0.35) -> torch.Tensor:
    """Heatmap over a photo: ``(1 - a) · dim·image + a · heatmap(m)`` with ``a = alpha · m`` per pixel,
    so salient pixels are coloured and the rest shows the (dimmed) photo."""
    colours = heatmap(m, cmap=cmap)
    a = alpha * m.float().clamp(0, 1).unsqueeze(-3)
    base = image.float() * (1 - dim) if dim else image.float()
    return ((1 - a) * base + a * colours).clamp(0, 1)


def difference(a: torch.Tensor, b: torch.Tensor, *, magnify: float | None = None) -> tuple[torch.Tensor, float]:
    """``0.5 + k (b - a)`` clamped to [0, 1], and the factor ``k`` used. ``magnify=None`` picks
    ``k = 0.5 / max|b - a|`` per call, so the largest change reaches black or white."""
    d = (b.float() - a.float())
    if magnify is None:
        peak = float(d.abs().max())
        magnify = 0.5 / peak if peak > 0 else 1.0
    return (0.5 + magnify * d).clamp(0, 1), float(magnify)


# -- grids -------------------------------------------------------------------------------------

@functools.cache
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _as_pil(img: torch.Tensor | Image.Image) -> Image.Image:
    if isinstance(img, Image.Image):
        return img.convert("RGB")
    from .images import to_pil

    return to_pil(img.detach().cpu())


def _fit(text: str, draw: ImageDraw.ImageDraw, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def grid(
    images: Sequence[torch.Tensor | Image.Image | None] | torch.Tensor,
    *,
    ncols: int | None = None,
    labels: Sequence[str | None] | None = None,
    row_labels: Sequence[str] | None = None,
    pad: int = 4,
    background: int = 255,
    font_size: int = 12,
    fit_labels: bool = False,
) -> Image.Image:
    """Lay images out in rows of ``ncols`` (default: all in one row) with optional captions.

    ``images``: tensors (``3 x H x W``, ``1 x 3 x H x W``, or one ``B x 3 x H x W`` batch) or
    Pillow images; ``None`` leaves a cell empty. Cells take the size of the largest image; smaller
    ones are centred. ``labels`` (one per cell) are written under each cell; ``row_labels`` in a
    column on the left. A caption wider than its cell is cut with "…", unless ``fit_labels``: then
    the cells widen to the widest caption (images stay centred at their size). Returns an RGB
    Pillow image.
    """
    if isinstance(images, torch.Tensor):
        images = list(images) if images.dim() == 4 else [images]
    cells = [None if im is None else _as_pil(im) for im in images]
    if not cells:
        raise ValueError("grid needs at least one image")
    n = len(cells)
    ncols = max(1, min(ncols or n, n))
    nrows = -(-n // ncols)
    cw = max((c.width for c in cells if c is not None), default=1)
    ch = max((c.height for c in cells if c is not None), default=1)
    font = _font(font_size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    if fit_labels and labels:
        cw = max([cw] + [int(probe.textlength(str(t), font=font)) + 2 for t in labels if t])
    line = font_size + 4
    label_h = line if labels and any(labels) else 0
    left = 0
    if row_labels:
        left = int(max(probe.textlength(t, font=font) for t in row_labels)) + 2 * pad
    width = left + ncols * cw + (ncols + 1) * pad
    height = nrows * (ch + label_h) + (nrows + 1) * pad
    canvas = Image.new("RGB", (width, height), (background,) * 3)
    draw = ImageDraw.Draw(canvas)
    fill = (0, 0, 0) if background > 127 else (255, 255, 255)
    for i, cell in enumerate(cells):
        r, c = divmod(i, ncols)
        x0 = left + pad + c * (cw + pad)
        y0 = pad + r * (ch + label_h + pad)
        if cell is not None:
            canvas.paste(cell, (x0 + (cw - cell.width) // 2, y0 + (ch - cell.height) // 2))
        if label_h and i < len(labels or ()) and labels[i]:  # type: ignore[index]
            text = _fit(str(labels[i]), draw, font, cw)  # type: ignore[index]
            tw = draw.textlength(text, font=font)
            draw.text((x0 + (cw - tw) / 2, y0 + ch + 2), text, fill=fill, font=font)
    for r, text in enumerate(row_labels or ()):
        if r >= nrows:
            break
        y = pad + r * (ch + label_h + pad) + ch // 2 - font_size // 2
        draw.text((pad, y), text, fill=fill, font=font)
    return canvas
