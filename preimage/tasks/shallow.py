"""Shallow representations (HOG, dense SIFT) next to their inversions.

Mahendran & Vedaldi (CVPR 2015) invert HOG and dense SIFT with the same machinery as a CNN; HOGgles
(Vondrick et al., ICCV 2013) showed that the usual HOG "glyph" (one line per orientation bin and
cell) hides what the detector really keeps. This module puts the two side by side:

- :func:`is_shallow`, :func:`default_layer`, :func:`default_preset`: what ``preimage invert`` uses
  when the model is ``hog``/``dsift`` and the user gave no layer or preset (the representation's
  final output, alias ``features``, and the ``shallow`` preset);
- :func:`glyph`: the HOG glyph of an image, at the image's own pixel size;
- :func:`glyph_figure` / :func:`save_glyph_figure`: one labelled row
  ``original | HOG glyph | inversion [| more inversions]``, inversions contrast-stretched for
  display (:func:`stretch`: block-normalized features do not fix an image's contrast);
- :func:`save_inversion_glyphs`: that figure for every image of an :class:`~preimage.tasks.invert.Inversion`
  (``NAME_glyph.png``), and :func:`glyph_paths` to check those outputs before the work starts.

Python::

    >>> model = preimage.load_model("hog")
    >>> inv = invert(model, "sample:chelsea", layers=["hog"], preset="shallow")
    >>> save_glyph_figure("chelsea_glyph.png", inv.reference[0], inv.image[0], model=model)
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from ..io import all_or_nothing, atomic_write, check_outputs
from ..models import Model
from ..models.dsift import DenseSIFT
from ..models.glyph import hog_glyph
from ..models.hog import HOG
from ..models.shallow import SHALLOW_LAYER

if TYPE_CHECKING:
    from .invert import Inversion

__all__ = ["is_shallow", "default_layer", "default_preset", "glyph", "glyph_figure", "save_glyph_figure",
           "save_inversion_glyphs", "glyph_paths", "stretch", "gray", "SHALLOW_PRESET"]

#: the inversion preset for HOG / dense SIFT (see ``INVERT_PRESETS`` in tasks/invert.py)
SHALLOW_PRESET = "shallow"


def is_shallow(model: Model) -> bool:
    """Whether the model is one of the shallow representations (HOG or dense SIFT)."""
    return isinstance(model.net, (HOG, DenseSIFT))


def default_layer(model: Model) -> str | None:
    """The layer to invert when none is given: the representation itself for HOG / DSIFT, else None."""
    return SHALLOW_LAYER if is_shallow(model) else None


def default_preset(model: Model, fallback: str = "default") -> str:
    """``"shallow"`` for HOG / DSIFT, ``fallback`` for any other model."""
    return SHALLOW_PRESET if is_shallow(model) else fallback


def _hog_for(model: Model | None, hog: HOG | None) -> HOG:
    if hog is not None:
        return hog
    if model is not None and isinstance(model.net, HOG):
        return model.net
    return HOG()  # dense SIFT or any other model: the default Dalal-Triggs HOG


@torch.no_grad()
def glyph(image: torch.Tensor, *, model: Model | None = None, hog: HOG | None = None) -> torch.Tensor:
    """The HOG glyph of one image (``3 x H x W`` in [0, 1]) as a gray ``3 x H' x W'`` image, one
    ``cell x cell`` tile per cell, so it lines up with the image (``H' = H // cell * cell``).

    The HOG is the model's own when ``model`` is a HOG model, ``hog`` when given, else the default
    Dalal-Triggs HOG (8 px cells, 9 bins). Un-normalized cell histograms are drawn (the glyph of
    skimage and HOGgles), signed UoCTTI bins folded onto the unsigned ones.
    """
    h = _hog_for(model, hog)
    x = image.detach().float()
    x = x.unsqueeze(0) if x.dim() == 3 else x
    if x.shape[0] != 1:
        raise ValueError("glyph takes one image")
    dev = next(iter(h.buffers()), torch.zeros(0)).device
    cells = h.cell_histograms(x.to(dev))[0].cpu()
    pic = hog_glyph(cells, cell_size=max(3, h.cell_size), orientations=h.orientations)
    g = torch.as_tensor(pic, dtype=torch.float32)
    return g.unsqueeze(0).expand(3, -1, -1).contiguous()


def stretch(image: torch.Tensor, percentile: float = 1.0) -> torch.Tensor:
    """Display contrast: remove each channel's median, then map the ``percentile`` /
    ``100 - percentile`` values (all channels together) to 0 / 1 and clamp.

    HOG and SIFT are normalized per block / descriptor, and dense SIFT sees only the gray level, so
    neither the contrast nor the colour cast of an inversion is fixed by the features (the paper
    shows its inversions rescaled too). One shared scale keeps the channels' relative amplitudes;
    the per-channel offset removes a cast. For display only: metrics use the raw reconstruction.
    """
    x = image.detach().float()
    x = x - x.reshape(x.shape[0], -1).median(dim=1).values.view(-1, 1, 1)
    lo = torch.quantile(x.reshape(-1), percentile / 100.0)
    hi = torch.quantile(x.reshape(-1), 1.0 - percentile / 100.0)
    if not hi > lo:
        return (x + 0.5).clamp(0, 1)
    return ((x - lo) / (hi - lo)).clamp(0, 1)


def gray(image: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of a ``3 x H x W`` image, repeated on 3 channels (dense SIFT sees only this)."""
    w = torch.tensor((0.299, 0.587, 0.114), dtype=image.dtype, device=image.device).view(3, 1, 1)
    return (image * w).sum(0, keepdim=True).expand(3, -1, -1).contiguous()


def _describe(h: HOG) -> str:
    return f"HOG glyph ({h.cell_size} px cells, {h.orientations} bins)"


def glyph_figure(
    original: torch.Tensor,
    inversions: torch.Tensor | Sequence[tuple[str, torch.Tensor]],
    *,
    model: Model | None = None,
    hog: HOG | None = None,
    label: str = "inversion",
    font_size: int = 12,
    contrast: bool = True,
) -> Image.Image:
    """One labelled row: ``original | HOG glyph of the original | inversion(s)``.

    Args:
        original: ``3 x H x W`` in [0, 1].
        inversions: one ``3 x H x W`` reconstruction (captioned ``label``), or ``(caption, image)`` pairs.
        model / hog: which HOG draws the glyph (see :func:`glyph`).
        contrast: show the inversions with :func:`stretch` (their contrast is not determined by
            the features); ``False`` shows them as they are.
    Returns:
        An RGB Pillow image.
    """
    from ..viz import grid

    original = original.detach().cpu().clamp(0, 1)
    original = original[0] if original.dim() == 4 else original
    pairs = [(label, inversions)] if isinstance(inversions, torch.Tensor) else list(inversions)
    h = _hog_for(model, hog)
    panels = [original, glyph(original, hog=h)]
    labels = ["original", _describe(h)]
    for caption, img in pairs:
        img = img.detach().cpu()
        img = img[0] if img.dim() == 4 else img
        panels.append(stretch(img) if contrast else img.clamp(0, 1))
        labels.append(caption)
    return grid(panels, labels=labels, font_size=font_size)


def save_glyph_figure(
    path: str | os.PathLike,
    original: torch.Tensor,
    inversions: torch.Tensor | Sequence[tuple[str, torch.Tensor]],
    *,
    model: Model | None = None,
    hog: HOG | None = None,
    label: str = "inversion",
    contrast: bool = True,
    force: bool = False,
) -> Path:
    """Write :func:`glyph_figure` as a PNG (atomically; refuses to overwrite unless ``force``)."""
    from ..images import encode_png

    check_outputs([path], force)
    return atomic_write(path, encode_png(glyph_figure(original, inversions, model=model, hog=hog, label=label,
                                                      contrast=contrast)))


def glyph_paths(names: Sequence[str], out: str | os.PathLike) -> list[Path]:
    """The files :func:`save_inversion_glyphs` writes: ``OUT/NAME_glyph.png`` per image."""
    return [Path(out) / f"{n}_glyph.png" for n in names]


@all_or_nothing()
def save_inversion_glyphs(inv: "Inversion", model: Model, out: str | os.PathLike, *,
                          force: bool = False) -> list[Path]:
    """``OUT/NAME_glyph.png`` (original | HOG glyph | inversion, with the feature error in the caption)
    for every image of an inversion. Outputs are checked first, all of them, before any is written."""
    paths = glyph_paths(inv.names, out)
    check_outputs(paths, force)
    kind = "HOG" if isinstance(model.net, HOG) else "DSIFT" if isinstance(model.net, DenseSIFT) else model.name
    written = []
    for i, p in enumerate(paths):
        image = gray(inv.image[i]) if kind == "DSIFT" else inv.image[i]
        err = _squared_error(inv.metrics[i]) if i < len(inv.metrics) else None
        notes = (["gray"] if kind == "DSIFT" else []) + ([f"err {err:.3f}"] if err is not None else [])
        label = f"{kind} inversion" + (f" ({', '.join(notes)})" if notes else "")
        written.append(save_glyph_figure(p, inv.reference[i], image, model=model, label=label, force=True))
    return written


def _squared_error(metrics: dict[str, Any]) -> float | None:
    """``||Φ(x̂) - Φ(x)||² / ||Φ(x)||²`` summed over the inverted layers (metrics store the unsquared ratio)."""
    errs = metrics.get("feature_error") or {}
    if not errs:
        return None
    return float(sum(float(e) ** 2 for e in errs.values()))
