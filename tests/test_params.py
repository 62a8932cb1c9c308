"""Image parameterizations: Pixels (spaces, bounds, restore) and Fourier (valid range, seeding, shapes)."""
from __future__ import annotations

import pytest
import torch

from preimage.params import Fourier, Pixels


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
