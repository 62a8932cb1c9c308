"""preimage.gan: the notes' losses against values computed by hand, the two architectures, the
offline score (FD-LeNet / KID-LeNet) against the closed form."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from preimage.gan import losses as L
from preimage.errors import PreimageError
from preimage.gan.nets import build_pair, init_weights, sample_noise
from preimage.gan.task import gan_config
from preimage.gan.score import LeNet, class_histogram, frechet_kid


def test_vanilla_discriminator_loss_matches_the_hand_computed_bce():
    # real logits (0, 2): -log σ(0) = log 2 = 0.693147, -log σ(2) = log(1 + e^-2) = 0.126928 -> mean 0.410038
    # fake logits (0, -1): -log(1 - σ(0)) = 0.693147, -log(1 - σ(-1)) = log(1 + e^-1) = 0.313262 -> mean 0.503204
    loss = L.discriminator_loss(torch.tensor([0.0, 2.0]), torch.tensor([0.0, -1.0]))
    assert loss.item() == pytest.approx(0.913242, abs=1e-6)


def test_vanilla_generator_loss_is_the_non_saturating_one():
    # -log σ(0) = 0.693147, -log σ(-1) = log(1 + e) = 1.313262 -> mean 1.003204
    assert L.generator_loss(torch.tensor([0.0, -1.0])).item() == pytest.approx(1.003204, abs=1e-6)


def test_vanilla_losses_stay_finite_for_huge_logits():
    big = torch.tensor([1e4, -1e4])
    assert math.isfinite(L.discriminator_loss(big, big).item()) and math.isfinite(L.generator_loss(big).item())
    assert L.generator_loss(torch.tensor([-1e4])).item() == pytest.approx(1e4)


def test_least_squares_losses_match_the_hand_computed_values():
    # D: ½ mean((1-1)², (0.5-1)²) + ½ mean(0², 1²) = ½·0.125 + ½·0.5 = 0.3125
    assert L.ls_discriminator_loss(torch.tensor([1.0, 0.5]), torch.tensor([0.0, 1.0])).item() == pytest.approx(0.3125)
    # G: ½ mean((0-1)², (1-1)²) = 0.25
    assert L.ls_generator_loss(torch.tensor([0.0, 1.0])).item() == pytest.approx(0.25)


def test_losses_are_named_as_the_cli_takes_them():
    assert L.LOSSES["vanilla"] == (L.discriminator_loss, L.generator_loss)
    assert L.LOSSES["ls"] == (L.ls_discriminator_loss, L.ls_generator_loss)


def test_noise_is_uniform_in_minus_one_one_and_seeded():
    z = sample_noise(2000, 96, torch.Generator().manual_seed(0))
    assert z.shape == (2000, 96) and z.min() >= -1 and z.max() <= 1 and abs(z.mean().item()) < 0.01
    assert torch.equal(z, sample_noise(2000, 96, torch.Generator().manual_seed(0)))


def _layers(m: nn.Module) -> list[str]:
    return [type(x).__name__ for x in m.modules() if not isinstance(x, (nn.Sequential,)) and x is not m
            and type(x).__name__ != "_Scores"]


def test_the_dc_pair_at_28_px_is_the_one_the_notes_print():
    G, D = build_pair("dc")
    assert _layers(D) == ["Conv2d", "LeakyReLU", "MaxPool2d", "Conv2d", "LeakyReLU", "MaxPool2d", "Flatten",
                          "Linear", "LeakyReLU", "Linear"]
    linear = [m for m in D.modules() if isinstance(m, nn.Linear)]
    assert (linear[0].in_features, linear[0].out_features) == (1024, 1024)
    assert _layers(G) == ["Linear", "ReLU", "BatchNorm1d", "Linear", "ReLU", "BatchNorm1d", "Unflatten",
                          "ConvTranspose2d", "ReLU", "BatchNorm2d", "ConvTranspose2d", "Tanh"]
    assert [m.out_features for m in G.modules() if isinstance(m, nn.Linear)] == [1024, 6272]


def test_the_fc_pair_has_the_notes_widths():
    G, D = build_pair("fc")
    assert [(m.in_features, m.out_features) for m in G.modules() if isinstance(m, nn.Linear)] == [
        (96, 1024), (1024, 1024), (1024, 784)]
    assert [(m.in_features, m.out_features) for m in D.modules() if isinstance(m, nn.Linear)] == [
        (784, 256), (256, 256), (256, 1)]
    assert all(m.negative_slope == 0.01 for m in D.modules() if isinstance(m, nn.LeakyReLU))


@pytest.mark.parametrize("arch", ["fc", "dc"])
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32), (3, 64), (1, 64)])
def test_both_pairs_adapt_to_channels_and_size(arch, channels, size):
    G, D = build_pair(arch, channels=channels, size=size, noise_dim=16)
    x = G(sample_noise(3, 16))
    assert x.shape == (3, channels, size, size) and x.abs().max() <= 1
    assert D(x).shape == (3,)


def test_the_normal_initialization_is_radford_et_als():
    torch.manual_seed(0)
    G, D = build_pair("dc")
    init_weights(G, "normal"), init_weights(D, "normal")
    big = G[3].weight  # Linear 1024 -> 6272: 6.4 million draws
    assert big.mean().item() == pytest.approx(0.0, abs=1e-4) and big.std().item() == pytest.approx(0.02, rel=1e-3)
    bn = G[5]  # BatchNorm1d(6272)
    assert bn.weight.mean().item() == pytest.approx(1.0, abs=2e-3) and bn.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert all(m.bias.abs().max() == 0 for m in [*G.modules(), *D.modules()] if getattr(m, "bias", None) is not None)
    conv = D.body[0].weight
    assert conv.std().item() == pytest.approx(0.02, rel=0.15)


def test_the_torch_initialization_leaves_the_layer_defaults():
    torch.manual_seed(0)
    G, _ = build_pair("fc")
    before = [p.clone() for p in G.parameters()]
    init_weights(G, "torch")
    assert all(torch.equal(a, b) for a, b in zip(before, G.parameters()))


def test_the_presets_carry_their_papers_settings():
    assert (gan_config("cs231n").lr, gan_config("cs231n").init) == (1e-3, "torch")
    assert (gan_config("dcgan").lr, gan_config("dcgan").init, gan_config("dcgan").beta1) == (2e-4, "normal", 0.5)
    assert gan_config("dcgan", lr=1e-3).lr == 1e-3
    with pytest.raises(PreimageError, match="unknown initialization 'xavier'"):
        gan_config("cs231n", init="xavier")
    with pytest.raises(PreimageError, match="unknown GAN preset"):
        gan_config("radford")
    for kw, hint in ((dict(preset="dcgn"), "'dcgan'"), (dict(loss="lsq"), "'ls'"), (dict(arch="dcc"), "'dc'"),
                     (dict(init="norml"), "'normal'")):
        with pytest.raises(PreimageError, match=f"did you mean {hint}"):
            gan_config(**kw)


def test_an_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="unknown architecture 'mlp'"):
        build_pair("mlp")


def _closed_form_fd(a: np.ndarray, b: np.ndarray) -> float:
    import scipy.linalg

    m1, m2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def _poly_mmd(a: np.ndarray, b: np.ndarray) -> float:
    d = a.shape[1]
    k = lambda x, y: (x @ y.T / d + 1) ** 3  # noqa: E731
    m = len(a)
    kxx, kyy, kxy = k(a, a), k(b, b), k(a, b)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2 * kxy.mean())


@pytest.mark.filterwarnings("ignore:Matrix is singular")
def test_fd_and_kid_on_lenet_features_match_the_closed_forms():
    torch.manual_seed(0)
    net = LeNet()
    a, b = torch.rand(200, 1, 28, 28), torch.rand(200, 1, 28, 28) ** 2
    got = frechet_kid(net, a, b, kid_subsets=3, kid_subset_size=200)
    with torch.no_grad():
        fa, fb = net.features(a).double().numpy(), net.features(b).double().numpy()
    assert got["fd"] == pytest.approx(_closed_form_fd(fa, fb), rel=1e-4)
    assert got["kid"] == pytest.approx(_poly_mmd(fa, fb), rel=1e-4)  # one subset = the whole set
    same = frechet_kid(net, a, a, kid_subsets=3, kid_subset_size=100)
    assert abs(same["fd"]) < 1e-6 and got["fd"] > 100 * abs(same["fd"]) + 1e-3


def test_fd_grows_with_the_distance_between_the_sets():
    torch.manual_seed(0)
    net = LeNet()
    a = torch.rand(200, 1, 28, 28)
    near = frechet_kid(net, a, (a + 0.05).clamp(0, 1), kid_subsets=2, kid_subset_size=50)["fd"]
    far = frechet_kid(net, a, (a + 0.3).clamp(0, 1), kid_subsets=2, kid_subset_size=50)["fd"]
    assert 0 < near < far


def test_the_class_histogram_is_a_distribution_over_the_predictions():
    torch.manual_seed(0)
    net = LeNet()
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.arange(10.0))  # every image is class 9
    hist = class_histogram(net, torch.rand(7, 1, 28, 28))
    assert hist == [0.0] * 9 + [1.0]


def test_gan_score_stays_the_function_after_its_submodules_load():
    # `preimage.gan.score` is also a submodule; importing it (as `gan.train_classifier` and the
    # scoring code do) must not replace the package's `score` function with the module.
    import inspect

    import preimage.gan.evaluate  # noqa: F401  (imports .score)
    import preimage.gan.score  # noqa: F401
    from preimage import gan

    assert inspect.isfunction(gan.score) and gan.score.__module__ == "preimage.gan"
    assert callable(gan.score)
