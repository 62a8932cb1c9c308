"""Any nn.Module as a model: load_model(module, ...) defaults and checks, and a 1-channel 28-pixel
network through every task (grey images in, grey pictures out), the API, the CLI and a sweep."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import preimage
from preimage.errors import PreimageError
from preimage.images import load_batch, to_channels
from preimage.layers import list_layers
from preimage.models import IMAGENET_MEAN

CLASSES = ["top", "trouser", "pullover", "dress"]


class GreyNet(nn.Module):
    """1 x 28 x 28 -> conv(1->4) relu pool -> conv(4->8) relu -> global average -> linear(8->4)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(4, 8, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def grey_net(seed: int = 0) -> GreyNet:
    torch.manual_seed(seed)
    return GreyNet()


@pytest.fixture
def grey() -> preimage.Model:
    return preimage.load_model(grey_net(), mean=0.286, std=0.353, input_size=28, classes=CLASSES)


def _is_grey_png(path: Path) -> bool:
    a = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return bool((a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all())


# -- load_model(module) ------------------------------------------------------------------------

def test_module_defaults_channels_from_first_conv_and_zero_one_stats_for_grey() -> None:
    model = preimage.load_model(grey_net())
    assert model.channels == 1 and model.mean == (0.0,) and model.std == (1.0,) and model.input_size == 224
    assert model.classes == ("0", "1", "2", "3")  # B x 4 output: a classifier with numbered classes
    assert model.name == "GreyNet" and not any(p.requires_grad for p in model.net.parameters())


def test_three_channel_module_defaults_to_imagenet_stats() -> None:
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = preimage.load_model(net, input_size=32)
    assert model.channels == 3 and model.mean == IMAGENET_MEAN and model.classes == ("0", "1")


class LogitsAndFeatures(nn.Module):
    """Returns ``(logits, features)``, as many research networks do."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.conv(x).relu().mean((2, 3))
        return self.head(features), features


def test_module_returning_a_tuple_is_scored_by_its_first_element() -> None:
    model = preimage.load_model(LogitsAndFeatures(), input_size=32)
    assert model.classes == ("0", "1", "2", "3", "4")
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 5)
    assert len(preimage.classify(model, torch.rand(1, 3, 32, 32), top=2)[0]) == 2  # failed: 'tuple' has no 'float'
    assert preimage.saliency(model, torch.rand(1, 3, 32, 32), method="vanilla") is not None


def test_module_that_is_not_a_classifier_has_no_classes() -> None:
    model = preimage.load_model(nn.Sequential(nn.Conv2d(1, 2, 3)), input_size=20)
    assert model.classes is None
    with pytest.raises(PreimageError, match="not a classifier"):
        preimage.saliency(model, torch.rand(1, 1, 20, 20))


@pytest.mark.parametrize("kwargs,match", [
    ({"channels": 2}, "channels must be 1"),
    ({"mean": [0.1, 0.2]}, "mean has 2 values for a 1-channel model"),
    ({"std": 0.0}, "std must be > 0"),
    ({"std": float("nan")}, "finite"),
    ({"input_size": 8}, "too small"),
    ({"classes": ["a", "b"]}, "2 class names for a model with 4 outputs"),
    ({"classes": []}, "empty"),
    ({"classes": "no/such/names.txt"}, "class names file not found"),
    ({"weights": "none"}, r"weights='none' \(--weights none\) applies to zoo models"),
    ({"weights": "no/such.pt"}, "weights file not found"),
])
def test_bad_module_settings_are_one_line_errors(kwargs: dict, match: str) -> None:
    args = {"input_size": 28, **kwargs}
    with pytest.raises(PreimageError, match=match):
        preimage.load_model(grey_net(), **args)


def test_module_that_cannot_take_the_input_says_so() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 3))
    with pytest.raises(PreimageError, match=r"fails on a 1 x 3 x 224 x 224 input.*--input-size, --channels"):
        preimage.load_model(net)
    assert preimage.load_model(net, channels=1, input_size=28).classes == ("0", "1", "2")


def test_module_weights_file_is_loaded(tmp_path: Path) -> None:
    trained = grey_net(seed=1)
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    model = preimage.load_model(grey_net(seed=2), weights=tmp_path / "w.pt", input_size=28)
    x = torch.rand(1, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model.net(x), trained(x))


def test_rgb_files_become_grey_by_luma_and_grey_tensors_become_rgb() -> None:
    x, _, _ = load_batch("sample:coffee", 28, channels=1)
    rgb, _, _ = load_batch("sample:coffee", 28)
    assert x.shape == (1, 1, 28, 28)
    torch.testing.assert_close(x, 0.299 * rgb[:, :1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:])
    assert to_channels(x, 3).shape == (1, 3, 28, 28)
    with pytest.raises(PreimageError, match="2-channel"):
        to_channels(torch.rand(1, 2, 4, 4), 1)


# -- every task on a 1-channel, 28-pixel model -------------------------------------------------

def test_layers_of_a_grey_model_have_its_shapes(grey) -> None:
    shapes = {i.name: i.shape for i in list_layers(grey)}
    assert shapes["features.0"] == (4, 28, 28) and shapes["features.3"] == (8, 14, 14) and shapes["fc"] == (4,)


def test_invert_grey_model_gives_grey_images_and_lowers_the_feature_error(grey, tmp_path: Path) -> None:
    inv = preimage.invert(grey, "sample:coffee", layers=["features.3"], steps=40)
    assert inv.image.shape == inv.reference.shape == (1, 1, 28, 28)
    # the start: one step too small to move a pixel (an inversion takes at least one step)
    start = preimage.invert(grey, "sample:coffee", layers=["features.3"], steps=1, lr=1e-9).metrics[0]["feature_error"]
    assert inv.metrics[0]["feature_error"]["features.3"] < start["features.3"]
    assert inv.metrics[0]["top1_original"] in CLASSES
    inv.save(tmp_path, gif=False)
    assert _is_grey_png(tmp_path / "coffee.png") and _is_grey_png(tmp_path / "coffee_compare.png")


@pytest.mark.parametrize("preset", ["fourier", "classic"])
def test_dream_grey_model_gives_grey_images(grey, preset: str, tmp_path: Path) -> None:
    res = preimage.visualize_class(grey, ["dress", "top"], preset=preset, steps=5)
    assert res.image.shape == (2, 1, 28, 28)
    res.save(tmp_path)
    assert all(_is_grey_png(p) for p in tmp_path.glob("*.png") if "grid" not in p.name)


def test_saliency_grey_model(grey, tmp_path: Path) -> None:
    res = preimage.saliency(grey, ["sample:camera", "sample:coins"], method="all", samples=3)
    assert res.images.shape == (2, 1, 28, 28)
    assert all(m.shape == (2, 28, 28) for m in res.maps.values())
    res.save(tmp_path)
    assert (tmp_path / "camera_vanilla_overlay.png").is_file()


def test_fool_grey_model_keeps_one_channel(grey, tmp_path: Path) -> None:
    res = preimage.fool(grey, "sample:camera", target="dress", max_steps=20, lr=5.0)
    assert res.fooled.shape == (1, 1, 28, 28)
    res.save(tmp_path)
    assert all(_is_grey_png(p) for p in tmp_path.glob("camera*.png") if "diff" not in p.name)


def test_style_grey_model_gives_a_grey_image(grey, tmp_path: Path) -> None:
    res = preimage.stylize(grey, "sample:camera", "sample:brick", content_layer="features.3",
                           style_layers=("features.0", "features.3"), image_size=28, style_size=28, steps=5)
    assert res.image.shape == (1, 1, 28, 28)
    res.save(tmp_path)
    assert _is_grey_png(tmp_path / f"{res.name}.png")


def test_classify_grey_model(grey) -> None:
    top = preimage.classify(grey, load_batch("sample:camera", 28, channels=1)[0], top=2)
    assert len(top[0]) == 2 and top[0][0][1] in CLASSES


# -- the same network through its ONNX export: the CLI and a sweep -----------------------------

@pytest.fixture(scope="module")
def grey_onnx(tmp_path_factory) -> Path:
    pytest.importorskip("onnx2torch")
    path = tmp_path_factory.mktemp("grey") / "grey.onnx"
    torch.onnx.export(grey_net().eval(), (torch.zeros(1, 1, 28, 28),), str(path), dynamo=False,
                      input_names=["image"], output_names=["logits"])
    (path.parent / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    path.with_suffix(".json").write_text(json.dumps({"mean": 0.286, "std": 0.353, "classes": "classes.txt"}))
    return path


@pytest.mark.parametrize("command", [
    ["invert", "sample:camera", "--layer", "/features/features.3/Conv", "--steps", "3"],
    ["dream", "--class", "dress", "--steps", "3"],
    ["saliency", "sample:camera"],
    ["fool", "sample:camera", "--target", "dress", "--max-steps", "3"],
    ["style", "sample:camera", "sample:brick", "--content-layer", "/features/features.3/Conv",
     "--style-layers", "/features/features.0/Conv", "--image-size", "28", "--style-size", "28", "--steps", "3"],
])
def test_cli_tasks_run_on_a_grey_onnx_model(grey_onnx: Path, tmp_path: Path, command: list[str]) -> None:
    from preimage.cli import main

    rc = main([*command, "--model", str(grey_onnx), "--out", str(tmp_path / "out"), "--quiet"])
    assert rc == 0 or (command[0] == "fool" and rc == 1)  # fool exits 1 when 3 steps do not flip the label
    pngs = list((tmp_path / "out").rglob("*.png"))
    assert pngs
    if command[0] != "saliency":  # saliency maps are coloured heatmaps; every other picture is grey
        pictures = [p for p in pngs if "grid" not in p.name and "_diff" not in p.name]
        assert pictures and all(_is_grey_png(p) for p in pictures), [p.name for p in pictures if not _is_grey_png(p)]


def test_cli_classify_and_layers_on_a_grey_onnx_model(grey_onnx: Path, capsys) -> None:
    from preimage.cli import main

    assert main(["classify", "sample:camera", "--model", str(grey_onnx)]) == 0
    assert any(c in capsys.readouterr().out for c in CLASSES)
    assert main(["layers", str(grey_onnx)]) == 0
    out = capsys.readouterr().out
    assert "28x28" in out and "/features/features.3/Conv" in out and "8x14x14" in out


def test_sweep_over_layers_of_a_grey_onnx_model(grey_onnx: Path, tmp_path: Path) -> None:
    res = preimage.run_sweep({"image": "sample:camera", "model": str(grey_onnx),
                              "layer": ["/features/features.0/Conv", "/features/features.3/Conv"], "steps": 3},
                             tmp_path / "sweep")
    assert res.ok and len(res.computed) == 2, res.failed


def test_a_network_built_for_one_size_given_an_in_memory_image_of_another_is_one_clear_error():
    class OneSize(torch.nn.Module):  # as torchvision's ViT: asserts the size it was built for
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            assert x.shape[-1] == 32, f"Wrong image width! Expected 32 but got {x.shape[-1]}!"
            return self.fc(self.conv(x).mean((2, 3)))

    model = preimage.load_model(OneSize(), input_size=32)
    photo = torch.rand(1, 3, 48, 48)
    for call in (lambda: preimage.invert(model, photo, layers=["conv"], steps=1),
                 lambda: preimage.classify(model, photo),
                 lambda: preimage.saliency(model, photo)):
        with pytest.raises(PreimageError, match=r"failed on a 48x48 image \(Wrong image width! Expected 32 but "
                                                r"got 48!\); it is built for 32x32: give it images of that size"):
            call()
    assert preimage.invert(model, torch.rand(1, 3, 32, 32), layers=["conv"], steps=1).status == "done"
