"""Differentiable dense SIFT: agreement with OpenCV's SIFT descriptor, gradients, shapes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import color, data, img_as_ubyte

from preimage.models.dsift import DenseSIFT

cv2 = pytest.importorskip("cv2")

#: OpenCV blurs the octave-0 base image by sqrt(sigma^2 - 0.5^2) with its default sigma 1.6
OPENCV_BLUR = math.sqrt(1.6 ** 2 - 0.5 ** 2)


def _gray(name: str, size: int = 192) -> np.ndarray:
    im = getattr(data, name)()
    g = im if im.ndim == 2 else img_as_ubyte(color.rgb2gray(im))
    return np.ascontiguousarray(g[:size, :size])


def _opencv_descriptors(gray: np.ndarray, xy: np.ndarray, bin_size: int) -> np.ndarray:
    # OpenCV's descriptor bin is SIFT_DESCR_SCL_FCTR * size/2 = 1.5 * size pixels, so a bin of
    # ``bin_size`` pixels needs size = 2 * bin_size / 3; angle 0 keeps the grid axis-aligned and
    # octave 0 makes OpenCV describe the (blurred) full-resolution image.
    kps = [cv2.KeyPoint(float(x), float(y), 2.0 * bin_size / 3.0, 0.0, 0.0, 0) for x, y in xy]
    out_kps, desc = cv2.SIFT_create().compute(gray, kps)
    assert len(out_kps) == len(kps)
    np.testing.assert_allclose([k.pt for k in out_kps], xy)
    return desc.astype(np.float64)


def _rowwise_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


@pytest.mark.parametrize("name", ["camera", "coffee", "chelsea"])
@pytest.mark.parametrize("bin_size,step", [(8, 8), (4, 6)])
def test_matches_opencv_sift(name, bin_size, step):
    gray = _gray(name)
    sift = DenseSIFT(bin_size=bin_size, step=step, smoothing=OPENCV_BLUR)
    ours = sift(torch.from_numpy(gray / 255.0)[None, None])[0]
    xy, size = sift.keypoints(*gray.shape)
    assert size == 4 * bin_size
    ours = ours.reshape(128, -1).T.numpy()
    ref = _opencv_descriptors(gray, xy, bin_size)
    # every keypoint counts (no flat-patch exclusion needed on these photos)
    corr = _rowwise_corr(ours, ref)
    assert corr.min() >= 0.95, np.sort(corr)[:5]
    assert np.percentile(corr, 5) >= 0.999
    assert np.median(corr) >= 0.9995
    # same scale too: OpenCV stores round(512 * unit vector); a few entries move more where
    # OpenCV's approximate atan2 puts a vote across an orientation bin edge
    err = np.abs(ours * 512 - ref)
    assert np.percentile(err, 99.9) <= 6.0 and err.mean() < 0.5


def test_without_smoothing_still_correlates():
    gray = _gray("coffee")
    sift = DenseSIFT()
    ours = sift(torch.from_numpy(gray / 255.0)[None, None])[0].reshape(128, -1).T.numpy()
    ref = _opencv_descriptors(gray, sift.keypoints(*gray.shape)[0], 8)
    assert np.median(_rowwise_corr(ours, ref)) > 0.8


def test_rgb_input_uses_bt601_gray():
    rgb = data.astronaut()[:96, :96]
    gray = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    sift = DenseSIFT()
    a = sift(torch.from_numpy(rgb / 255.0).permute(2, 0, 1)[None])
    b = sift(torch.from_numpy(gray / 255.0)[None, None])
    torch.testing.assert_close(a, b)


def test_shapes_and_keypoint_grid():
    sift = DenseSIFT(bin_size=8, step=5)
    h, w = 77, 101                                     # odd sizes
    out = sift(torch.rand(2, 1, h, w))
    k = sift.pooling.support
    assert k == 39
    assert out.shape == (2, 128, (h - k) // 5 + 1, (w - k) // 5 + 1) == (2, *sift.output_shape(h, w))
    xy, _ = sift.keypoints(h, w)
    assert xy.shape == (out.shape[2] * out.shape[3], 2)
    assert xy[0].tolist() == [19, 19] and xy[1].tolist() == [24, 19]
    assert xy[:, 0].max() + 19 <= w - 1 and xy[:, 1].max() + 19 <= h - 1
    for b in (3, 5):                                  # odd bin sizes: support 2*ceil(2.5b)-1
        s = DenseSIFT(bin_size=b)
        assert s.pooling.support == 2 * math.ceil(2.5 * b) - 1
        assert s(torch.rand(1, 1, 40, 41)).shape[1:] == s.output_shape(40, 41)


def test_unit_norm_and_clipping():
    torch.manual_seed(0)
    d = DenseSIFT()(torch.rand(1, 1, 64, 64, dtype=torch.float64))
    norms = d.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-6, rtol=0)
    assert d.max() <= 0.2 / 0.2 and d.min() >= 0


def test_gradients_finite():
    sift = DenseSIFT(smoothing=1.0)
    torch.manual_seed(0)
    for x in (torch.full((1, 3, 48, 48), 0.5), torch.zeros(1, 1, 48, 48), torch.rand(2, 3, 48, 48)):
        x = x.clone().requires_grad_(True)
        sift(x).sum().backward()
        assert torch.isfinite(x.grad).all()
    x = torch.rand(1, 1, 48, 48, requires_grad=True)
    sift(x).pow(2).sum().backward()
    assert x.grad.abs().sum() > 0


def test_gradient_matches_finite_differences():
    torch.manual_seed(1)
    sift = DenseSIFT(bin_size=2, step=3)
    x = torch.rand(1, 1, 11, 11, dtype=torch.float64, requires_grad=True)
    w = torch.randn(sift.output_shape(11, 11), dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: (sift(t)[0] * w).sum(), (x,), eps=1e-7, atol=1e-5)


def test_batch_independence():
    torch.manual_seed(2)
    x = torch.rand(3, 3, 50, 56)
    sift = DenseSIFT(step=4)
    batched = sift(x)
    for i in range(3):
        torch.testing.assert_close(batched[i:i + 1], sift(x[i:i + 1]), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_device_follow_input(dtype):
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        out = DenseSIFT(smoothing=1.0).to(dev)(torch.rand(1, 3, 48, 48, dtype=dtype, device=dev))
        assert out.dtype == dtype and out.device.type == dev


def test_named_children_in_order():
    sift = DenseSIFT()
    names = [n for n, _ in sift.named_children()]
    assert names == ["smooth", "gradient", "orientation", "pooling", "normalize"]
    x = torch.rand(1, 3, 48, 48)
    y = x
    for _, m in sift.named_children():
        y = m(y)
    torch.testing.assert_close(y, sift(x))
    assert len(sift.state_dict()) == 0


def test_too_small_raises():
    with pytest.raises(ValueError):
        DenseSIFT()(torch.rand(1, 1, 30, 60))
