"""Differentiable HOG: agreement with skimage.feature.hog, the UoCTTI variant, gradients, shapes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data, img_as_float64
from skimage.feature import hog as skimage_hog

from preimage.models.hog import HOG

PHOTOS = ["chelsea", "coffee", "astronaut", "camera"]


def _photo(name: str, cell: int = 8, size: int = 256) -> np.ndarray:
    im = img_as_float64(getattr(data, name)())
    h = min(size, im.shape[0] // cell * cell)
    w = min(size, im.shape[1] // cell * cell)
    return im[:h, :w]


def _to_tensor(im: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(im))
    return t.permute(2, 0, 1)[None] if t.dim() == 3 else t[None, None]


def _skimage(im: np.ndarray, norm: str = "L2-Hys", orientations: int = 9, cell: int = 8, block: int = 2):
    return skimage_hog(im, orientations=orientations, pixels_per_cell=(cell, cell),
                       cells_per_block=(block, block), block_norm=norm, feature_vector=False,
                       channel_axis=-1 if im.ndim == 3 else None)


def _ours(im: np.ndarray, **kw) -> np.ndarray:
    """Our HOG rearranged to skimage's (n_blocks_row, n_blocks_col, b, b, O) layout."""
    hog = HOG(**kw)
    out = hog(_to_tensor(im))[0]
    b, o = hog.block_size, hog.orientations
    return out.permute(1, 2, 0).reshape(out.shape[1], out.shape[2], b, b, o).numpy()


def _break_channel_ties(im: np.ndarray) -> np.ndarray:
    # Pixels whose per-channel gradient magnitudes agree to ~1 ulp pick their channel by
    # rounding noise (np.hypot and torch.hypot differ in the last bit); a tiny per-channel gain
    # separates those near-ties without changing anything else.
    return im * np.array([1.0, 1.0 + 1e-6, 1.0 + 2e-6])


@pytest.mark.parametrize("name,norm", [(p, "L2-Hys") for p in PHOTOS]
                         + [("coffee", n) for n in ("L1", "L1-sqrt", "L2")])
def test_hard_mode_matches_skimage_exactly(name, norm):
    im = _photo(name, size=192)
    if im.ndim == 3:
        im = _break_channel_ties(im)
    ref = _skimage(im, norm)
    ours = _ours(im, soft=False, block_norm=norm)
    assert ours.shape == ref.shape
    # skimage accumulates cell sums in float32: agreement is to ~1e-7
    np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("cell,block,orientations", [(6, 3, 12), (4, 1, 6), (8, 2, 9)])
def test_hard_mode_matches_skimage_other_parameters(cell, block, orientations):
    im = img_as_float64(data.camera())[:150, :190]        # not a multiple of the cell size
    # With 12 bins, 45 and 135 degrees are bin edges, hit by quantized gradients with |g_row| = |g_col|
    # up to 1 ulp; there atan2's last bit (libm vs torch) decides the bin. A 1e-7 jitter moves those
    # angles ~1e-6 degrees off the edge so both sides bin them alike.
    im = im + 1e-7 * np.random.default_rng(0).random(im.shape)
    ref = _skimage(im, "L2-Hys", orientations, cell, block)
    ours = _ours(im, soft=False, cell_size=cell, block_size=block, orientations=orientations)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)


def test_hard_mode_raw_colour_photo_near_exact():
    # Without tie-breaking, only blocks touching a 1-ulp channel near-tie may differ.
    im = _photo("chelsea")
    diff = np.abs(_ours(im, soft=False) - _skimage(im))
    assert np.mean(diff < 1e-6) > 0.995


@pytest.mark.parametrize("name,min_corr,max_rel", [("chelsea", 0.96, 0.16), ("coffee", 0.95, 0.21),
                                                    ("astronaut", 0.95, 0.21), ("camera", 0.86, 0.35)])
def test_soft_default_close_to_skimage(name, min_corr, max_rel):
    """Soft (linear) orientation binning vs skimage's hard binning; the bounds are the measured
    values (module docstring) with a small margin."""
    im = _photo(name)
    ref = _skimage(im)
    ours = _ours(im)                                       # soft=True is the default
    corr = np.corrcoef(ours.ravel(), ref.ravel())[0, 1]
    rel = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
    assert corr >= min_corr and rel <= max_rel, (corr, rel)


