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
