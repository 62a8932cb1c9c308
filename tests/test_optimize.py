"""The one optimization loop: it reduces objectives, records every term, and ends cleanly — done,
stopped by a callback, diverged (keeping the last finite image) or interrupted — reproducibly."""
from __future__ import annotations

import pytest
import torch

from preimage.errors import PreimageError
from preimage.layers import FeatureExtractor
from preimage.objectives import Objective, class_score, feature_loss, l2, total_variation
from preimage.optimize import forward_state, optimize, step_schedule
from preimage.params import Fourier, Pixels
from preimage.transforms import jitter, random_scale


def _noise(batch: int = 1, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_loop_reduces_a_feature_objective(tiny_model):
    target = FeatureExtractor(tiny_model, ["conv2"])(tiny_model.normalize(_noise(seed=1)))["conv2"]
    obj = feature_loss("conv2", target) + 1e-4 * total_variation(2.0)
    res = optimize(Pixels(_noise(seed=2)), obj, tiny_model, steps=40, lr=0.05)
    assert res.status == "done" and res.ok and res.steps == 40 and len(res.history) == 40
    first, last = res.history[0], res.history[-1]
    assert set(first) == {"step", "loss", "rec[conv2]", "tv"}
    assert last["rec[conv2]"] < 0.5 * first["rec[conv2]"]
    assert last["loss"] < first["loss"]
    assert len(res.per_image_loss) == 1 and res.seconds >= 0


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "lbfgs"])
def test_each_optimizer_reduces_l2(tiny_model, optimizer):
    lr = {"sgd": 0.1, "adam": 0.05, "lbfgs": 0.5}[optimizer]
    res = optimize(Pixels(_noise()), l2(space="pixel"), tiny_model, steps=10, optimizer=optimizer, lr=lr)
    assert res.status == "done"
    assert res.history[-1]["loss"] < 0.5 * res.history[0]["loss"]


def test_batch_images_are_optimized_independently(tiny_model):
    target = FeatureExtractor(tiny_model, ["conv2"])(tiny_model.normalize(_noise(seed=1)))["conv2"]
    obj = feature_loss("conv2", target) + 1e-3 * total_variation(2.0)
    init = _noise(batch=2, seed=3)
    both = optimize(Pixels(init), obj, tiny_model, steps=5, lr=0.05)
    for i in range(2):
        alone = optimize(Pixels(init[i:i + 1]), obj, tiny_model, steps=5, lr=0.05)
        assert torch.allclose(both.image[i:i + 1], alone.image, atol=1e-5)
        assert both.per_image_loss[i] == pytest.approx(alone.per_image_loss[0], rel=1e-4)


def test_nan_at_step_k_diverges_and_keeps_the_last_finite_image(tiny_model):
    def fn(s):
        loss = s.image.pow(2).sum((1, 2, 3))
        return loss * float("nan") if s.step == 4 else loss

    res = optimize(Pixels(_noise()), Objective(fn, "nan_at_4"), tiny_model, steps=10, lr=0.01)
    assert res.status == "diverged" and not res.ok
    assert "step 4" in res.message
    assert res.steps == 3 and len(res.history) == 3
    assert torch.isfinite(res.image).all()
    # the image after step 3 is the one that comes back
    after3 = optimize(Pixels(_noise()), Objective(fn, "nan_at_4"), tiny_model, steps=3, lr=0.01).image
    assert torch.equal(res.image, after3)


def test_huge_sgd_step_diverges_with_a_finite_image(tiny_model):
    blow = Objective(lambda s: s.image.pow(4).sum((1, 2, 3)), "x4")
    res = optimize(Pixels(_noise()), blow, tiny_model, steps=50, optimizer="sgd", lr=1e4)
    assert res.status == "diverged"
    assert res.steps < 50
    assert torch.isfinite(res.image).all()


