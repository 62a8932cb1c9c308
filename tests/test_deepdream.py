"""DeepDream on a photo: the layer's activations grow, octaves run coarse to fine and carry the detail,
the step normalization, seeds, bad settings, the embedded model, and `preimage dream --image`."""
from __future__ import annotations

import json
import re

import pytest
import torch

import preimage.tasks.deepdream as dd
from preimage.cli import main
from preimage.errors import PreimageError
from preimage.params import Pixels
from preimage.tasks.deepdream import _normalize_grad, deep_dream, make_config, measure

from conftest import make_tiny_model


def photo(h: int = 30, w: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, h // 5, w // 5, generator=g), size=(h, w),
                                             mode="bilinear", align_corners=False)
    return smooth.clamp(0, 1)


def test_dream_raises_the_layer_norm_keeps_the_size_and_valid_pixels() -> None:
    model = make_tiny_model()
    x = photo()
    r = deep_dream(model, x, layer="conv2", steps=5, octaves=2, jitter=2, lr=0.02)
    assert r.images[0].shape == x.shape and r.photos[0].shape == x.shape
    assert 0 <= float(r.images[0].min()) and float(r.images[0].max()) <= 1
    assert r.after[0].norm > 1.2 * r.before[0].norm
    assert r.before[0].norm == pytest.approx(measure(model, x, "conv2").norm)
    assert len(r.history[0]) == 10 and {h["octave"] for h in r.history[0]} == {1, 2}


def test_one_channel_with_the_mean_loss_raises_that_channel() -> None:
    model = make_tiny_model()
    x = photo(seed=1)
    r = deep_dream(model, x, layer="conv2", channel=3, loss="mean", steps=6, octaves=1, jitter=0, lr=0.02)
    assert r.after[0].mean > r.before[0].mean + 0.05
    assert r.before[0].mean == pytest.approx(float(measure(model, x, "conv2", 3).mean))


def test_same_seed_same_dream_other_seed_other_jitter() -> None:
    model = make_tiny_model()
    x = photo()
    a, b, c = (deep_dream(model, x, layer="conv2", steps=3, octaves=2, jitter=4, seed=s) for s in (0, 0, 1))
    assert torch.equal(a.images[0], b.images[0]) and not torch.equal(a.images[0], c.images[0])


def test_octaves_run_small_to_full_size_and_carry_the_detail(monkeypatch) -> None:
    starts: list[torch.Tensor] = []
    ends: list[torch.Tensor] = []
    real = dd.optimize

    def spy(param, *args, **kwargs):
        starts.append(param().detach().clone())
        result = real(param, *args, **kwargs)
        ends.append(result.image.clone())
        return result

    monkeypatch.setattr(dd, "optimize", spy)
    x = photo(64, 96)
    r = deep_dream(make_tiny_model(), x, layer="conv2", steps=2, octaves=3, octave_scale=2.0, jitter=0, lr=0.05)
    assert [tuple(s.shape[-2:]) for s in starts] == [(16, 24), (32, 48), (64, 96)] == r.octave_sizes[0]
    for k in (1, 2):  # each octave starts from the photo at its scale plus the enlarged detail of the last
        base = dd._resize(x, tuple(starts[k].shape[-2:])).clamp(0, 1)
        prev_base = dd._resize(x, tuple(starts[k - 1].shape[-2:])).clamp(0, 1)
        detail = dd._resize(ends[k - 1].clamp(0, 1) - prev_base, tuple(starts[k].shape[-2:]))
        torch.testing.assert_close(starts[k], (base + detail).clamp(0, 1))
        assert float((starts[k] - base).abs().mean()) > 1e-3  # the detail is not lost
    starts.clear()
    r = deep_dream(make_tiny_model(), photo(28, 56), layer="conv2", steps=1, octaves=3, octave_scale=2.0)
    assert r.octave_sizes == [[(28, 56)]] and len(starts) == 1  # 7 x 14 and 14 x 28: under 16 px, skipped


