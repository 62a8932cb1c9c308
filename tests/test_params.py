"""Image parameterizations: Pixels (spaces, bounds, restore), Fourier (valid range, seeding, shapes) and
Pyramid (exact start, coarse levels, projection)."""
from __future__ import annotations

import pytest
import torch

from preimage.params import DeepPrior, Fourier, Near, Pixels, Pyramid


def test_pixels_start_at_init_and_are_a_copy():
    init = torch.rand(2, 3, 8, 8)
    p = Pixels(init)
    assert torch.equal(p(), init) and p.space == "pixel"
    with torch.no_grad():
        p.x.add_(1)
    assert not torch.equal(p(), init)  # the caller's tensor is untouched
    assert [q.shape for q in p.parameters()] == [init.shape]


def test_pixels_bounds_clamp_at_start_and_after_project():
    p = Pixels(torch.tensor([-1.0, 0.5, 2.0]).view(1, 1, 1, 3), bounds=(0.0, 1.0))
    assert p().flatten().tolist() == [0.0, 0.5, 1.0]
    with torch.no_grad():
        p.x.mul_(5)
    p.project_()
    assert p().flatten().tolist() == [0.0, 1.0, 1.0]
    free = Pixels(torch.tensor([-1.0, 2.0]).view(1, 1, 1, 2))
    free.project_()
    assert free().flatten().tolist() == [-1.0, 2.0]


def test_near_keeps_pixels_within_the_radius_of_its_centre_and_in_bounds():
    centre = torch.tensor([[[[0.0, 0.5, 1.0]]]])
    p = Near(centre, 0.1)
    with torch.no_grad():
        p.x.copy_(torch.tensor([[[[-1.0, 0.9, 0.95]]]]))
    p.project_()
    assert torch.allclose(p(), torch.tensor([[[[0.0, 0.6, 0.95]]]]))  # the box [0, 1], then the radius
    assert torch.equal(p.centre, centre)
    with pytest.raises(ValueError):
        Near(centre, -0.1)


def test_pixels_space_and_set():
    p = Pixels(torch.zeros(1, 3, 4, 4), space="input")
    assert p.space == "input"
    p.set_(torch.ones(1, 3, 4, 4))
    assert torch.equal(p(), torch.ones(1, 3, 4, 4))
    with pytest.raises(ValueError, match="space"):
        Pixels(torch.zeros(1, 3, 4, 4), space="lab")


@pytest.mark.parametrize("shape", [(1, 3, 16, 16), (2, 3, 15, 22), (1, 3, 7, 32)])
@pytest.mark.parametrize("decorrelate", [True, False])
def test_fourier_output_is_in_unit_range_with_the_right_shape(shape, decorrelate):
    g = torch.Generator().manual_seed(0)
    f = Fourier(shape, sd=1.0, generator=g, decorrelate=decorrelate)  # large spectra: sigmoid saturates
    img = f()
    assert img.shape == shape and f.space == "pixel"
    assert img.min() >= 0 and img.max() <= 1
    assert torch.isfinite(img).all()


def test_fourier_starts_near_grey_and_is_seeded():
    a = Fourier((1, 3, 16, 16), generator=torch.Generator().manual_seed(5))()
    b = Fourier((1, 3, 16, 16), generator=torch.Generator().manual_seed(5))()
    c = Fourier((1, 3, 16, 16), generator=torch.Generator().manual_seed(6))()
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (a - 0.5).abs().max() < 0.25  # small default sd -> close to mid-grey


