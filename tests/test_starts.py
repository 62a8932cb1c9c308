"""The learned colour start (preimage.starts) and the batch-norm statistics prior."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from preimage.errors import PreimageError
from preimage.starts import (SHIPPED, ColourStart, _crops, _pooled, _ridge, _rows, fit_colour_start, fit_colour_starts,
                             load_starts, save_starts, shipped_start)
from preimage.tasks.invert import invert


def _photo(tmp_path, name, colour, size=(40, 30)):
    """A photo of one colour with a darker square in its middle."""
    img = Image.new("RGB", size, colour)
    img.paste(tuple(c // 2 for c in colour), (10, 8, 26, 22))
    path = tmp_path / f"{name}.png"
    img.save(path)
    return str(path)


def test_a_fit_predicts_the_colours_it_was_fitted_on_and_is_deterministic(tiny_model, tmp_path):
    red = _photo(tmp_path, "red", (220, 40, 30))
    fit = fit_colour_start(tiny_model, "conv1", [red], crops=4, grey=0.0, lam=1e-4, cells=2)
    again = fit_colour_start(tiny_model, "conv1", [red], crops=4, grey=0.0, lam=1e-4, cells=2)
    assert torch.equal(fit.weight, again.weight)
    x = torch.zeros(1, 3, 16, 16)
    x[:, 0], x[:, 1], x[:, 2] = 220 / 255, 40 / 255, 30 / 255
    with torch.no_grad():
        feats = tiny_model.net.features[0](tiny_model.normalize(x))
    pred = fit.predict(feats, (16, 16))
    assert pred.shape == (1, 3, 16, 16) and 0 <= pred.min() and pred.max() <= 1
    # the red photo's border: predicted red, not grey
    assert pred[0, 0, 1, 1] > pred[0, 1, 1, 1] + 0.3
    assert fit.photos == [red] and fit.model == "tiny" and fit.layer == "features.0"  # by module path


def test_grey_crops_teach_the_map_grey(tiny_model, tmp_path):
    red = _photo(tmp_path, "red", (220, 40, 30))
    fit = fit_colour_start(tiny_model, "conv1", [red], crops=6, grey=1.0, lam=1e-3, cells=2)
    pred = fit.predict(torch.randn(1, 4, 16, 16), (8, 8))
    assert torch.allclose(pred[:, 0], pred[:, 1], atol=1e-4) and torch.allclose(pred[:, 1], pred[:, 2], atol=1e-4)


def test_fits_save_and_load(tiny_model, tmp_path):
    fit = fit_colour_start(tiny_model, "conv2", [_photo(tmp_path, "blue", (20, 40, 200))], crops=2)
    path = save_starts([fit], tmp_path / "starts.pt")
    (back,) = load_starts(path)
    assert back.layer == "features.3" and torch.equal(back.weight, fit.weight) and back.crops == 2
    with pytest.raises(PreimageError, match="cannot read colour starts"):
        (tmp_path / "bad.pt").write_bytes(b"not a file")
        load_starts(tmp_path / "bad.pt")
    with pytest.raises(PreimageError, match="reads 8 channels"):
        back.predict(torch.zeros(1, 3, 2, 2), (4, 4))
    with pytest.raises(PreimageError, match="at least one photo"):
        fit_colour_start(tiny_model, "conv2", [])


def test_the_package_ships_the_deep_stages_of_the_embedded_model():
    assert SHIPPED.exists()
    for layer in ("blocks.5", "blocks.6", "conv_head"):
        s = shipped_start("efficientnet_lite0", layer)
        assert s is not None and s.weight.shape[1] == 3 * s.cells ** 2
        assert len(s.photos) >= 30 and not any(p.startswith("sample:") for p in s.photos)
    assert shipped_start("efficientnet_lite0", "blocks.2") is None and shipped_start("tiny", "conv1") is None


@pytest.mark.slow
def test_the_learned_start_gives_a_colour_photo_its_colours(lite0):
    """chelsea at blocks.5: the learned start is nearer the photo than a grey start, and one step of
    the inversion starts there."""
    from preimage.images import load_tensor
    from preimage.metrics import psnr

    ref = load_tensor("sample:chelsea", 224)
    inv = invert(lite0, ref, layers=["blocks.5"], steps=1, init="learned", lr=1e-6, jitter=0)
    assert inv.effective["init"] == "learned"
    assert psnr(inv.image, ref).item() > psnr(torch.full_like(ref, 0.5), ref).item() + 1.0


def test_init_learned_needs_a_shipped_map_and_the_recipe_falls_back_to_noise(tiny_model):
    ref = torch.rand(1, 3, 16, 16)
    with pytest.raises(PreimageError, match="no learned colour start for tiny"):
        invert(tiny_model, ref, layers=["conv2"], steps=1, init="learned")
    inv = invert(tiny_model, ref, layers=["conv2"], steps=1, deep_stride=2, deep={"param": "pyramid", "init": "learned"})
    assert inv.effective["deep_recipe"] and inv.effective["init"] == "noise"


def test_cli_accepts_init_learned_and_says_what_is_missing(tmp_path, capsys):
    from preimage.cli import main

    rc = main(["invert", "sample:chelsea", "--model", "efficientnet_lite0", "--layer", "blocks.2", "--init", "learned",
               "--steps", "1", "--out", str(tmp_path / "o"), "--quiet"])
    assert rc != 0 and "no learned colour start for efficientnet_lite0 at blocks.2" in capsys.readouterr().err
    rc = main(["invert", "sample:chelsea", "--model", "efficientnet_lite0", "--layer", "conv_head", "--init", "learned",
               "--steps", "1", "--out", str(tmp_path / "p"), "--quiet"])
    assert rc == 0
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert manifest["effective"]["init"] == "learned"


def test_bn_prior_reads_the_batch_norms_before_the_target(lite0):
    from preimage.layers import batchnorm_inputs
    from preimage.objectives import State, bn_stats

    every = batchnorm_inputs(lite0)
    upto = batchnorm_inputs(lite0, ["blocks.2"])
    assert every[0][0] == "conv_stem" and every[-1][0] == "conv_head" and 0 < len(upto) < len(every)
    # at its own running statistics the prior is zero
    layer, m, v = every[0]
    v = v.clamp_min(1e-3)  # (the prior floors a variance at 1e-5)
    pattern = torch.tensor([[-1.0, 1.0], [1.0, -1.0]])  # mean 0, standard deviation 1
    f = m[None, :, None, None] + v.sqrt()[None, :, None, None] * pattern
    obj = bn_stats([(layer, m, v)])
    s = State(image=torch.zeros(1, 3, 2, 2), input=torch.zeros(1, 3, 2, 2), features={layer: f})
    assert float(obj(s)) == pytest.approx(0.0, abs=1e-5)
    assert obj.layers == ["conv_stem"]


def test_bn_weight_is_a_setting(tiny_model):
    with pytest.raises(PreimageError, match="bn_weight"):
        invert(tiny_model, torch.rand(1, 3, 16, 16), layers=["conv2"], steps=1, bn_weight=-1.0)
    with pytest.raises(PreimageError, match="no batch norms|batch norms"):
        invert(tiny_model, torch.rand(1, 3, 16, 16), layers=["conv2"], steps=1, bn_weight=0.1)


def test_coarse_colour_pulls_the_area_means_towards_the_target():
    from preimage.objectives import State, coarse_colour

    x = torch.zeros(2, 3, 8, 8)
    x[:, :, :4] = 1.0  # top half white, bottom half black
    s = State(image=x, input=x)
    assert torch.allclose(coarse_colour(torch.tensor([1.0, 0.0]).view(1, 1, 2, 1).expand(1, 3, 2, 2))(s), torch.zeros(2))
    assert torch.allclose(coarse_colour(torch.full((1, 3, 2, 2), 0.5))(s), torch.full((2,), 0.25))


def test_anchor_needs_the_learned_start_and_is_a_logged_term(lite0):
    ref = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    inv = invert(lite0, ref, layers=["blocks.5"], steps=1, init="learned", anchor=1.0, jitter=0)
    assert "anchor" in inv.history[-1]
    with pytest.raises(PreimageError, match="anchor"):
        invert(lite0, ref, layers=["blocks.5"], steps=1, anchor=-1.0)


def test_a_fitted_map_saved_to_a_file_is_a_start(tiny_model, tmp_path):
    fit = fit_colour_start(tiny_model, "conv2", [_photo(tmp_path, "green", (30, 200, 40))], crops=3, grey=0.0)
    path = str(save_starts([fit], tmp_path / "tiny_starts.pt"))
    ref = torch.rand(1, 3, 16, 16)
    inv = invert(tiny_model, ref, layers=["conv2"], steps=1, init=path, lr=1e-6, jitter=0, deep={})
    assert inv.effective["init"] == "learned"
    expected = fit.predict(tiny_model.net.features[:4](tiny_model.normalize(ref)).detach(), (16, 16))
    assert torch.allclose(inv.image, expected, atol=1e-3)
    with pytest.raises(PreimageError, match="has no colour start for tiny at conv1"):
        invert(tiny_model, ref, layers=["conv1"], steps=1, init=path)


def test_a_fourier_image_can_start_from_a_learned_map(tiny_model, tmp_path):
    """The Fourier parameterization starts from the map's colours (its spectrum set so that the
    sigmoid gives them back), like the pyramid."""
    fit = fit_colour_start(tiny_model, "conv2", [_photo(tmp_path, "green", (30, 200, 40))], crops=3, grey=0.0)
    path = str(save_starts([fit], tmp_path / "tiny_starts.pt"))
    ref = torch.rand(1, 3, 16, 16)
    inv = invert(tiny_model, ref, layers=["conv2"], steps=1, init=path, param="fourier", lr=1e-6, jitter=0, deep={})
    assert inv.effective["init"] == "learned"
    expected = fit.predict(tiny_model.net.features[:4](tiny_model.normalize(ref)).detach(), (16, 16))
    assert torch.allclose(inv.image, expected.clamp(1e-3, 1 - 1e-3), atol=2e-3)


def test_rows_target_the_cells_under_each_position():
    images = torch.rand(2, 3, 32, 32)
    feats = torch.rand(2, 5, 4, 4)
    x, y = _rows(feats, images, cells=2)
    assert x.shape == (2 * 16, 5) and y.shape == (2 * 16, 12)
    coarse = F.interpolate(images, size=(8, 8), mode="area")
    # position (i, j) of image 1 holds the 2 x 2 cells coarse[1, :, 2i:2i+2, 2j:2j+2]
    i, j = 2, 3
    row = y[16 + i * 4 + j].reshape(3, 2, 2).float()
    assert torch.allclose(row, coarse[1, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2], atol=1e-6)


def test_a_linear_world_is_recovered_by_the_ridge_map():
    torch.manual_seed(0)
    images = torch.rand(6, 3, 16, 16)
    coarse = F.interpolate(images, size=(4, 4), mode="area")
    mix = torch.randn(3, 3)
    feats = torch.einsum("dc,bchw->bdhw", mix, coarse)  # features: an invertible colour mix of each cell
    x, y = _rows(feats, images, cells=1)
    mu, sd = x.mean(0), x.std(0)
    xs = (x - mu) / sd
    ym = y.mean(0)
    fit = ColourStart(model="m", layer="l", mean=mu, std=sd, weight=_ridge(xs, y - ym, 1e-9), bias=ym, cells=1)
    pred = fit.predict(feats, (224, 224))  # bilinearly resized
    want = F.interpolate(coarse, size=pred.shape[-2:], mode="bilinear", align_corners=False)
    assert torch.allclose(pred, want.clamp(0, 1), atol=1e-4)


def test_one_pass_over_several_layers_fits_what_each_fit_alone_does(tiny_model, tmp_path):
    photo = _photo(tmp_path, "red", (220, 40, 30))
    both = fit_colour_starts(tiny_model, ["conv1", "conv2"], [photo], lams=(0.1, 1.0), crops=3)
    assert [(f.layer, f.lam) for f in both] == [("features.0", 0.1), ("features.0", 1.0), ("features.3", 0.1),
                                                ("features.3", 1.0)]
    alone = fit_colour_start(tiny_model, "conv2", [photo], lam=1.0, crops=3)
    assert torch.allclose(both[3].weight, alone.weight)


def test_the_colourfulness_head_tells_a_grey_photo_from_a_colour_one(tiny_model, tmp_path):
    red, grey = _photo(tmp_path, "red", (220, 40, 30)), _photo(tmp_path, "grey", (120, 120, 120))
    fit = fit_colour_start(tiny_model, "conv2", [red, grey], crops=4, grey=0.0, chroma=True, chroma_lam=1e-3)
    assert fit.chroma_weight is not None and fit.chroma_weight.shape == (16,)  # 2 x 8 channels: mean and max

    def features(colour):
        x = torch.ones(1, 3, 16, 16) * torch.tensor(colour).view(1, 3, 1, 1) / 255
        with torch.no_grad():
            return tiny_model.net.features[:4](tiny_model.normalize(x))

    assert fit.chroma(features((120, 120, 120))) < 0.5 * fit.chroma(features((220, 40, 30)))
    plain = fit_colour_start(tiny_model, "conv2", [red, grey], crops=4, grey=0.0)  # no head by default
    assert plain.chroma_weight is None and torch.equal(plain.weight, fit.weight)  # the head leaves the map alone
    with pytest.raises(PreimageError, match="no colourfulness head"):
        plain.chroma(features((1, 2, 3)))


def test_desaturating_lowers_colourfulness_to_the_prediction_and_never_raises_it():
    from preimage.starts import _chroma

    colours = torch.rand(2, 3, 8, 8)
    have = _chroma(colours)
    out = ColourStart.desaturate(colours, torch.stack([have[0] / 2, have[1] * 3]))
    assert torch.allclose(_chroma(out), torch.stack([have[0] / 2, have[1]]), atol=1e-5)
    assert torch.allclose(out.mean(1), colours.mean(1), atol=1e-6)  # the grey stays
    assert torch.allclose(out[1], colours[1], atol=1e-6)


def test_maps_saved_without_a_head_still_load(tiny_model, tmp_path):
    fit = fit_colour_start(tiny_model, "conv2", [_photo(tmp_path, "blue", (20, 40, 200))], crops=2, chroma=True)
    state = {k: v for k, v in fit.state().items() if not k.startswith("chroma")}
    torch.save([state], tmp_path / "old.pt")
    (back,) = load_starts(tmp_path / "old.pt")
    assert back.chroma_weight is None and torch.equal(back.weight, fit.weight)
    (again,) = load_starts(save_starts([fit], tmp_path / "new.pt"))
    assert torch.equal(again.chroma_weight, fit.chroma_weight) and again.chroma_bias == fit.chroma_bias


def test_a_head_changes_the_start_only_by_desaturating_it(tiny_model, tmp_path):
    photos = [_photo(tmp_path, "red", (220, 40, 30)), _photo(tmp_path, "grey", (120, 120, 120))]
    fit = fit_colour_start(tiny_model, "conv2", photos, crops=4, grey=0.3, chroma=True)
    feats = torch.randn(2, 8, 3, 3)
    plain = dataclasses.replace(fit, chroma_weight=None).coarse(feats)
    assert torch.allclose(fit.coarse(feats), ColourStart.desaturate(plain, fit.chroma(feats)), atol=1e-6)
    for layer in ("blocks.5", "blocks.6", "conv_head"):  # the shipped maps have no head
        assert shipped_start("efficientnet_lite0", layer).chroma_weight is None


def test_agreement_is_the_kl_divergence_from_the_target_and_moves_the_image():
    from preimage.objectives import State, agreement

    lin = torch.nn.Linear(3, 4)
    partner = lambda x: lin(x.mean((2, 3)))  # noqa: E731 -- logits from the mean colour
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    own = partner(x).softmax(-1).detach()
    assert torch.allclose(agreement(partner, own)(State(image=x, input=x)), torch.zeros(2), atol=1e-5)
    other = torch.tensor([[0.7, 0.1, 0.1, 0.1]])
    value = agreement(partner, other)(State(image=x, input=x))
    expected = (other * (other.log() - partner(x).log_softmax(-1))).sum(1)
    assert value.shape == (2,) and torch.allclose(value, expected, atol=1e-5) and bool((value > 0).all())
    small = F.interpolate(x, size=(4, 4), mode="bilinear", align_corners=False, antialias=True)
    resized = agreement(partner, other, size=4)(State(image=x, input=x))
    assert torch.allclose(resized, (other * (other.log() - partner(small).log_softmax(-1))).sum(1), atol=1e-5)
    value.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_agree_pulls_a_partner_towards_the_inverted_networks_class(tiny_model):
    from conftest import make_tiny_model

    ref = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    partner = make_tiny_model(seed=1)
    with torch.no_grad():
        target = tiny_model(ref).softmax(-1)  # the inverted network's prediction for the photo

    def kl(image):  # KL(target || partner(image))
        with torch.no_grad():
            return float((target * (target.log() - partner(image).log_softmax(-1))).sum())

    kw = dict(layers=["conv2"], steps=10, init="zeros", partner=partner)
    pulled, free = invert(tiny_model, ref, agree=10.0, **kw), invert(tiny_model, ref, agree=0.0, **kw)
    # the logged term is the weighted KL of the partner's prediction on the image (the first step: grey)
    assert pulled.history[0]["agree"] == pytest.approx(10.0 * kl(torch.full_like(ref, 0.5)), rel=1e-4)
    assert "agree" not in free.history[-1]
    # and the prior pulls: the partner's prediction ends closer to the target than without it
    assert kl(pulled.image) < 0.9 * kl(free.image)
    assert pulled.history[-1]["agree"] < pulled.history[0]["agree"]
    with pytest.raises(PreimageError, match="agree"):
        invert(tiny_model, ref, layers=["conv2"], steps=1, agree=-1.0)


def test_agree_needs_two_classifiers_with_the_same_classes(tiny_model, lite0):
    ref = torch.rand(1, 3, 16, 16)
    with pytest.raises(PreimageError, match="classes"):
        invert(tiny_model, ref, layers=["conv2"], steps=1, agree=1.0, partner=lite0)
    headless = dataclasses.replace(tiny_model, classes=None)
    with pytest.raises(PreimageError, match="classifier"):
        invert(headless, ref, layers=["conv2"], steps=1, agree=1.0, partner=tiny_model)


def _ramps(tmp_path, w=60, h=40):
    """A photo whose red is its column and green its row (0 to 255), blue 0."""
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    rgb = torch.stack([x * 255 // (w - 1), y * 255 // (h - 1), torch.zeros_like(x)], -1).to(torch.uint8)
    path = tmp_path / "ramps.png"
    Image.fromarray(rgb.numpy(), "RGB").save(path)
    return str(path), rgb.permute(2, 0, 1)[None].float() / 255


def test_crops_start_with_the_centre_square_then_mirror_every_other_random_crop(tmp_path):
    path, img = _ramps(tmp_path)
    crops = _crops(path, 7, 16, torch.Generator().manual_seed(0))
    assert crops.shape == (7, 3, 16, 16)
    # the first: the full centre square (40 x 40 of 60 x 40), area-resized
    assert torch.allclose(crops[0], F.interpolate(img[..., :, 10:50], size=(16, 16), mode="area")[0], atol=1e-6)
    red, green = crops[:, 0], crops[:, 1]
    for i in range(7):
        dx = red[i, :, -1].mean() - red[i, :, 0].mean()  # red rises to the right unless mirrored
        assert (dx < 0) == (i % 2 == 1), i
        assert bool((green[i, -1] > green[i, 0]).all())  # never flipped upside down
        if i:  # a square of 50-100 % of the short side: its red spans that share of 40/60 of the range
            span = float(red[i].max() - red[i].min()) * 59 / 40
            assert 0.5 * 15 / 16 - 0.05 < span < 1.0 + 0.01, (i, span)
    spans = [float(red[i].max() - red[i].min()) for i in range(1, 7)]
    assert len(set(round(v, 3) for v in spans)) > 1  # random sides, not one size
    assert torch.equal(crops, _crops(path, 7, 16, torch.Generator().manual_seed(0)))
    assert not torch.equal(crops[1:], _crops(path, 7, 16, torch.Generator().manual_seed(1))[1:])
    assert torch.equal(crops[0], _crops(path, 7, 16, torch.Generator().manual_seed(1))[0])


def test_pooled_features_are_each_channels_mean_then_maximum():
    f = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]], [[-1.0, -2.0], [-3.0, -4.0]]],
                      [[[0.0, 0.0], [0.0, 4.0]], [[5.0, 5.0], [5.0, 5.0]]]])  # 2 maps x 2 channels x 2 x 2
    z = _pooled(f)
    assert z.dtype == torch.float64 and z.device.type == "cpu"
    assert z.tolist() == [[3.0, -2.5, 6.0, -1.0], [1.0, 5.0, 4.0, 5.0]]
