"""Saliency maps: gradients checked by hand, batch-size independence, classes, CLI, and the viz helpers."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from preimage.cli import main
from preimage.errors import PreimageError
from preimage.models import Model, load_model
from preimage.tasks.saliency import gradients, saliency
from preimage.viz import difference, grid, heatmap, normalize_map, overlay

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.5)


class Quadratic(nn.Module):
    """``S_c(z) = Σ_k W[c, k] z_k²`` on the flattened normalized input ``z`` (a hand-written model)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        self.linear.weight.data.copy_(weight)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(z.flatten(1) ** 2)


def quadratic_model(size: int = 4, classes: int = 3) -> tuple[Model, torch.Tensor]:
    w = torch.randn(classes, 3 * size * size, generator=torch.Generator().manual_seed(0))
    net = Quadratic(w).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    model = Model(name="quadratic", net=net, input_size=size, mean=MEAN, std=STD,
                  classes=tuple(f"class {i}" for i in range(classes)))
    return model, w


def hand_gradient(w: torch.Tensor, x: torch.Tensor, c: int) -> torch.Tensor:
    """∂S_c/∂x for z = (x - m)/s: 2 W_c (x - m) / s²."""
    m = torch.tensor(MEAN).view(1, 3, 1, 1)
    s = torch.tensor(STD).view(1, 3, 1, 1)
    return 2 * w[c].view(1, *x.shape[1:]) * (x - m) / s**2


@pytest.fixture
def pixels4() -> torch.Tensor:
    return torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(3))


def test_gradient_matches_hand_computation(pixels4: torch.Tensor) -> None:
    model, w = quadratic_model()
    grad, logits, classes = gradients(model, pixels4, [2, 0])
    assert classes == [2, 0]
    expected = torch.cat([hand_gradient(w, pixels4[:1], 2), hand_gradient(w, pixels4[1:], 0)])
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-5)