def test_fourier_gradient_reaches_the_spectrum():
    f = Fourier((1, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    f().sum().backward()
    assert f.spectrum.grad is not None and f.spectrum.grad.abs().sum() > 0
    assert [name for name, _ in f.named_parameters()] == ["spectrum"]


def test_fourier_favours_low_frequencies():
    # the 1/f scale: with a white spectrum, neighbouring pixels are strongly correlated
    f = Fourier((1, 3, 64, 64), sd=0.05, generator=torch.Generator().manual_seed(0), decorrelate=False)
    x = f._linear()[0]
    a, b = x[:, :, :-1].flatten(), x[:, :, 1:].flatten()
    corr = torch.corrcoef(torch.stack([a, b]))[0, 1]
    assert corr > 0.5


# -- Laplacian pyramid ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 3, 16, 16), (2, 3, 15, 22)])
@pytest.mark.parametrize("decorrelate", [False, True])
def test_pyramid_starts_exactly_at_init_with_one_level_per_octave(shape, decorrelate):
    init = torch.rand(shape)
    p = Pyramid(init, levels=3, decorrelate=decorrelate)
    assert torch.allclose(p(), init, atol=1e-6) and p.space == "pixel"
    h, w = shape[-2:]
    assert [tuple(q.shape[-2:]) for q in p.levels] == [(h, w), (h // 2, w // 2), (h // 4, w // 4)]
    # the coarsest level holds the image's coarse copy, the finer ones only what it misses
    coarse = p._mix(p._up(p.levels[-1]), p.color)
    assert torch.allclose(coarse.mean((-2, -1)), init.mean((-2, -1)), atol=0.02)
    assert p.levels[0].mean().abs() < 0.05


def test_pyramid_coarse_level_moves_whole_patches():
    p = Pyramid(torch.full((1, 3, 16, 16), 0.5), levels=3)
    with torch.no_grad():
        p.levels[2][..., 0, 0] += 0.2  # one value of the 4x4 grid
    d = p() - 0.5
    assert d[..., :4, :4].min() > 0.05  # a 4x4 patch (and then some, bilinearly) moves
    assert d[..., 12:, 12:].abs().max() < 1e-6  # the far corner does not


@pytest.mark.parametrize("decorrelate", [False, True])
def test_pyramid_projection_keeps_the_image_in_the_box_and_the_coarse_levels(decorrelate):
    p = Pyramid(torch.rand(1, 3, 8, 8), levels=2, bounds=(0.0, 1.0), decorrelate=decorrelate)
    with torch.no_grad():
        p.levels[1].add_(3.0)
    coarse = p.levels[1].detach().clone()
    before = p().detach()
    p.project_()
    assert torch.allclose(p(), before.clamp(0, 1), atol=1e-6)
    assert torch.equal(p.levels[1], coarse)


def test_pyramid_gradient_reaches_every_level():
    p = Pyramid(torch.rand(1, 3, 16, 16), levels=4)
    p().sum().backward()
    assert all(q.grad is not None and q.grad.abs().sum() > 0 for q in p.levels)
    with pytest.raises(ValueError, match="levels"):
        Pyramid(torch.rand(1, 3, 8, 8), levels=0)


def test_fourier_set_finds_the_spectrum_of_an_image():
    for shape, decorrelate in [((1, 3, 16, 16), True), ((2, 3, 15, 22), True), ((1, 1, 8, 9), False)]:
        f = Fourier(shape, generator=torch.Generator().manual_seed(0), decorrelate=decorrelate)
        x = torch.rand(shape, generator=torch.Generator().manual_seed(1)) * 0.9 + 0.05
        f.set_(x)
        assert torch.allclose(f(), x, atol=1e-5)


def test_decorrelated_pyramid_moves_brightness_more_than_hue():
    p = Pyramid(torch.full((1, 3, 8, 8), 0.5), levels=1, decorrelate=True)
    with torch.no_grad():
        p.levels[0][:, 0] += 0.1  # the first basis direction: grey
    d0 = (p() - 0.5)[0, :, 0, 0]
    with torch.no_grad():
        p.levels[0][:, 0] -= 0.1
        p.levels[0][:, 2] += 0.1  # the last: a colour contrast
    d2 = (p() - 0.5)[0, :, 0, 0]
    assert (d0 > 0).all() and d0.std() < 0.1 * d0.mean()  # all channels together
    assert d2.norm() < 0.3 * d0.norm()


def test_deep_prior_is_a_seeded_network_output_in_the_unit_range():
    def make(seed):
        return DeepPrior((2, 3, 40, 36), width=8, depth=3, generator=torch.Generator().manual_seed(seed))

    p = make(0)
    x = p()
    assert x.shape == (2, 3, 40, 36) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert not torch.equal(x[0], x[1])  # one network per image
    assert torch.equal(make(0)(), x) and not torch.equal(make(1)(), x)
    x.sum().backward()
    assert all(q.grad is not None for q in p.parameters())  # the weights are what moves
    with pytest.raises(NotImplementedError):
        p.set_(x.detach())


def test_deep_prior_fits_an_image_by_its_weights():
    target = torch.zeros(1, 3, 32, 32)
    target[..., 8:24, 8:24] = 1.0
    p = DeepPrior((1, 3, 32, 32), width=16, depth=2, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(p.parameters(), lr=0.01)
    start = float((p() - target).pow(2).mean())
    for _ in range(60):
        opt.zero_grad()
        loss = (p() - target).pow(2).mean()
        loss.backward()
        opt.step()
    assert float(loss) < 0.25 * start
