"""Fooling images: the step rule on a hand-written linear model, early stop, PGD bounds, the 8-bit
check, the embedded model on a photo, and the CLI."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from preimage.cli import main
from preimage.errors import PreimageError
from preimage.models import Model, load_model
from preimage.tasks.fool import fool, png_roundtrip

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.5, 1.0)


def linear_model(weight: torch.Tensor, bias: torch.Tensor, size: int) -> Model:
    net = nn.Sequential(nn.Flatten(), nn.Linear(weight.shape[1], weight.shape[0]))
    net[1].weight.data.copy_(weight)
    net[1].bias.data.copy_(bias)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return Model(name="linear", net=net, input_size=size, mean=MEAN, std=STD,
                 classes=tuple(f"class {i}" for i in range(weight.shape[0])))


def random_linear(size: int = 8, classes: int = 4, seed: int = 0) -> Model:
    g = torch.Generator().manual_seed(seed)
    return linear_model(torch.randn(classes, 3 * size * size, generator=g) * 0.1, torch.zeros(classes), size)


def gray(size: int = 8) -> torch.Tensor:
    return torch.full((1, 3, size, size), 128 / 255)


def test_one_step_moves_lr_levels_along_the_normalized_gradient() -> None:
    model = random_linear()
    x0 = gray()
    with torch.no_grad():
        start = int(model(x0).argmax())
    target = (start + 1) % 4
    r = fool(model, x0, target=target, lr=2.0, max_steps=1, quantize=False)
    # S_t = W_t · (x - m)/s + b  =>  ∂S_t/∂x = W_t / s (per channel)
    g = model.net[1].weight[target].view(1, 3, 8, 8) / torch.tensor(STD).view(1, 3, 1, 1)
    expected = x0 + (2.0 / 255) * g / g.norm()
    torch.testing.assert_close(r.fooled, expected.clamp(0, 1), rtol=0, atol=1e-6)
    assert r.l2[0] == pytest.approx(2.0, rel=1e-4)
    assert r.iterations == [1]


def test_stops_once_fooled_and_reports_the_change() -> None:
    model = random_linear()
    x0 = gray()
    with torch.no_grad():
        start = int(model(x0).argmax())
    target = (start + 2) % 4
    r = fool(model, x0, target=target, lr=5.0, max_steps=200)
    assert r.success == [True] and r.final_class == [target] and r.png_ok == [True]
    n = r.iterations[0]
    assert 1 <= n < 200
    assert r.settings["steps_run"] == n + 1  # one more forward found it fooled; nothing moved
    # every image moved n steps of 5 levels; the L2 of the 8-bit result is at most that (plus rounding)
    assert 0 < r.l2[0] <= 5.0 * n + 0.5 * (3 * 64) ** 0.5
    assert r.linf[0] == pytest.approx(float((r.fooled - x0).abs().max() * 255), rel=1e-5)
    # quantized: the result lies on the 8-bit grid, so the saved PNG is exactly this image
    torch.testing.assert_close(r.fooled * 255, (r.fooled * 255).round(), rtol=0, atol=1e-4)
    torch.testing.assert_close(png_roundtrip(r.fooled), r.fooled, rtol=0, atol=1e-6)


def test_images_in_a_batch_stop_independently() -> None:
    model = random_linear()
    x = torch.stack([gray()[0], torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1))])
    targets = [3, 1]
    batch = fool(model, x, target=targets, lr=5.0, max_steps=200)
    single = fool(model, x[1:], target=1, lr=5.0, max_steps=200)
    assert all(batch.success)
    assert batch.iterations[1] == single.iterations[0]
    torch.testing.assert_close(batch.fooled[1:], single.fooled, rtol=0, atol=1e-6)


def test_untargeted_leaves_the_original_class() -> None:
    model = random_linear()
    r = fool(model, gray(), target=None, lr=5.0, max_steps=200)
    assert r.success == [True] and r.final_class[0] != r.original_class[0] and not r.targeted


def test_pgd_stays_inside_the_linf_ball() -> None:
    model = random_linear(seed=3)
    x0 = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(2)).mul(255).round().div(255)
    with torch.no_grad():
        start = int(model(x0).argmax())
    r = fool(model, x0, target=(start + 1) % 4, mode="pgd", epsilon=3, step_size=1, max_steps=50)
    assert r.linf[0] <= 3 + 1e-4
    assert ((r.fooled - x0).abs() * 255 <= 3 + 1e-4).all()
    assert 0.0 <= float(r.fooled.min()) and float(r.fooled.max()) <= 1.0
    with pytest.raises(PreimageError, match="larger than epsilon"):
        fool(model, x0, target=1, mode="pgd", epsilon=1, step_size=2)
    # epsilon is in 8-bit levels: a fraction of [0, 1] or more than the range is one clear line
    with pytest.raises(PreimageError, match=r"under one 8-bit level.*8/255 in \[0, 1\] units is epsilon 8"):
        fool(model, x0, target=1, mode="pgd", epsilon=0.03, step_size=0.01)
    with pytest.raises(PreimageError, match="more than 255 8-bit levels"):
        fool(model, x0, target=1, mode="pgd", epsilon=300)


def test_cli_refuses_a_pgd_radius_in_the_wrong_units(tmp_path, capsys) -> None:
    argv = ["fool", "sample:coffee", "--untargeted", "--mode", "pgd", "--input-size", "32", "--out", str(tmp_path / "f")]
    assert main([*argv, "--epsilon", "0.03"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "under one 8-bit level" in err
    assert not (tmp_path / "f").exists()


def test_png_check_reports_when_rounding_undoes_a_float_attack() -> None:
    # two classes with almost equal scores: a tiny float change flips them, 8-bit rounding undoes it
    # (x0 = 128/255 is not the mean 0.5, so class 1 starts with a small positive score; class 0's bias
    # is set just above it). One float step of 0.5 levels moves each pixel by at most 0.06 levels.
    size = 8
    w = torch.zeros(2, 3 * size * size)
    w[1] = 1e-3
    x0 = gray(size)
    with torch.no_grad():
        s1 = float(linear_model(w, torch.zeros(2), size)(x0)[0, 1])
    model = linear_model(w, torch.tensor([s1 + 1e-5, 0.0]), size)
    with torch.no_grad():
        assert int(model(x0).argmax()) == 0
    float_attack = fool(model, x0, target=1, lr=0.5, max_steps=20, quantize=False)
    assert float_attack.success == [True]
    assert float_attack.png_ok == [False] and float_attack.png_class == [0]
    eight_bit = fool(model, x0, target=1, lr=0.5, max_steps=20, quantize=True)
    assert eight_bit.success == [True] and eight_bit.png_ok == [True]


def test_bad_settings_raise() -> None:
    model = random_linear()
    with pytest.raises(PreimageError, match="unknown mode 'pgdd'"):
        fool(model, gray(), target=1, mode="pgdd")
    with pytest.raises(PreimageError, match="unknown class"):
        fool(model, gray(), target="no such class")
    with pytest.raises(PreimageError, match="max steps"):
        fool(model, gray(), target=1, max_steps=0)


def test_embedded_model_is_fooled_on_a_photo_and_the_png_still_is() -> None:
    model = load_model("efficientnet_lite0")
    r = fool(model, "sample:chelsea", target="alligator lizard", max_steps=100)
    assert r.success == [True] and r.png_ok == [True]
    assert r.final_class == [model.class_index("alligator lizard")] != r.original_class
    assert r.linf[0] < 32  # a small change, in 8-bit levels


def test_cli_saves_fooled_image_difference_and_manifest(tmp_path, capsys) -> None:
    out = tmp_path / "fool"
    size = ["--model", "resnet18", "--weights", "none", "--input-size", "32"]
    assert main(["fool", "sample:coffee", "--untargeted", *size, "--out", str(out), "-q"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"coffee_fooled.png", "coffee_diff.png", "coffee_fool.png", "fool.json"} <= names
    row = json.loads((out / "fool.json").read_text())["images"][0]
    assert row["success"] and row["png_ok"] and row["final_class"] != row["original_class"]
    assert "fooled" in capsys.readouterr().out
    assert main(["fool", "sample:coffee", *size, "--out", str(tmp_path / "a"), "-q"]) == 2
    assert "--target" in capsys.readouterr().err
    assert main(["fool", "sample:coffee", "--target", "tarantla", *size, "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert "did you mean 'tarantula'" in err and len(err.splitlines()) == 1
    assert main(["fool", "sample:coffee", "--untargeted", *size, "--out", str(out), "-q"]) == 2  # exists