def test_vanilla_and_gradxinput_maps_match_hand_formulas(pixels4: torch.Tensor) -> None:
    model, w = quadratic_model()
    r = saliency(model, pixels4, target=1, method=["vanilla", "gradxinput"])
    g = hand_gradient(w, pixels4, 1)
    torch.testing.assert_close(r.maps["vanilla"], g.abs().amax(1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(r.maps["gradxinput"], (g * pixels4).sum(1).abs(), rtol=1e-5, atol=1e-5)
    assert r.maps["vanilla"].shape == (2, 4, 4)


def test_smoothgrad_averages_vanilla_maps_of_noisy_copies(pixels4: torch.Tensor) -> None:
    model, w = quadratic_model()
    r = saliency(model, pixels4, target=0, method="smoothgrad", samples=3, noise=0.1, seed=5)
    eps = torch.randn((3, 3, 4, 4), generator=torch.Generator().manual_seed(5)) * 0.1
    expected = torch.stack([
        torch.stack([hand_gradient(w, pixels4[i:i + 1] + eps[t:t + 1], 0).abs().amax(1)[0] for t in range(3)]).mean(0)
        for i in range(2)
    ])
    torch.testing.assert_close(r.maps["smoothgrad"], expected, rtol=1e-5, atol=1e-5)
    r0 = saliency(model, pixels4, target=0, method=["smoothgrad", "vanilla"], samples=2, noise=0.0)
    torch.testing.assert_close(r0.maps["smoothgrad"], r0.maps["vanilla"])


def test_default_class_is_the_prediction(pixels4: torch.Tensor) -> None:
    model, _ = quadratic_model()
    r = saliency(model, pixels4)
    with torch.no_grad():
        assert r.classes == model(pixels4).argmax(1).tolist() == r.predicted
    by_name = saliency(model, pixels4, target="class 2")
    assert by_name.classes == [2, 2]
    per_image = saliency(model, pixels4, target=[0, "class 1"])
    assert per_image.classes == [0, 1]


@pytest.fixture(scope="module")
def resnet() -> Model:
    # trained weights keep activations in range; a random-init ResNet's input gradients span so many
    # orders of magnitude that float32 rounding differences between batch sizes reach 1% of the map
    return load_model("efficientnet_lite0", input_size=64)


def test_maps_do_not_depend_on_batch_size_or_neighbours(resnet: Model) -> None:
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    kw = dict(target=[1, 7, 500], method=["vanilla", "smoothgrad", "gradxinput"], samples=4, noise=0.1, seed=2)
    together = saliency(resnet, x, batch_size=12, **kw)
    one_by_one = saliency(resnet, x, batch_size=1, **kw)
    alone = saliency(resnet, x[1:2], target=7, method=kw["method"], samples=4, noise=0.1, seed=2)
    for m in kw["method"]:
        a, b = together.maps[m], one_by_one.maps[m]
        scale = float(a.abs().max())
        assert scale > 0
        # float32 convolutions pick different algorithms for different batch sizes: rounding moves
        # a map by ~1e-4 of its range; an image leaking into its neighbours would move it by O(1)
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3 * scale)
        torch.testing.assert_close(alone.maps[m][0], a[1], rtol=1e-3, atol=1e-3 * scale)
    # a different noise seed does change SmoothGrad (the seed is used)
    other = saliency(resnet, x[1:2], target=7, method="smoothgrad", samples=4, noise=0.1, seed=3)
    assert not torch.allclose(other.maps["smoothgrad"][0], alone.maps["smoothgrad"][0])


def test_methods_take_a_comma_separated_string_as_the_cli_does() -> None:
    from preimage.tasks.saliency import parse_methods

    assert parse_methods("gradcam, ig") == parse_methods(["gradcam", "ig"]) == ["gradcam", "ig"]
    assert parse_methods(" all ") == parse_methods("all")
    with pytest.raises(PreimageError, match="unknown saliency method 'igg'"):
        parse_methods("gradcam,igg")


def test_bad_inputs_raise_one_line_errors(pixels4: torch.Tensor) -> None:
    model, _ = quadratic_model()
    with pytest.raises(PreimageError, match="unknown saliency method 'smoothgard'.*did you mean"):
        saliency(model, pixels4, method="smoothgard")
    with pytest.raises(PreimageError, match="out of range"):
        saliency(model, pixels4, target=3)
    with pytest.raises(PreimageError, match="2 classes for 1 images"):
        saliency(model, pixels4[:1], target=[0, 1])
    with pytest.raises(PreimageError, match="samples"):
        saliency(model, pixels4, method="smoothgrad", samples=0)


def test_cli_writes_heatmaps_overlays_grid_and_manifest(tmp_path, capsys) -> None:
    out = tmp_path / "sal"
    args = ["saliency", "sample:chelsea", "sample:coffee", "--model", "resnet18", "--weights", "none",
            "--input-size", "64", "--method", "vanilla,gradxinput", "--class", "tabby", "--out", str(out), "-q"]
    assert main(args) == 0
    names = {p.name for p in out.iterdir()}
    for stem in ("chelsea", "coffee"):
        for m in ("vanilla", "gradxinput"):
            assert f"{stem}_{m}.png" in names and f"{stem}_{m}_overlay.png" in names
    assert {"saliency_grid.png", "saliency.json"} <= names
    manifest = json.loads((out / "saliency.json").read_text())
    assert [im["class"] for im in manifest["images"]] == [281, 281]
    assert "tabby" in capsys.readouterr().out
    # existing outputs are refused before any work, unknown classes end in one line, exit 2
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err
    bad = ["saliency", "sample:chelsea", "--class", "tabbby", "--out", str(tmp_path / "x"), "-q"]
    assert main(bad) == 2
    err = capsys.readouterr().err.strip()
    assert "did you mean 'tabby'" in err and len(err.splitlines()) == 1
    assert main(["saliency", str(tmp_path / "missing.png"), "--out", str(tmp_path / "y")]) == 2


# -- viz helpers ---------------------------------------------------------------------------------

def test_normalize_map_clips_at_percentile_per_image() -> None:
    m = torch.stack([torch.arange(100.0).view(10, 10), torch.zeros(10, 10)])
    n = normalize_map(m, percentile=90)
    assert float(n[0].max()) == 1.0 and 0.0 < float(n[0, 5, 0]) < 1.0
    assert float(n[1].abs().max()) == 0.0
    assert float(normalize_map(m[0], percentile=100)[9, 9]) == 1.0


def test_heatmap_overlay_difference_shapes_and_ranges() -> None:
    m = torch.rand(2, 8, 8)
    h = heatmap(m)
    assert h.shape == (2, 3, 8, 8) and 0 <= float(h.min()) and float(h.max()) <= 1
    assert not torch.equal(heatmap(torch.zeros(4, 4)), heatmap(torch.ones(4, 4)))
    img = torch.rand(3, 8, 8)
    ov = overlay(img, m[0])
    assert ov.shape == (3, 8, 8)
    torch.testing.assert_close(overlay(img, torch.zeros(8, 8), dim=0.0), img)
    a = torch.zeros(3, 4, 4)
    b = a.clone()
    b[0, 0, 0] = 0.1
    d, k = difference(a, b)
    assert k == pytest.approx(5.0) and float(d[0, 0, 0]) == pytest.approx(1.0) and float(d[1, 1, 1]) == 0.5
    d2, k2 = difference(a, b, magnify=2)
    assert k2 == 2 and float(d2[0, 0, 0]) == pytest.approx(0.7)


def test_grid_lays_out_cells_with_labels() -> None:
    cells = [torch.zeros(3, 10, 20), None, torch.ones(3, 10, 20)]
    g = grid(cells, ncols=2, labels=["a", None, "c"], pad=2)
    assert g.size == (2 * 20 + 3 * 2, 2 * (10 + 16) + 3 * 2)
    plain = grid(torch.zeros(2, 3, 10, 20), pad=0)
    assert plain.size == (40, 10)
    assert plain.getpixel((0, 0)) == (0, 0, 0)
    assert grid(cells, ncols=2, row_labels=["row one", "row two"]).size[0] > g.size[0]