def test_step_normalization_makes_the_mean_absolute_gradient_one_per_image() -> None:
    p = Pixels(torch.zeros(2, 3, 4, 4))
    p.x.grad = torch.stack([torch.full((3, 4, 4), 0.001), torch.randn(3, 4, 4) * 50])
    _normalize_grad(p)
    torch.testing.assert_close(p.x.grad.abs().flatten(1).mean(1), torch.ones(2))


def test_bad_settings_fail_in_one_line() -> None:
    model = make_tiny_model()
    with pytest.raises(PreimageError, match="octave scale"):
        make_config(octave_scale=0.5)
    with pytest.raises(PreimageError, match="loss"):
        make_config(loss="max")
    with pytest.raises(PreimageError, match="did you mean 'conv2'"):
        deep_dream(model, photo(), layer="conv22")
    with pytest.raises(PreimageError, match="channel 8 is out of range: conv2 has 8 channels"):
        deep_dream(model, photo(), layer="conv2", channel=8)
    with pytest.raises(PreimageError, match="too small"):
        deep_dream(model, photo(), layer="conv2", size=8)


def test_embedded_model_dreams_a_bundled_photo(lite0, one_thread) -> None:
    r = deep_dream(lite0, "sample:chelsea", layer="blocks.4", size=64, octaves=2, steps=4)
    assert r.images[0].shape == (1, 3, 64, 96) and r.names == ["chelsea"]
    assert r.after[0].norm > 1.1 * r.before[0].norm


def test_cli_writes_the_dream_the_photo_and_the_norms(tmp_path, capsys) -> None:
    out = tmp_path / "dd"
    tiny = ["--model", "resnet18", "--weights", "none", "--input-size", "32", "-q"]
    args = ["dream", "--image", "sample:coffee", "--layer", "layer1", "--size", "32", "--octaves", "2", "--steps", "2"]
    assert main([*args, *tiny, "--out", str(out)]) == 0
    assert {"coffee_dream.png", "coffee.png", "coffee_compare.png", "deepdream.json"} <= {p.name for p in out.iterdir()}
    m = json.loads((out / "deepdream.json").read_text())
    entry = m["images"][0]
    assert m["layer"] == "layer1" and entry["size"] == [32, 48] and m["config"]["octaves"] == 2
    assert entry["after"]["norm"] > entry["before"]["norm"] and entry["norm_gain"] > 1
    assert "coffee: ‖layer1‖" in capsys.readouterr().out
    for bad, words in ((["--layer", "layr1"], "did you mean 'layer1'"), ([], "needs --layer"),
                       (["--layer", "layer1", "--class", "3"], "do not go together"),
                       (["--layer", "layer1", "--octave-scale", "0.5"], "octave scale")):
        code = main(["dream", "--image", "sample:coffee", *bad, *tiny, "--out", str(tmp_path / "no")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and words in err and len(err.splitlines()) == 1
    assert main(["dream", *tiny, "--out", str(tmp_path / "no")]) == 2
    assert "--class C" in capsys.readouterr().err
    assert main(["dream", "--class", "3", "--octaves", "2", *tiny, "--out", str(tmp_path / "no")]) == 2
    assert "--octaves goes with --image" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


def test_vit_token_layers_dream_at_the_photos_own_size() -> None:
    from preimage.models import load_model

    vit = load_model("timm:vit_tiny_patch16_224,patch_size=8,embed_dim=32,depth=2,num_heads=2,num_classes=10",
                     weights="none", input_size=32)
    x = photo(40, 48)
    for layer in ("blocks.1", "blocks.1.cls"):
        r = deep_dream(vit, x, layer=layer, steps=3, octaves=2, jitter=2, lr=0.02)
        assert r.images[0].shape == x.shape and r.after[0].mean_square > r.before[0].mean_square


def test_dream_help_names_every_file_deepdream_writes(capsys):
    assert main(["dream", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for path in dd.output_paths("out", ["NAME"]):  # NAME.png on its own, not as part of NNNN_NAME.png
        assert re.search(rf"(?<![\w.]){re.escape(path.name)}", text), path.name
