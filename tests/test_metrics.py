"""Metrics: PSNR and SSIM (against scikit-image), TV and TV ratio, normalized feature error."""
from __future__ import annotations

import math

import pytest
import torch

from preimage.images import load_tensor
from preimage.metrics import feature_error, psnr, shift, ssim, tv, tv_ratio


def test_psnr_known_values():
    zeros = torch.zeros(3, 3, 8, 8)
    other = torch.stack([torch.full((3, 8, 8), v) for v in (0.5, 0.1, 1.0)])
    got = psnr(zeros, other)
    assert got.shape == (3,)
    assert got.tolist() == pytest.approx([20 * math.log10(2), 20.0, 0.0], abs=1e-4)


def test_psnr_of_identical_images_is_large():
    x = torch.rand(2, 3, 8, 8)
    assert (psnr(x, x) >= 100).all()


def test_psnr_clamps_to_unit_range():
    assert psnr(torch.full((1, 3, 4, 4), 2.0), torch.ones(1, 3, 4, 4)).item() >= 100


def test_ssim_of_an_image_with_itself_is_one():
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    assert ssim(x, x).tolist() == pytest.approx([1.0, 1.0], abs=1e-6)


@pytest.mark.parametrize("noise", [0.02, 0.1, 0.3])
def test_ssim_matches_scikit_image(noise):
    from skimage.metrics import structural_similarity

    x = load_tensor("sample:chelsea", 48)
    y = (x + noise * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    ours = ssim(x, y).item()
    a = x[0].permute(1, 2, 0).double().numpy()
    b = y[0].permute(1, 2, 0).double().numpy()
    ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                data_range=1.0, channel_axis=-1)
    assert ours == pytest.approx(ref, abs=1e-4)


def test_ssim_orders_images_by_degradation():
    x = load_tensor("sample:coffee", 32)
    g = torch.Generator().manual_seed(0)
    scores = [ssim(x, (x + s * torch.randn(x.shape, generator=g)).clamp(0, 1)).item() for s in (0.01, 0.1, 0.5)]
    assert scores[0] > scores[1] > scores[2]


def test_ssim_of_an_image_thinner_than_the_window_uses_a_window_that_fits():
    # an in-memory 10 x 400 image used to fail inside conv2d (kernel 11 larger than the input)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 10, 400, generator=g)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)
    noisy = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert 0 < ssim(x, noisy).item() < 1
    assert ssim(torch.rand(1, 3, 4, 4, generator=g), torch.rand(1, 3, 4, 4, generator=g)).isfinite().all()


def test_tv_hand_value():
    x = torch.tensor([[0.0, 3.0], [4.0, 0.0]]).view(1, 1, 2, 2)
    assert tv(x).item() == pytest.approx(5.0)  # sqrt(3² + 4²) at the single interior pixel


def test_tv_ratio_of_two_flat_images_is_one():
    flat = torch.full((2, 3, 8, 8), 0.5)
    assert tv_ratio(flat, flat).tolist() == [1.0, 1.0]
    assert tv_ratio(flat, torch.rand(2, 3, 8, 8)).tolist() == [0.0, 0.0]


def test_tv_ratio_of_an_image_to_itself_is_one():
    x = torch.rand(2, 3, 16, 16)
    assert tv_ratio(x, x).tolist() == pytest.approx([1.0, 1.0])
    smooth = x.mean(dim=(2, 3), keepdim=True).expand_as(x) * 0.5 + x * 0.5
    assert (tv_ratio(smooth, x) < 1).all()


def test_shift_moves_the_content_right_and_down_and_reflects_the_border():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    moved = shift(x, 1)
    assert torch.equal(moved[..., 1:, 1:], x[..., :-1, :-1])  # the content, one pixel on
    assert moved[0, 0, 0].tolist() == [5.0, 4.0, 5.0, 6.0] and moved[0, 0, :, 0].tolist() == [5.0, 1.0, 5.0, 9.0]
    assert torch.equal(shift(x, 0), x) and shift(torch.rand(2, 3, 8, 8), 2).shape == (2, 3, 8, 8)


def test_feature_error():
    target = torch.tensor([[3.0, 4.0]])
    feats = torch.tensor([[3.0, 4.0], [0.0, 0.0], [6.0, 8.0]])
    assert feature_error(feats, target).tolist() == pytest.approx([0.0, 1.0, 1.0])
    assert feature_error(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)).item() == 0



class _ColourJudge:
    """A stand-in classifier: its logits are the mean of each colour channel (class 0 red, 1 green,
    2 blue), at a fixed input size; it records the sizes it was shown."""

    input_size = 12

    def __init__(self):
        self.seen = []

    def __call__(self, x):
        self.seen.append(tuple(x.shape[-2:]))
        return 10 * x.mean(dim=(2, 3))


def _solid(*rgbs):
    return torch.stack([torch.tensor(c, dtype=torch.float32).view(3, 1, 1).expand(3, 20, 20) for c in rgbs])


def test_judge_agrees_when_it_gives_the_reconstruction_the_originals_class():
    from preimage.metrics import judge_recognition

    judge = _ColourJudge()
    refs = _solid((0.9, 0.1, 0.2), (0.1, 0.2, 0.9))      # red, blue
    recs = _solid((0.8, 0.3, 0.1), (0.2, 0.9, 0.5))      # red (agrees), green then blue (rank 2)
    out = judge_recognition(judge, recs, refs)
    assert out["agrees"].tolist() == [True, False]
    assert out["rank"].tolist() == [1, 2]
    assert out["original_class"].tolist() == [0, 2] and out["class"].tolist() == [0, 1]
    p = (10 * torch.tensor([0.2, 0.9, 0.5])).softmax(0)[2].item()
    assert out["p"][1].item() == pytest.approx(p, rel=1e-5)
    assert judge.seen == [(12, 12), (12, 12)]  # both batches resized to the judge's input size


def test_judge_rank_is_last_for_the_least_likely_class():
    from preimage.metrics import judge_recognition

    out = judge_recognition(_ColourJudge(), _solid((0.1, 0.5, 0.9)), _solid((0.9, 0.5, 0.1)))
    assert out["rank"].tolist() == [3] and not out["agrees"].item()