def test_callback_returning_true_stops(tiny_model):
    calls = []

    def cb(step):
        calls.append(step.step)
        assert step.terms.keys() == {"l2"} and step.loss == pytest.approx(step.terms["l2"])
        return step.step == 3

    res = optimize(Pixels(_noise()), l2(space="pixel"), tiny_model, steps=10, callbacks=[cb])
    assert res.status == "stopped" and res.ok
    assert res.steps == 3 and calls == [1, 2, 3]


@pytest.mark.parametrize("where", ["callback", "objective"])
def test_keyboard_interrupt_returns_interrupted_with_the_current_image(tiny_model, where):
    def fn(s):
        if where == "objective" and s.step == 3:
            raise KeyboardInterrupt
        return s.image.pow(2).sum((1, 2, 3))

    def cb(step):
        if where == "callback" and step.step == 3:
            raise KeyboardInterrupt
        return False

    res = optimize(Pixels(_noise()), Objective(fn, "sq"), tiny_model, steps=10, lr=0.05, callbacks=[cb])
    assert res.status == "interrupted" and not res.ok
    done = 3 if where == "callback" else 2
    assert res.steps == done
    expected = optimize(Pixels(_noise()), Objective(fn, "sq"), tiny_model, steps=done, lr=0.05).image
    assert torch.equal(res.image, expected)


