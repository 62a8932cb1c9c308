"""Skip erosion and skip gradients on residual blocks (preimage.perturb), and their use in inversion."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import IMAGENET_MEAN, IMAGENET_STD
from preimage.errors import PreimageError
from preimage.models import Model
from preimage.perturb import ResidualPerturbation, residual_blocks
from preimage.tasks.invert import config_for, invert


class Block(nn.Module):
    """x + conv(relu(x)), marked as timm marks its residual blocks."""

    has_skip = True

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(torch.relu(x))


def _residual_model() -> Model:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Block(4), Block(4), nn.AvgPool2d(2), Block(4))
    return Model(name="resid", net=net, input_size=16, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 aliases={"stem": "0", "block1": "1", "block2": "2", "out": "4"})


def _grad(model: Model, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    model.net(x).pow(2).sum().backward()
    return x.grad


def test_residual_blocks_are_found_by_their_marks():
    model = _residual_model()
    assert residual_blocks(model.net) == [model.net[1], model.net[2], model.net[4]]


def test_skip_gradients_keep_the_forward_pass_and_scale_the_branch_gradient():
    model, x = _residual_model(), torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    clean_out, clean_grad = model.net(x), _grad(model, x)
    g = torch.Generator().manual_seed(0)
    with ResidualPerturbation(model, skip_grad=0.0, until=5) as p:
        p.transform(x, g)
        assert torch.allclose(model.net(x), clean_out)
        grad = _grad(model, x)
    assert not torch.allclose(grad, clean_grad) and torch.isfinite(grad).all()
    # γ = 0: the gradient flows through the shortcuts only, as if every branch were a constant
    net, xx = model.net, x.clone().requires_grad_(True)
    h = net[0](xx)
    h = h + net[1].conv(torch.relu(h)).detach()
    h = h + net[2].conv(torch.relu(h)).detach()
    h = net[3](h)
    h = h + net[4].conv(torch.relu(h)).detach()
    h.pow(2).sum().backward()
    assert torch.allclose(grad, xx.grad, atol=1e-5)


def test_skip_erosion_changes_the_output_per_draw_then_stops_and_unhooks():
    model, x = _residual_model(), torch.rand(1, 3, 16, 16)
    clean = model.net(x).detach()
    g = torch.Generator().manual_seed(0)
    with ResidualPerturbation(model, erosion=0.3, until=2) as p:
        p.transform(x, g)
        first = model.net(x).detach()
        p.transform(x, g)
        second = model.net(x).detach()
        assert all(0.7 <= f <= 1.3 for f in p.factors)
        p.transform(x, g)  # past `until`: the blocks run as they are
        assert p.factors is None and torch.allclose(model.net(x), clean)
    assert not torch.allclose(first, clean) and not torch.allclose(first, second)
    assert torch.allclose(model.net(x), clean) and not model.net[1]._forward_hooks


def test_perturbing_a_network_without_residual_blocks_is_one_clear_error(tiny_model):
    with pytest.raises(PreimageError, match="no residual blocks"):
        ResidualPerturbation(tiny_model, erosion=0.1)
    with pytest.raises(PreimageError, match="no residual blocks"):
        invert(tiny_model, torch.rand(1, 3, 16, 16), layers=["conv2"], steps=2, erosion=0.1)


@pytest.mark.parametrize("bad", [{"erosion": 1.0}, {"erosion": -0.1}, {"skip_grad": 1.5}, {"perturb_until": 2.0}])
def test_bad_perturbation_settings_are_refused(bad):
    with pytest.raises(PreimageError, match="erosion must be"):
        config_for("default", **bad)


def test_an_inversion_through_a_perturbed_network_reproduces_and_leaves_the_network_clean():
    model, photo = _residual_model(), torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    kw = dict(layers=["out"], steps=12, erosion=0.2, skip_grad=0.5, perturb_until=0.5, preset="fast")
    a, b = invert(model, photo, **kw), invert(model, photo, **kw)
    plain = invert(model, photo, layers=["out"], steps=12, preset="fast")
    assert torch.equal(a.image, b.image) and not torch.equal(a.image, plain.image)
    assert all(not blk._forward_hooks for blk in residual_blocks(model.net))
    # the metrics read the network as it is: the reported error is the clean network's
    with torch.no_grad():
        clean = model.net(model.normalize(a.image))
        target = model.net(model.normalize(photo))
    err = float((clean - target).norm() / target.norm())
    assert a.metrics[0]["feature_error"]["out"] == pytest.approx(err, rel=1e-4)


def _one_block_model() -> Model:
    """stem conv, then one residual block: the input gradient is linear in the branch's gradient scale."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Block(4))
    return Model(name="one", net=net, input_size=8, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def _perturbed_grad(model: Model, x: torch.Tensor, **kw) -> torch.Tensor:
    with ResidualPerturbation(model, until=1, **kw) as p:
        p.transform(x, torch.Generator().manual_seed(0))
        return _grad(model, x)


def test_skip_gradients_scale_the_branch_gradient_by_exactly_gamma():
    # one block: ∂L/∂h = u + γ J_fᵀ u (u: the upstream gradient, unchanged since the forward pass is),
    # so the input gradient at γ is the interpolation of the shortcut-only (γ = 0) and clean (γ = 1) ones
    model, x = _one_block_model(), torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    clean, shortcut = _grad(model, x), _perturbed_grad(model, x, skip_grad=0.0)
    for gamma in (0.25, 0.8):  # not 0.5: it would not tell γ from 1 − γ
        grad = _perturbed_grad(model, x, skip_grad=gamma)
        assert torch.allclose(grad, shortcut + gamma * (clean - shortcut), atol=1e-5)
    # several blocks: each branch's gradient scaled by γ, against the hand-written network
    model, gamma = _residual_model(), 0.25
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    grad = _perturbed_grad(model, x, skip_grad=gamma)
    net, xx = model.net, x.clone().requires_grad_(True)

    def scaled(block, h):  # value f(h), gradient γ ∂f/∂h
        f = block.conv(torch.relu(h))
        return gamma * f + (1 - gamma) * f.detach()

    h = net[0](xx)
    h = h + scaled(net[1], h)
    h = h + scaled(net[2], h)
    h = net[3](h)
    h = h + scaled(net[4], h)
    h.pow(2).sum().backward()
    assert torch.allclose(grad, xx.grad, atol=1e-5) and not torch.allclose(grad, _grad(model, x), atol=1e-3)


def test_skip_erosion_scales_each_shortcut_by_one_factor_per_block_and_step():
    model = _residual_model()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(4)).expand(2, -1, -1, -1)  # a batch of twins
    g = torch.Generator().manual_seed(7)
    drawn = []
    with ResidualPerturbation(model, erosion=0.3, until=3) as p:
        for _ in range(3):
            p.transform(x, g)
            lam = list(p.factors)
            assert len(lam) == len(p.blocks) == 3
            out = model.net(x).detach()
            # λ x + f(x) at every block, with the step's factor of that block (the same for the whole batch)
            net = model.net
            h = net[0](x)
            h = lam[0] * h + net[1].conv(torch.relu(h))
            h = lam[1] * h + net[2].conv(torch.relu(h))
            h = net[3](h)
            h = lam[2] * h + net[4].conv(torch.relu(h))
            assert torch.allclose(out, h, atol=1e-5) and torch.equal(out[0], out[1])
            assert torch.equal(model.net(x), out)  # a second pass in the same step: the same network
            drawn.append(lam)
    assert drawn[0] != drawn[1] != drawn[2]  # new factors every step ...
    assert drawn == [(1 + 0.3 * (2 * torch.rand(3, generator=gen) - 1)).tolist()  # ... drawn from the run's generator
                     for gen in [torch.Generator().manual_seed(7)] for _ in range(3)]