# ---------------------------------------------------------------- UoCTTI reference (numpy loops)
def _uoctti_reference(im: np.ndarray, cell: int = 8, orientations: int = 9, eps: float = 1e-4 / 255 ** 2):
    """Felzenszwalb et al. (PAMI 2010) HOG written directly from the paper / DPM description:
    max-magnitude channel, nearest of 2*O directions, bilinear spatial votes, four 2x2-block
    normalisations (zero cells outside the image), truncation 0.2, 31-dim projection."""
    img = im if im.ndim == 3 else im[:, :, None]
    h, w, _ = img.shape
    hc, wc = h // cell, w // cell
    no = 2 * orientations
    dirs = np.array([[np.cos(2 * np.pi * k / no), np.sin(2 * np.pi * k / no)] for k in range(orientations)])
    hist = np.zeros((hc, wc, no))
    for y in range(1, h - 1):
        for x in range(1, w - 1):
            dx = img[y, x + 1] - img[y, x - 1]
            dy = img[y + 1, x] - img[y - 1, x]
            ch = int(np.argmax(np.hypot(dx, dy)))
            gx, gy = dx[ch], dy[ch]
            best, best_o = 0.0, 0
            for k in range(orientations):
                # first best direction wins; the 1e-12 keeps exact ties (vertical gradients sit
                # half-way between two directions) from being decided by sin/cos rounding
                dot = dirs[k, 0] * gx + dirs[k, 1] * gy
                if dot > best + 1e-12:
                    best, best_o = dot, k
                elif -dot > best + 1e-12:
                    best, best_o = -dot, k + orientations
            mag = np.hypot(gx, gy)
            yp, xp = (y + 0.5) / cell - 0.5, (x + 0.5) / cell - 0.5
            iy, ix = int(np.floor(yp)), int(np.floor(xp))
            vy0, vx0 = yp - iy, xp - ix
            for cy, wy in ((iy, 1 - vy0), (iy + 1, vy0)):
                for cx, wx in ((ix, 1 - vx0), (ix + 1, vx0)):
                    if 0 <= cy < hc and 0 <= cx < wc:
                        hist[cy, cx, best_o] += wy * wx * mag
    unsigned = hist[:, :, :orientations] + hist[:, :, orientations:]
    energy = np.pad((unsigned ** 2).sum(2), 1)
    feats = np.zeros((hc, wc, 3 * orientations + 4))
    for y in range(hc):
        for x in range(wc):
            norms = []
            for by in (0, 1):
                for bx in (0, 1):
                    e = energy[y + by:y + by + 2, x + bx:x + bx + 2].sum()
                    norms.append(1.0 / np.sqrt(e + eps))
            for k, n in enumerate(norms):
                hs = np.minimum(hist[y, x] * n, 0.2)
                hu = np.minimum(unsigned[y, x] * n, 0.2)
                feats[y, x, :no] += 0.5 * hs
                feats[y, x, no:no + orientations] += 0.5 * hu
                feats[y, x, no + orientations + k] = 0.2357 * hs.sum()
    return feats


def test_uoctti_shape_31():
    hog = HOG(variant="uoctti")
    x = torch.rand(2, 3, 64, 80, dtype=torch.float64)
    out = hog(x)
    assert out.shape == (2, 31, 8, 10) == (2, *hog.output_shape(64, 80))
    assert hog.cell_histograms(x).shape == (2, 18, 8, 10)


@pytest.mark.parametrize("name", ["coffee", "camera"])
def test_uoctti_hard_matches_reference(name):
    im = img_as_float64(getattr(data, name)())[100:148, 200:264]
    if im.ndim == 3:
        im = _break_channel_ties(im)
    ref = _uoctti_reference(im)
    ours = HOG(variant="uoctti", soft=False)(_to_tensor(im))[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-10, rtol=1e-9)