def test_same_seed_gives_identical_results_and_another_seed_does_not(tiny_model):
    obj = class_score(3) + 0.1 * total_variation(2.0)  # logits keep their shape under random scaling

    def run(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        param = Fourier((1, 3, 16, 16), generator=g)
        return optimize(param, obj, tiny_model, steps=8, lr=0.05, generator=g,
                        transforms=[jitter(2), random_scale([0.9, 1.0, 1.1])]).image

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


def test_transforms_stop_after_transform_steps(tiny_model):
    seen = []

    def spy(x, _g):
        seen.append(1)
        return x

    optimize(Pixels(_noise()), class_score(3), tiny_model, steps=6, lr=0.05, transforms=[spy], transform_steps=4)
    assert len(seen) == 4
    a = optimize(Pixels(_noise()), class_score(3), tiny_model, steps=6, lr=0.05, transforms=[jitter(2)],
                 transform_steps=0, generator=torch.Generator().manual_seed(1)).image
    b = optimize(Pixels(_noise()), class_score(3), tiny_model, steps=6, lr=0.05).image
    assert torch.equal(a, b)  # no step transformed: the plain run


def test_pixels_bounds_are_respected_at_every_step(tiny_model):
    obj = Objective(lambda s: -s.image.pow(2).sum((1, 2, 3)), "grow")  # pushes values away from 0.5
    lows, highs = [], []

    def cb(step):
        x = step.param().detach()
        lows.append(float(x.min()))
        highs.append(float(x.max()))

    res = optimize(Pixels(_noise(), bounds=(0.0, 1.0)), obj, tiny_model, steps=5, optimizer="sgd", lr=10.0,
                   callbacks=[cb])
    assert min(lows) >= 0.0 and max(highs) <= 1.0
    assert res.image.min() >= 0 and res.image.max() <= 1
    assert max(highs) == 1.0  # the bound was reached, so the clamp was needed


def test_pixels_in_input_space_return_the_image_in_pixel_units(tiny_model):
    image = _noise()
    param = Pixels(tiny_model.normalize(image), space="input")
    res = optimize(param, l2(space="input"), tiny_model, steps=0)
    assert torch.allclose(res.image, image, atol=1e-6)
    state = forward_state(param, tiny_model, None)
    assert torch.allclose(state.image, image, atol=1e-6)
    assert torch.equal(state.input, param())


def test_zero_steps_and_negative_steps(tiny_model):
    init = _noise()
    res = optimize(Pixels(init), l2(), tiny_model, steps=0)
    assert res.status == "done" and res.steps == 0 and res.history == [] and torch.equal(res.image, init)
    with pytest.raises(ValueError):
        optimize(Pixels(init), l2(), tiny_model, steps=-1)


def test_schedule_grad_hook_and_frames(tiny_model):
    opts = []

    def factory(params):
        opts.append(torch.optim.SGD(params, lr=1.0))
        return opts[0]

    hooked = []
    res = optimize(Pixels(_noise()), l2(space="pixel"), tiny_model, steps=5, optimizer=factory,
                   schedule=step_schedule([2, 4], gamma=0.1), grad_hook=lambda p: hooked.append(p.x.grad.clone()),
                   frame_every=2)
    assert opts[0].param_groups[0]["lr"] == pytest.approx(0.01)
    assert len(hooked) == 5 and all(g.abs().sum() > 0 for g in hooked)
    assert len(res.frames) == 3  # steps 2, 4 and the last one
    assert torch.equal(res.frames[-1], res.image)


def test_grad_hook_can_rescale_the_step(tiny_model):
    def normalize(param):
        param.x.grad /= param.x.grad.abs().max()

    init = _noise()
    res = optimize(Pixels(init), l2(space="pixel"), tiny_model, steps=1, optimizer="sgd", lr=0.1,
                   momentum=0.0, grad_hook=normalize)
    assert (res.image - init).abs().max().item() == pytest.approx(0.1, rel=1e-5)


def test_the_network_weights_get_no_gradient(tiny_model):
    target = FeatureExtractor(tiny_model, ["conv2"])(tiny_model.normalize(_noise(seed=1)))["conv2"]
    optimize(Pixels(_noise()), feature_loss("conv2", target), tiny_model, steps=2)
    assert all(p.grad is None for p in tiny_model.net.parameters())


def test_progress_bar_goes_to_stderr_and_can_be_off(tiny_model, capsys):
    optimize(Pixels(_noise()), l2(space="pixel"), tiny_model, steps=2, progress=True, progress_desc="testing")
    captured = capsys.readouterr()
    assert captured.out == ""
    optimize(Pixels(_noise()), l2(space="pixel"), tiny_model, steps=2, progress=False)
    assert capsys.readouterr() == ("", "")


def test_random_affine_keeps_the_size_is_seeded_and_is_the_identity_when_off():
    from preimage.transforms import random_affine

    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    t = random_affine(0.2, 10)
    a, b = t(x, torch.Generator().manual_seed(4)), t(x, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.allclose(a, x, atol=1e-3)
    assert torch.equal(random_affine(0, 0)(x, torch.Generator()), x)
    grad = torch.rand(1, 3, 8, 8, requires_grad=True)
    random_affine(0.1, 5)(grad, torch.Generator().manual_seed(1)).sum().backward()
    assert grad.grad is not None and grad.grad.abs().sum() > 0


def test_random_affine_rotates_a_wide_image_without_shearing_it():
    """A half turn of a non-square image is its flip in both axes (a sheared rotation is not)."""
    from preimage.transforms import _affine

    x = torch.rand(1, 3, 6, 10, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(_affine(x, 180.0, 1.0), x.flip(-1, -2), atol=1e-5)
    assert torch.allclose(_affine(x, 0.0, 1.0), x, atol=1e-6)
    dot = torch.zeros(1, 1, 21, 41)
    dot[..., 10, 26] = 1.0  # 6 px right of the centre
    turned = _affine(dot, 90.0, 1.0)
    y, xx = divmod(int(turned.flatten().argmax()), 41)
    assert xx == 20 and abs(y - 10) == 6  # 6 px above or below it, not squeezed to 3


def test_a_bad_step_count_optimizer_or_model_raises_one_preimage_error(tiny_model):
    obj = l2(space="pixel")
    with pytest.raises(PreimageError, match="steps must be a whole number >= 0, not -1"):
        optimize(Pixels(_noise()), obj, tiny_model, steps=-1)
    with pytest.raises(PreimageError, match="unknown optimizer 'adma'"):
        optimize(Pixels(_noise()), obj, tiny_model, steps=1, optimizer="adma")
    with pytest.raises(PreimageError, match="not a bare"):
        optimize(Pixels(_noise()), obj, tiny_model.net, steps=1)