def test_skip_erosion_factors_fill_the_interval_around_one_and_reproduce_with_the_seed():
    model, x, r = _residual_model(), torch.zeros(1), 0.2

    def draws(seed):
        g, out = torch.Generator().manual_seed(seed), []
        with ResidualPerturbation(model, erosion=r, until=1000) as p:
            for _ in range(1000):
                p.transform(x, g)
                out += p.factors
        return torch.tensor(out)

    lam = draws(0)
    assert lam.min() >= 1 - r and lam.max() <= 1 + r
    assert lam.min() < 1 - 0.95 * r and lam.max() > 1 + 0.95 * r  # both sides of 1: U(1 − r, 1 + r)
    assert lam.mean().item() == pytest.approx(1.0, abs=0.01)
    assert lam.std().item() == pytest.approx(r / 3 ** 0.5, rel=0.05)  # the std of a uniform of width 2r
    assert torch.equal(draws(0), lam) and not torch.equal(draws(1), lam)


class _Spy(ResidualPerturbation):
    """Records, at every step, whether the perturbation is on."""

    log: list[bool] = []

    def transform(self, x, g):
        out = super().transform(x, g)
        _Spy.log.append(self.factors is not None)
        return out


def test_perturbation_is_on_for_the_first_perturb_until_share_of_the_steps(monkeypatch):
    from preimage.tasks import invert as inv_mod

    monkeypatch.setattr(inv_mod, "ResidualPerturbation", _Spy)
    model, photo = _residual_model(), torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    kw = dict(layers=["out"], steps=10, preset="fast")
    for until, on in ((0.3, 3), (None, 4), (1.0, 10), (0.0, 0)):  # None: the default, 0.4
        _Spy.log = []
        invert(model, photo, erosion=0.2, skip_grad=0.5, perturb_until=until, **kw)
        assert _Spy.log == [True] * on + [False] * (10 - on), until
    assert config_for("default").perturb_until == 0.4
    # off after its share: the rest of the run is the plain run's, from wherever the image was
    plain = invert(model, photo, **kw)
    none = invert(model, photo, erosion=0.2, skip_grad=0.5, perturb_until=0.0, **kw)
    assert torch.equal(none.image, plain.image)