def test_uoctti_properties():
    im = _break_channel_ties(_photo("astronaut", size=64))
    x = _to_tensor(im)
    f = HOG(variant="uoctti")(x)[0]
    assert torch.all(f >= 0)
    # each truncated term is <= 0.2 and there are four normalisations
    assert f[:27].max() <= 0.5 * 4 * 0.2 + 1e-12 and f[27:].max() <= 0.2357 * 18 * 0.2 + 1e-12
    # invariance to contrast (up to eps) and to a brightness offset
    f2 = HOG(variant="uoctti", eps=0.0)(x * 0.5 + 0.2)[0]
    f3 = HOG(variant="uoctti", eps=0.0)(x)[0]
    torch.testing.assert_close(f2, f3, atol=1e-9, rtol=1e-7)
    # a horizontal intensity ramp has gradient angle 0: the insensitive bins are dominated by 0
    ramp = torch.linspace(0, 1, 64, dtype=torch.float64).repeat(64, 1)[None, None]
    g = HOG(variant="uoctti")(ramp)[0]
    assert torch.all(g[18:27, 2:-2, 2:-2].argmax(0) == 0)


# ------------------------------------------------------------------------ gradients and shapes
@pytest.mark.parametrize("variant", ["dalal-triggs", "uoctti"])
@pytest.mark.parametrize("soft", [True, False])
@pytest.mark.parametrize("norm", ["L2-Hys", "L1-sqrt"])
def test_gradients_finite(variant, soft, norm):
    hog = HOG(variant=variant, soft=soft, block_norm=norm)
    torch.manual_seed(0)
    for x in (torch.full((1, 3, 32, 40), 0.5), torch.zeros(1, 1, 32, 32), torch.rand(2, 3, 32, 40)):
        x = x.clone().requires_grad_(True)
        hog(x).sum().backward()
        assert torch.isfinite(x.grad).all()
    x = torch.rand(1, 3, 32, 40, requires_grad=True)
    hog(x).sum().backward()
    if soft:
        assert x.grad.abs().sum() > 0


def test_soft_gradient_matches_finite_differences():
    torch.manual_seed(1)
    x = torch.rand(1, 1, 12, 12, dtype=torch.float64, requires_grad=True)
    hog = HOG(cell_size=4, block_norm="L2")
    assert torch.autograd.gradcheck(lambda t: hog(t).square().sum(), (x,), eps=1e-7, atol=1e-5)


@pytest.mark.parametrize("variant", ["dalal-triggs", "uoctti"])
def test_batch_independence(variant):
    torch.manual_seed(2)
    x = torch.rand(3, 3, 40, 48)
    hog = HOG(variant=variant)
    batched = hog(x)
    for i in range(3):
        torch.testing.assert_close(batched[i:i + 1], hog(x[i:i + 1]), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("h,w", [(33, 47), (17, 16), (64, 71)])
@pytest.mark.parametrize("variant", ["dalal-triggs", "uoctti"])
def test_odd_sizes(h, w, variant):
    hog = HOG(variant=variant)
    out = hog(torch.rand(1, 3, h, w))
    assert tuple(out.shape[1:]) == hog.output_shape(h, w)
    assert torch.isfinite(out).all()


def test_too_small_raises():
    with pytest.raises(ValueError):
        HOG()(torch.rand(1, 3, 12, 40))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_device_follow_input(dtype):
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        for variant in ("dalal-triggs", "uoctti"):
            x = torch.rand(1, 3, 32, 32, dtype=dtype, device=dev)
            out = HOG(variant=variant).to(dev)(x)
            assert out.dtype == dtype and out.device.type == dev


def test_named_children_in_order():
    hog = HOG()
    assert [n for n, _ in hog.named_children()] == ["gradient", "orientation", "cells", "normalize"]
    x = torch.rand(1, 3, 32, 32)
    y = x
    for _, m in hog.named_children():
        y = m(y)
    torch.testing.assert_close(y, hog(x))
    assert len(list(hog.parameters())) == 0 and len(hog.state_dict()) == 0


def test_invalid_options():
    with pytest.raises(ValueError):
        HOG(variant="nope")
    with pytest.raises(ValueError):
        HOG(block_norm="L3")
