"""Style transfer (preimage.tasks.style, `preimage style`): presets, the two special cases, options,
outputs and errors. Mechanics on the tiny CNN or a random-init SqueezeNet at small sizes; the embedded
model where real weights matter."""
from __future__ import annotations

import json

import pytest
import torch

from preimage.cli import main
from preimage.errors import PreimageError
from preimage.models import load_model
from preimage.objectives import feature_loss
from preimage.optimize import optimize
from preimage.params import Pixels
from preimage.tasks import style as S
from preimage.tasks.style import STYLE_PRESETS, preset_for, style_config, stylize


def _img(seed: int, h: int = 32, w: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, h // 8, w // 8, generator=g)
    smooth = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    return (0.7 * smooth + 0.3 * torch.rand(1, 3, h, w, generator=g)).clamp(0, 1)


TINY = dict(content_layer="conv2", content_weight=1.0, style_layers=("relu1", "relu2"),
            style_layer_weights=(10.0, 10.0), tv_weight=0.0, image_size=32, style_size=32, steps=8,
            lr=0.05, lr_drop_step=None)


@pytest.fixture(scope="module")
def squeeze():
    return load_model("squeezenet1_1", weights="none")


# -- presets ---------------------------------------------------------------------------------

def test_classic_preset_is_cs231n_squeezenet_settings(squeeze):
    c = style_config("classic")
    assert c.content_layer == "features.3" and c.content_weight == 6e-2
    assert c.style_layers == ("features.1", "features.4", "features.6", "features.7")
    assert c.style_layer_weights == (300000.0, 1000.0, 15.0, 3.0) and c.style_weight == 1.0
    assert c.tv_weight == 2e-2 and c.gram_normalize == "chw"
    assert (c.optimizer, c.lr, c.lr_drop_step, c.lr_drop_to, c.steps) == ("adam", 3.0, 180, 0.1, 200)
    assert (c.space, c.bounds, c.clamp_steps, c.reset_on_drop) == ("input", (-1.5, 1.5), 190, True)
    assert (c.image_size, c.style_size, c.init) == (192, 192, "content")
    # features.N is the N-th module of squeezenet1_1.features, as the exercise indexes them
    kinds = {n: type(squeeze.net.features[int(n.split(".")[1])]).__name__ for n in (c.content_layer, *c.style_layers)}
    assert kinds == {"features.3": "Fire", "features.1": "ReLU", "features.4": "Fire", "features.6": "Fire",
                     "features.7": "Fire"}
    assert squeeze.mean == (0.485, 0.456, 0.406) and squeeze.std == (0.229, 0.224, 0.225)
    assert preset_for("squeezenet1_1") == "classic"


def test_vgg_preset_layers_are_gatys_relu_names():
    import torchvision

    from preimage.models.aliases import torchvision_aliases

    c = style_config("vgg")
    assert c.content_layer == "relu4_2"
    assert c.style_layers == ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    assert len(set(c.style_layer_weights)) == 1 and c.optimizer == "lbfgs"
    with torch.device("meta"):
        net = torchvision.models.vgg19()
    aliases = torchvision_aliases("vgg19", net)
    assert [aliases[n] for n in (c.content_layer, *c.style_layers)] == [
        "features.22", "features.1", "features.6", "features.11", "features.20", "features.29"]
    assert preset_for("vgg19") == "vgg" and preset_for("efficientnet_lite0") == "efficientnet"


def test_unknown_preset_and_setting():
    with pytest.raises(PreimageError, match="did you mean 'classic'"):
        style_config("clasic")
    with pytest.raises(PreimageError, match="unknown setting 'colour' for stylize"):
        style_config("classic", colour=True)


# -- mechanics of the classic run ------------------------------------------------------------

def test_lr_drop_sets_the_new_rate_after_its_step_and_can_reset_the_optimizer():
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([p], lr=3.0)
    drop = S._LrDrop(opt, at=2, lr=0.1, reset=True)
    lrs = []
    for _ in range(3):
        opt.zero_grad()
        p.sum().backward()
        opt.step()
        assert opt.state  # Adam keeps moments after a step
        drop.step()
        lrs.append(opt.param_groups[0]["lr"])
        if drop.n == 2:
            assert not opt.state  # a fresh optimizer, as CS231n builds one
    assert lrs == [3.0, 0.1, 0.1]


def test_classic_run_clamps_only_the_first_steps(squeeze):
    seen = []
    res = stylize(squeeze, _img(0, 48, 48), _img(1, 48, 48), preset="classic", image_size=48, style_size=48,
                  steps=6, clamp_steps=4, callbacks=[lambda s: seen.append(float(s.param.x.detach().abs().max())) and False])
    assert res.status == "done" and len(seen) == 6
    assert all(v <= 1.5 + 1e-6 for v in seen[:3])     # clamped before steps 1..4 (after 1..3)
    assert max(seen[3:]) > 1.5                         # lr 3 leaves the box once the clamp is lifted
    assert set(res.losses) == {"content", "style", "style_layers", "tv"}
    assert list(res.losses["style_layers"]) == ["features.1", "features.4", "features.6", "features.7"]


# -- the two special cases -------------------------------------------------------------------

def test_style_weight_zero_is_feature_inversion_by_the_engine(lite0):
    content = _img(3, 64, 64)
    kw = dict(style_weight=0.0, tv_weight=0.0, content_layer="blocks.2", content_weight=1e-3, init="noise",
              noise_scale=0.1, steps=12, lr=0.05, lr_drop_step=None, image_size=64, seed=5)
    res = stylize(lite0, content, _img(4, 64, 64), **kw)
    assert set(res.losses) == {"content"}  # no style term: the style layers are never run
    # the same optimization written directly on the engine
    gen = torch.Generator().manual_seed(5)
    start = (0.5 + 0.1 * torch.randn(content.shape, generator=gen)).clamp(0, 1)
    with torch.no_grad():
        from preimage.layers import FeatureExtractor
        target = FeatureExtractor(lite0, ["blocks.2"])(lite0.normalize(content))["blocks.2"]
    direct = optimize(Pixels(start, bounds=(0.0, 1.0)), 1e-3 * feature_loss("blocks.2", target, normalize=False),
                      lite0, steps=12, optimizer="adam", lr=0.05, generator=gen)
    assert torch.allclose(res.image, direct.image.clamp(0, 1), atol=1e-5)
    assert res.losses["content"]["end"] < 0.5 * res.losses["content"]["start"]


def test_style_weight_zero_matches_preimage_invert(lite0):
    invert_mod = pytest.importorskip("preimage.tasks.invert")
    content = _img(3, 64, 64)
    with torch.no_grad():
        from preimage.layers import FeatureExtractor
        p2 = float(FeatureExtractor(lite0, ["blocks.2"])(lite0.normalize(content))["blocks.2"].pow(2).sum())
    w_c = 1e-3
    res = stylize(lite0, content, _img(4, 64, 64), style_weight=0.0, tv_weight=0.0, content_layer="blocks.2",
                  content_weight=w_c, init="noise", noise_scale=0.05, steps=12, lr=0.05, lr_drop_step=None,
                  image_size=64, seed=7)
    # invert normalizes by ||P||²: rec_weight = w_c ||P||² gives the same objective
    inv = invert_mod.invert(lite0, content, layers=["blocks.2"], steps=12, optimizer="adam", lr=0.05,
                            decay_steps=(), space="pixel", bounds=(0.0, 1.0), lambda_alpha=0.0, lambda_tv=0.0,
                            rec_weight=w_c * p2, jitter=0, init="noise", init_scale=0.05, seed=7)
    assert (res.image - inv.image).abs().max() < 2e-3


def test_content_weight_zero_is_texture_synthesis_independent_of_the_content(tiny_model):
    kw = dict(TINY, content_weight=0.0, init="noise", steps=15, seed=1)
    a = stylize(tiny_model, _img(0), _img(9), **kw)
    b = stylize(tiny_model, _img(1), _img(9), **kw)  # another content photo of the same size
    assert "content" not in a.losses
    assert torch.equal(a.image, b.image)
    assert a.losses["style"]["end"] < 0.5 * a.losses["style"]["start"]


def test_defaults_on_the_embedded_model_lower_the_style_loss(lite0):
    res = stylize(lite0, "sample:chelsea", "sample:brick", image_size=64, style_size=64, steps=25)
    assert res.config.style_layers == STYLE_PRESETS["efficientnet"].style_layers
    assert res.losses["style"]["end"] < res.losses["style"]["start"] / 3
    assert res.losses["content"]["start"] < 1e-6 * res.losses["content"]["end"]
    assert res.image.shape[-2] == 64 and res.image.shape[-1] > 64  # short side resized, aspect kept


# -- options ---------------------------------------------------------------------------------

def test_same_seed_reproduces_and_another_seed_does_not(tiny_model):
    kw = dict(TINY, init="noise")
    a = stylize(tiny_model, _img(0), _img(9), seed=3, **kw).image
    b = stylize(tiny_model, _img(0), _img(9), seed=3, **kw).image
    c = stylize(tiny_model, _img(0), _img(9), seed=4, **kw).image
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_style_blend_weights_mix_the_gram_targets(tiny_model):
    one = stylize(tiny_model, _img(0), _img(9), **TINY)
    two = stylize(tiny_model, _img(0), [_img(9), _img(8)], style_blend=[1.0, 0.0], **TINY)
    mixed = stylize(tiny_model, _img(0), [_img(9), _img(8)], style_blend=[1.0, 1.0], **TINY)
    assert torch.allclose(one.image, two.image, atol=1e-6)
    assert not torch.allclose(one.image, mixed.image, atol=1e-4)
    assert two.name == "content_style0+style1" and len(two.triptych().size) == 2
    with pytest.raises(PreimageError, match="blend"):
        stylize(tiny_model, _img(0), [_img(9), _img(8)], style_blend=[1.0], **TINY)


def test_gram_normalization_divides_by_chw(tiny_model):
    kw = dict(TINY, style_layers=("relu1",), style_layer_weights=(1.0,), content_weight=0.0, steps=0)
    none = stylize(tiny_model, _img(0), _img(9), gram_normalize="none", **kw).losses["style"]["start"]
    chw = stylize(tiny_model, _img(0), _img(9), gram_normalize="chw", **kw).losses["style"]["start"]
    c, h, w = 4, 32, 40  # relu1 of the tiny net keeps the image size
    assert none == pytest.approx(chw * (c * h * w) ** 2, rel=1e-3)


def test_preserve_color_keeps_the_content_chrominance(tiny_model):
    content = _img(0)
    kept = stylize(tiny_model, content, _img(9), preserve_color=True, **dict(TINY, lr=0.2, steps=10))
    free = stylize(tiny_model, content, _img(9), **dict(TINY, lr=0.2, steps=10))
    iq = lambda x: S._to_yiq(x)[:, 1:]  # noqa: E731
    assert (iq(kept.image) - iq(content)).abs().mean() < 0.01
    assert (iq(free.image) - iq(content)).abs().mean() > 2 * (iq(kept.image) - iq(content)).abs().mean()


def test_bad_settings_raise_one_line_errors(tiny_model):
    for kw, pattern in [(dict(content_layer="conv9"), "unknown layer 'conv9'"),
                        (dict(style_layers=("relu1", "nope"), style_layer_weights=(1.0, 1.0)), "unknown layer 'nope'"),
                        (dict(style_layer_weights=(1.0,)), "2 style layers but 1"),
                        (dict(style_weight=float("nan")), "style_weight"),
                        (dict(content_weight=0.0, style_weight=0.0), "nothing to optimize"),
                        (dict(content_weight=0.0, style_weight=0.0, tv_weight=1.0), "nothing to optimize but the TV"),
                        (dict(content_weight=0.0, style_layer_weights=(0.0, 0.0)), "content and style weights")]:
        with pytest.raises(PreimageError, match=pattern) as e:
            stylize(tiny_model, _img(0), _img(9), **{**TINY, **kw})
        assert "\n" not in str(e.value)
    with pytest.raises(PreimageError, match="no style preset for tiny"):
        stylize(tiny_model, _img(0), _img(9))


def test_ctrl_c_returns_the_image_so_far(tiny_model):
    def stop(s):
        if s.step == 3:
            raise KeyboardInterrupt

    res = stylize(tiny_model, _img(0), _img(9), callbacks=[stop], **TINY)
    assert res.status == "interrupted" and res.result.steps == 3 and res.image.shape == (1, 3, 32, 40)
    assert not torch.equal(res.image, res.content)  # the image of the last finished step


# -- command line ----------------------------------------------------------------------------

SMALL = ["--image-size", "48", "--style-size", "48", "--input-size", "64", "-q"]


def test_cli_writes_image_triptych_and_manifest(tmp_path):
    rc = main(["style", "sample:chelsea", "sample:brick", "--steps", "3", "--out", str(tmp_path), *SMALL])
    assert rc == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["chelsea_brick.json", "chelsea_brick.png", "chelsea_brick_triptych.png"]
    m = json.loads((tmp_path / "chelsea_brick.json").read_text())
    assert m["model"] == "efficientnet_lite0" and m["styles"] == ["sample:brick"] and m["steps_run"] == 3
    assert m["config"]["content_layer"] == "blocks.3" and m["config"]["image_size"] == 48
    assert set(m["losses"]) == {"content", "style", "style_layers", "tv"}
    assert set(m["losses"]["style"]) == {"start", "end"} and len(m["history"]) == 3
    assert {"content", "style", "tv", "loss"} <= set(m["history"][0])
    # an existing output is refused without --force
    assert main(["style", "sample:chelsea", "sample:brick", "--steps", "1", "--out", str(tmp_path), *SMALL]) == 2


@pytest.mark.parametrize("args, message", [
    (["--style-layers", "blocks.1+blocks.99"], "unknown layer 'blocks.99'"),
    (["--style-layers", "blocks.1:lots"], "is not a number"),
    (["--style-weight", "heavy"], "'heavy' is not a number"),
    (["--content-weight", "-1"], "must be >= 0"),
    (["--style-blend", "1,2"], "1 style images but 2"),
])
def test_cli_bad_inputs_end_in_one_line_and_exit_2(tmp_path, capsys, args, message):
    rc = main(["style", "sample:chelsea", "sample:brick", "--steps", "1", "--out", str(tmp_path), *SMALL, *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and "\n" not in err
    assert not any(tmp_path.iterdir())


def test_cli_help_says_which_flags_size_the_images(capsys):
    assert main(["style", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "the images are sized by --image-size and --style-size" in text


def test_cli_bad_style_image_exits_2(tmp_path, capsys):
    bad = tmp_path / "style.jpg"
    bad.write_bytes(b"not a jpeg at all")
    rc = main(["style", "sample:chelsea", str(bad), "--out", str(tmp_path / "o"), *SMALL])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "style.jpg" in err and "\n" not in err


def test_cli_ctrl_c_saves_what_there_is_and_exits_130(tmp_path, monkeypatch):
    real = S.optimize

    def interrupted(*a, **kw):
        def stop(s):
            if s.step == 2:
                raise KeyboardInterrupt
        kw["callbacks"] = [*kw.get("callbacks", []), stop]
        return real(*a, **kw)

    monkeypatch.setattr(S, "optimize", interrupted)
    rc = main(["style", "sample:chelsea", "sample:brick", "--steps", "5", "--out", str(tmp_path), *SMALL])
    assert rc == 130
    m = json.loads((tmp_path / "chelsea_brick.json").read_text())
    assert m["status"] == "interrupted" and (tmp_path / "chelsea_brick.png").is_file()


def test_lbfgs_runs_from_a_photo_and_lowers_the_style_loss(lite0):
    # a photo loaded through Pillow is a permuted (non-contiguous) tensor; L-BFGS needs flat views
    res = stylize(lite0, "sample:chelsea", "sample:brick", image_size=48, style_size=48, optimizer="lbfgs",
                  lr=1.0, steps=5)
    assert res.status == "done" and res.losses["style"]["end"] < 0.8 * res.losses["style"]["start"]


def test_a_transparent_pillow_image_is_put_on_white_as_a_file_would_be():
    from PIL import Image

    clear = Image.new("RGBA", (40, 30), (255, 0, 0, 0))  # fully transparent red: white, as load_image has it
    pixels, name, source = S._load(clear, 24, "content")
    assert pixels.shape == (1, 3, 24, 32) and name == "content" and source == "content"
    assert torch.allclose(pixels, torch.ones_like(pixels))
