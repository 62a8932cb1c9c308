"""HOG glyph rendering."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data, img_as_float64
from skimage.feature import hog as skimage_hog

from preimage.models.glyph import glyph_stencils, hog_glyph
from preimage.models.hog import HOG


def test_shape_range_and_batch():
    hog = HOG()
    x = torch.rand(2, 3, 48, 64)
    cells = hog.cell_histograms(x)                          # (2, 9, 6, 8)
    g = hog_glyph(cells, cell_size=12)
    assert g.shape == (2, 72, 96) and g.dtype == np.float64
    assert g.min() >= 0 and g.max() == pytest.approx(1.0)
    single = hog_glyph(cells[0], cell_size=12)
    assert single.shape == (72, 96)
    np.testing.assert_allclose(single, g[0])
    assert hog_glyph(cells[:1], cell_size=12).shape == (72, 96)


def test_accepts_signed_and_uoctti_features():
    hog = HOG(variant="uoctti")
    x = torch.rand(1, 3, 32, 32)
    assert hog_glyph(hog.cell_histograms(x)).shape == (64, 64)     # 18 signed bins
    assert hog_glyph(hog(x)).shape == (64, 64)                      # 31-dim features
    with pytest.raises(ValueError):
        hog_glyph(torch.rand(1, 7, 4, 4))


def test_zero_input_gives_zero_image():
    assert np.all(hog_glyph(np.zeros((9, 3, 3))) == 0)


def test_stencils_are_edge_directions():
    s = glyph_stencils(9, 17)
    centre = 8
    # bin 4 (gradient ~90 deg, i.e. along rows: a horizontal edge) draws a horizontal line
    assert s[4][centre].sum() > 10 and s[4][:, centre].sum() < 3
    # every stencil's principal axis is perpendicular to its bin-centre gradient direction,
    # (row, col) = (sin phi, cos phi): e.g. bin 0 (phi = 10 deg) draws an almost vertical line
    rr, cc = np.mgrid[0:17, 0:17] - centre
    for o, phi in enumerate(np.deg2rad(20 * np.arange(9) + 10)):
        w = s[o] / s[o].sum()
        cov = np.array([[(w * rr * rr).sum(), (w * rr * cc).sum()], [(w * rr * cc).sum(), (w * cc * cc).sum()]])
        axis = np.linalg.eigh(cov)[1][:, -1]
        assert abs(axis @ np.array([np.sin(phi), np.cos(phi)])) < 0.02  # within ~1 degree


def test_vertical_edge_draws_vertical_lines():
    img = np.zeros((64, 64))
    img[:, 32:] = 1.0                                       # vertical edge
    cells = HOG(soft=False).cell_histograms(torch.from_numpy(img)[None, None])
    g = hog_glyph(cells, cell_size=16)
    tile = g[16 * 2:16 * 3, 16 * 4:16 * 5]                  # cell on the edge (column 32..39)
    assert tile[:, 7:9].sum() > 5 * tile[7:9, :].sum() / 2
    assert g[:, :16 * 3].max() == 0                         # no gradient, no ink


def test_resembles_skimage_visualization():
    im = img_as_float64(data.camera())[:128, :128]
    _, ref = skimage_hog(im, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2),
                         visualize=True)
    cells = HOG(soft=False).cell_histograms(torch.from_numpy(im)[None, None])
    ours = hog_glyph(cells, cell_size=8)
    assert ours.shape == ref.shape
    corr = np.corrcoef(ours.ravel(), ref.ravel())[0, 1]
    assert corr > 0.7, corr
