"""Objectives: per-image independence, the algebra of terms, and every term against hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch

from preimage.layers import LOGITS, FeatureExtractor
from preimage.objectives import (
    Objective, State, alpha_norm, channel, class_score, feature_loss, gram_loss, gram_matrix, l2, neuron,
    total_variation,
)


def _state(x: torch.Tensor, features: dict | None = None, step: int = 0) -> State:
    """A state whose image and input are both ``x``."""
    return State(image=x, input=x, features=features or {}, step=step)


def _script_tv(image: torch.Tensor, beta: float) -> torch.Tensor:
    """TV^beta of the original inversion script, written out with loops: forward differences, the first
    column of dx and the first row of dy are zero."""
    c, h, w = image.shape
    total = torch.zeros((), dtype=torch.float64)
    for k in range(c):
        for i in range(h):
            for j in range(w):
                dx = image[k, i, j] - image[k, i, j - 1] if j > 0 else 0.0
                dy = image[k, i - 1, j] - image[k, i, j] if i > 0 else 0.0
                total = total + (dx * dx + dy * dy) ** (beta / 2)
    return total


# -- hand-computed values ------------------------------------------------------------------------

def test_alpha_norm_hand_values():
    x = torch.tensor([[[[1.0, -2.0], [3.0, 0.0]]]])
    assert alpha_norm(2.0)(_state(x)).tolist() == [14.0]
    assert alpha_norm(6.0)(_state(x)).tolist() == [1 + 64 + 729]
    # bounded form: colour-vector norms, pixel 0 = (1, 2, 2) with norm 3, pixel 1 = 0
    y = torch.tensor([1.0, 2.0, 2.0, 0.0, 0.0, 0.0]).view(1, 2, 3).permute(0, 2, 1).reshape(1, 3, 1, 2)
    assert y[0, :, 0, 0].tolist() == [1.0, 2.0, 2.0]
    assert alpha_norm(2.0, bound=3.0)(_state(y)).item() == pytest.approx(9 / (1 * 2 * 9))
    assert alpha_norm(6.0, bound=3.0)(_state(y)).item() == pytest.approx(3 ** 6 / (2 * 3 ** 6))


def test_total_variation_hand_values():
    x = torch.tensor([[[[1.0, 2.0], [4.0, 8.0]]]])
    # dx = [[0, 1], [0, 4]], dy = [[0, 0], [-3, -6]] -> squares [[0, 1], [9, 52]]
    assert total_variation(2.0)(_state(x)).item() == pytest.approx(62.0)
    assert total_variation(1.0)(_state(x)).item() == pytest.approx(1 + 3 + math.sqrt(52), abs=1e-5)
    assert total_variation(2.0, scale=2.0)(_state(x)).item() == pytest.approx(62.0 / (2 * 2 * 4))


@pytest.mark.parametrize("beta", [2.0, 1.5, 1.0])
def test_total_variation_matches_the_original_script(beta):
    x = torch.rand(1, 3, 5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = total_variation(beta)(_state(x)).item()
    assert got == pytest.approx(_script_tv(x[0], beta).item(), rel=1e-5)


def test_total_variation_of_a_constant_image_is_zero_with_finite_gradient():
    x = torch.full((1, 3, 4, 4), 0.3, requires_grad=True)
    tv = total_variation(1.0)(_state(x))
    assert tv.item() < 1e-4
    tv.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_spaces():
    image = torch.tensor([[[[0.0, 1.0]]]]).expand(1, 3, 1, 2)
    s = State(image=image, input=image * 10)
    assert l2(space="pixel")(s).item() == pytest.approx(3.0)
    assert l2(space="input")(s).item() == pytest.approx(300.0)
    assert l2(space="pixel255")(s).item() == pytest.approx(6 * 127.5 ** 2)
    with pytest.raises(ValueError, match="unknown space"):
        l2(space="lab")(s)


def test_feature_loss_hand_values():
    target = torch.tensor([[1.0, 2.0]])
    s = _state(torch.zeros(1, 3, 2, 2), {"f": torch.tensor([[2.0, 2.0]])})
    assert feature_loss("f", target)(s).item() == pytest.approx(1 / 5)
    assert feature_loss("f", target, normalize=False)(s).item() == pytest.approx(1.0)
    assert feature_loss("f", target)(_state(s.image, {"f": target})).item() == 0


def test_gram_matrix_hand_values():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 2, 1)  # C = 2, H*W = 2
    expected = torch.tensor([[[5.0, 11.0], [11.0, 25.0]]])
    assert torch.equal(gram_matrix(f, "none"), expected)
    assert torch.equal(gram_matrix(f, "hw"), expected / 2)
    assert torch.equal(gram_matrix(f, "chw"), expected / 4)
    with pytest.raises(ValueError):
        gram_matrix(f, "frobenius")
    loss = gram_loss("f", expected / 4)
    assert loss(_state(f, {"f": f})).item() == 0
    assert loss(_state(f, {"f": 2 * f})).item() == pytest.approx(((expected - expected / 4) ** 2).sum().item())


def test_class_score_is_minus_the_logit():
    logits = torch.tensor([[1.0, 5.0, 3.0], [7.0, -2.0, 0.5]])
    s = _state(torch.zeros(2, 3, 2, 2), {LOGITS: logits})
    assert class_score(1)(s).tolist() == [-5.0, 2.0]
    assert class_score([2, 0])(s).tolist() == [-3.0, -7.0]


# -- algebra -------------------------------------------------------------------------------------

def test_algebra_of_terms():
    x = torch.tensor([[[[1.0, -2.0], [3.0, 0.0]]]])
    s = _state(x)
    a, b = l2(name="a"), alpha_norm(4.0, name="b")
    va, vb = a(s).item(), b(s).item()
    obj = a + 2 * b
    assert obj.names == ["a", "b"]
    assert obj.weights() == {"a": 1.0, "b": 2.0}
    assert obj(s).item() == pytest.approx(va + 2 * vb)
    assert {k: v.item() for k, v in obj.terms(s).items()} == pytest.approx({"a": va, "b": 2 * vb})
    assert (a - b)(s).item() == pytest.approx(va - vb)
    assert (-a)(s).item() == pytest.approx(-va)
    assert (0.5 * (a + b) * 4)(s).item() == pytest.approx(2 * (va + vb))
    assert repr(a + 2 * b) == "1*a + 2*b"
    # a term used twice keeps both values under distinct names
    assert list((a + a).terms(s)) == ["a", "a#2"]
    assert (a + a)(s).item() == pytest.approx(2 * va)
    with pytest.raises(TypeError):
        a + 1.0
    with pytest.raises(TypeError):
        a * a


def test_layers_are_the_union_in_order():
    t = torch.zeros(1, 4)
    obj = feature_loss("conv2", t) + 0.1 * feature_loss("conv1", t) + class_score(3) + feature_loss("conv2", t) + l2()
    assert obj.layers == ["conv2", "conv1", LOGITS]


# -- per-image independence ------------------------------------------------------------------------

def test_every_term_gives_image_i_the_loss_it_has_alone(tiny_model):
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(3, 3, 16, 16, generator=g)
    ref = torch.rand(1, 3, 16, 16, generator=g)
    fx = FeatureExtractor(tiny_model, ["conv1", "conv2", LOGITS])
    target = fx(tiny_model.normalize(ref))
    obj = (feature_loss("conv2", target["conv2"]) + 0.5 * gram_loss("conv1", gram_matrix(target["conv1"]))
           + class_score(4) + 1e-3 * alpha_norm(6.0) + 1e-2 * total_variation(1.5)
           + alpha_norm(2.0, space="pixel", bound=1.0) + total_variation(2.0, space="pixel255", scale=10.0)
           + l2(space="pixel"))

    def state(p: torch.Tensor) -> State:
        x = tiny_model.normalize(p)
        return State(image=p, input=x, features=fx(x))

    together = obj(state(pixels))
    assert together.shape == (3,)
    for i in range(3):
        alone = obj(state(pixels[i:i + 1]))
        assert alone.shape == (1,)
        assert alone.item() == pytest.approx(together[i].item(), rel=1e-5)
    per_term = obj.terms(state(pixels))
    assert all(v.shape == (3,) for v in per_term.values())


def test_objective_with_a_target_per_image():
    targets = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    feats = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    loss = feature_loss("f", targets)(_state(torch.zeros(2, 3, 2, 2), {"f": feats}))
    assert loss.tolist() == [1.0, 0.0]


def test_objective_from_a_plain_function():
    obj = Objective(lambda s: s.image.sum((1, 2, 3)), name="sum")
    assert obj(_state(torch.ones(2, 3, 2, 2))).tolist() == [12.0, 12.0]
    assert obj.layers == []


# -- channel and neuron objectives -------------------------------------------------------------------

def test_channel_is_the_negated_spatial_mean_of_one_channel_per_image():
    f = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    s = _state(torch.zeros(2, 3, 4, 4), {"b": f})
    assert channel("b", 1)(s).tolist() == [-f[0, 1].mean().item(), -f[1, 1].mean().item()]
    assert channel("b", [2, 0])(s).tolist() == [-f[0, 2].mean().item(), -f[1, 0].mean().item()]


def test_channel_reads_token_layers_by_their_last_axis():
    tokens = torch.randn(2, 5, 4)  # (B, N, C)
    s = _state(torch.zeros(2, 3, 4, 4), {"t": tokens})
    assert torch.allclose(channel("t", 3)(s), -tokens[:, :, 3].mean(1))


def test_neuron_reads_one_position_the_centre_by_default():
    f = torch.randn(1, 2, 5, 6)
    s = _state(torch.zeros(1, 3, 4, 4), {"b": f})
    assert neuron("b", 1)(s).item() == -f[0, 1, 2, 3].item()
    assert neuron("b", 0, at=(4, 1))(s).item() == -f[0, 0, 4, 1].item()


def test_channel_averages_augmented_copies_back_to_one_value_per_image():
    f = torch.randn(4, 3, 2, 2)  # 2 copies x 2 images, copy-major
    s = _state(torch.zeros(2, 3, 4, 4), {"b": f})
    got = channel("b", [0, 2])(s)
    want = -torch.stack([(f[0, 0].mean() + f[2, 0].mean()) / 2, (f[1, 2].mean() + f[3, 2].mean()) / 2])
    assert torch.allclose(got, want)


def test_chroma_tv_weighs_colour_edges_apart_from_luminance_edges():
    from preimage.objectives import total_variation

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8, generator=g)
    plain = total_variation(2.0)(_state(x))
    assert torch.allclose(total_variation(2.0, chroma=1.0 + 1e-9)(_state(x)), plain, rtol=1e-5)  # orthonormal basis
    grey = x.mean(1, keepdim=True).expand(-1, 3, -1, -1)  # luminance only: no colour edge
    assert torch.allclose(total_variation(2.0, chroma=16.0)(_state(grey)), total_variation(2.0)(_state(grey)),
                          rtol=1e-5)
    hue = torch.zeros(1, 3, 8, 8)
    hue[:, 0, :, 4:] = 0.5  # red on the right ...
    hue[:, 2, :, 4:] = -0.5  # ... blue taken away: a colour edge of no luminance
    assert float(total_variation(2.0, chroma=0.0)(_state(hue))) == pytest.approx(0.0, abs=1e-10)
    assert float(total_variation(2.0, chroma=4.0)(_state(hue))) == pytest.approx(4 * float(total_variation(2.0)(_state(hue))))


def test_saturation_prior_is_the_distance_from_grey():
    from preimage.objectives import saturation

    red = torch.zeros(1, 3, 4, 4)
    red[:, 0] = 1.0  # every pixel (1, 0, 0): grey 1/3, squared distance 4/9 + 1/9 + 1/9
    assert float(saturation()(_state(red))) == pytest.approx(2 / 3)
    grey = torch.rand(2, 1, 4, 4).expand(-1, 3, -1, -1)
    assert torch.allclose(saturation()(_state(grey)), torch.zeros(2))
    assert torch.allclose(saturation()(_state(torch.rand(2, 1, 4, 4))), torch.zeros(2))  # no colour to judge
    x = torch.rand(1, 3, 4, 4, requires_grad=True)
    saturation()(_state(x)).sum().backward()
    step = x.detach() - 0.1 * x.grad  # a gradient step moves every pixel towards its grey
    assert float(saturation()(_state(step))) < float(saturation()(_state(x.detach())))
    assert torch.allclose(step.mean(1), x.detach().mean(1), atol=1e-6)  # ... and keeps its luminance
