"""The polyphase input gradient of strided convolutions equals autograd's, and is used only where valid."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from preimage.fastconv import eligible, fast_strided_convs, polyphase_input_grad, polyphase_kernel
from preimage.layers import FeatureExtractor


def autograd_input_grad(x, w, g, stride, padding):
    x = x.clone().requires_grad_(True)
    (F.conv2d(x, w, stride=stride, padding=padding) * g).sum().backward()
    return x.grad


@pytest.mark.parametrize("c_in,c_out,k,stride,padding,size", [
    (3, 64, (11, 11), (4, 4), (2, 2), (227, 227)),   # AlexNet conv1
    (3, 64, (7, 7), (2, 2), (3, 3), (64, 64)),       # ResNet stem
    (8, 16, (3, 3), (2, 2), (1, 1), (33, 32)),       # odd size: last row in no window
    (4, 6, (5, 3), (3, 2), (0, 1), (29, 31)),        # unequal strides, kernel and padding
    (2, 5, (4, 4), (3, 3), (0, 0), (20, 20)),        # kernel not a multiple of the stride
])
def test_polyphase_gradient_equals_autograd(c_in, c_out, k, stride, padding, size):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, c_in, *size, generator=gen)
    w = torch.randn(c_out, c_in, *k, generator=gen)
    g = torch.randn_like(F.conv2d(x, w, stride=stride, padding=padding))
    want = autograd_input_grad(x, w, g, stride, padding)
    got = polyphase_input_grad(g, polyphase_kernel(w, stride), size, stride, padding)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-4 * want.abs().max().item())


def test_eligibility():
    frozen = lambda m: m.requires_grad_(False)  # noqa: E731
    assert eligible(frozen(nn.Conv2d(3, 8, 11, stride=4, padding=2)))
    assert not eligible(nn.Conv2d(3, 8, 11, stride=4))                          # weights train
    assert not eligible(frozen(nn.Conv2d(3, 8, 3, stride=1)))                   # not strided
    assert not eligible(frozen(nn.Conv2d(3, 8, 1, stride=2)))                   # windows do not overlap
    assert not eligible(frozen(nn.Conv2d(8, 8, 3, stride=2, groups=8)))         # depthwise
    assert not eligible(frozen(nn.Conv2d(3, 8, 3, stride=2, dilation=2)))
    assert not eligible(frozen(nn.Conv2d(3, 8, 3, stride=2, padding=1, padding_mode="reflect")))


def test_patch_is_removed_even_when_the_forward_raises():
    conv = nn.Conv2d(3, 4, 5, stride=2).requires_grad_(False)
    with pytest.raises(RuntimeError):
        with fast_strided_convs([conv]):
            assert "forward" in conv.__dict__
            raise RuntimeError("boom")
    assert "forward" not in conv.__dict__


def test_feature_extractor_gradients_unchanged(alexnet):
    fx = FeatureExtractor(alexnet, ["conv2"])
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 227, 227, generator=gen)
    g = torch.randn(fx(x)["conv2"].shape, generator=gen)
    grads = []
    for strided in (fx._strided, []):
        fx._strided = strided
        xx = x.clone().requires_grad_(True)
        (fx(xx)["conv2"] * g).sum().backward()
        grads.append(xx.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-5 * grads[1].abs().max().item())
    assert "forward" not in alexnet.net.features[0].__dict__


def test_unbatched_input_takes_the_plain_path():
    conv = nn.Conv2d(2, 3, 5, stride=2).requires_grad_(False)
    x = torch.randn(2, 17, 17, requires_grad=True)
    with fast_strided_convs([conv]):
        conv(x).sum().backward()
    assert x.grad.shape == x.shape


def test_kernel_follows_weight_changes():
    conv = nn.Conv2d(2, 3, 5, stride=2).requires_grad_(False)
    x = torch.randn(1, 2, 17, 17, requires_grad=True)
    for _ in range(2):
        with fast_strided_convs([conv]):
            y = conv(x)
        x.grad = None
        y.sum().backward()
        assert torch.allclose(x.grad, autograd_input_grad(x.detach(), conv.weight, torch.ones_like(y), 2, (0, 0)), atol=1e-5)
        with torch.no_grad():
            conv.weight.mul_(-2.0)  # in place: the cached kernel must not be reused
    conv.weight = nn.Parameter(torch.randn_like(conv.weight), requires_grad=False)  # replaced
    with fast_strided_convs([conv]):
        y = conv(x)
    x.grad = None
    y.sum().backward()
    assert torch.allclose(x.grad, autograd_input_grad(x.detach(), conv.weight, torch.ones_like(y), 2, (0, 0)), atol=1e-5)
