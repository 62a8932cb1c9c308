"""HOG and dense SIFT as zoo models: specs and options, layers and aliases, a short inversion that
really lowers the feature error, and the original | glyph | inversion figure."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from preimage.cli import main
from preimage.errors import PreimageError
from preimage.layers import FeatureExtractor, resolve_layer
from preimage.models import load_model
from preimage.models.dsift import DenseSIFT
from preimage.models.hog import HOG
from preimage.models.shallow import parse_spec, shallow_model
from preimage.tasks.invert import INVERT_PRESETS, invert
from preimage.tasks.shallow import (default_layer, default_preset, glyph, glyph_figure, save_glyph_figure,
                                    save_inversion_glyphs)


def test_plain_names_load_the_default_representations():
    hog, sift = load_model("hog"), load_model("dsift")
    assert isinstance(hog.net, HOG) and isinstance(sift.net, DenseSIFT)
    assert (hog.net.variant, hog.net.cell_size, hog.net.orientations) == ("dalal-triggs", 8, 9)
    assert (sift.net.bin_size, sift.net.step) == (8, 8)
    assert hog.classes is None and hog.input_size == 224
    assert hog.mean == (0.0, 0.0, 0.0) and hog.std == (1.0, 1.0, 1.0)


def test_spec_options_reach_the_network():
    m = load_model("hog:uoctti,cell=4,orientations=6")
    assert (m.net.variant, m.net.cell_size, m.net.orientations, m.net.dim) == ("uoctti", 4, 6, 22)
    assert m.name == "hog:uoctti,cell=4,orientations=6"
    m = load_model("hog:block=3,norm=l1-sqrt,hard")
    assert (m.net.block_size, m.net.normalize.method, m.net.orientation.soft) == (3, "L1-sqrt", False)
    m = load_model("dsift:bin=4,step=2", input_size=64)
    assert (m.net.bin_size, m.net.step, m.input_size) == (4, 2, 64)
    assert load_model("dsift:opencv").net.smooth.sigma == pytest.approx((1.6 ** 2 - 0.5 ** 2) ** 0.5)
    assert shallow_model("hog", cell_size=4).net.cell_size == 4
    assert parse_spec("HOG:Dalal_Triggs, cell=16") == ("hog", {"variant": "dalal-triggs", "cell_size": 16})


@pytest.mark.parametrize("spec,message", [
    ("hog:cel=4", "did you mean 'cell'"),
    ("hog:uocti", "did you mean 'uoctti'"),
    ("hog:cell=x", "expected an integer"),
    ("hog:cell=0", "must be > 0"),
    ("hog:norm=L3", "hog option norm must be one of L2-Hys, L2, L1, L1-sqrt, not .L3."),
    ("hog:cell=300", "smaller than one"),
    ("dsift:bin=4,,step=2", "empty option"),
    ("dsift:step=2.5", "expected an integer"),
])
def test_bad_specs_are_one_line_user_errors(spec, message):
    with pytest.raises(PreimageError, match=message):
        load_model(spec)


@pytest.mark.parametrize("spec,said", [
    ("hog:spatial=foo", "hog option spatial must be one of box, bilinear, not 'foo'"),
    ("hog:cell=0", "hog option cell must be > 0"), ("hog:block=0", "hog option block must be > 0"),
    ("hog:bins=0", "hog option bins must be > 0"), ("hog:variant=x", "hog option variant must be one of"),
    ("dsift:bin=0", "dsift option bin must be > 0"), ("dsift:spatial=0", "dsift option spatial must be > 0"),
    ("dsift:smoothing=-1", "dsift option smoothing must be >= 0"), ("dsift:sigma=-1", "dsift option sigma must be"),
    ("hog:eps=-1", "hog option eps must be >= 0"), ("dsift:eps=-0.5", "dsift option eps must be >= 0"),
])
def test_a_bad_option_value_is_named_as_the_user_typed_it(spec, said, capsys):
    assert main(["layers", spec]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and said in err, err
    for internal in ("mode", "cell_size", "block_size", "spatial_bins", "bin_size", "block_norm"):
        assert internal not in err, err


def test_a_bad_keyword_option_is_named_by_its_keyword():
    with pytest.raises(PreimageError, match="hog option spatial must be one of box, bilinear"):
        shallow_model("hog", spatial="foo")
    with pytest.raises(PreimageError, match="dsift option bin_size must be > 0"):
        shallow_model("dsift", bin_size=0)


def test_bad_spec_on_the_command_line_exits_2(capsys):
    assert main(["layers", "hog:cel=4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cell" in err and "Traceback" not in err


@pytest.mark.parametrize("name,children", [
    ("hog", ["gradient", "orientation", "cells", "normalize"]),
    ("dsift", ["smooth", "gradient", "orientation", "pooling", "normalize"]),
])
def test_layers_command_lists_the_stages_and_the_alias(name, children, capsys):
    assert main(["layers", name, "--input-size", "64"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[0] for r in rows] == children
    assert rows[-1][1] == f"{name},features"


@pytest.mark.parametrize("name", ["hog", "dsift"])
def test_aliases_address_the_final_output(name):
    m = load_model(name, input_size=64)
    assert resolve_layer(m, name) == resolve_layer(m, "features") == "normalize"
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    feats = FeatureExtractor(m, [name])(m.normalize(x))
    torch.testing.assert_close(feats[name], m.net(x))
    assert default_layer(m) == "features" and default_preset(m) == "shallow"


def test_defaults_for_other_models_are_left_alone(tiny_model):
    assert default_layer(tiny_model) is None and default_preset(tiny_model) == "default"


def test_shallow_preset_follows_the_paper_schedule():
    cfg = INVERT_PRESETS["shallow"]
    assert cfg.steps == 800 and len(cfg.decay_steps) == 3  # four learning-rate stages
    assert cfg.lambda_alpha > 0 and cfg.lambda_tv > 0 and cfg.jitter == 0


@pytest.fixture(scope="module")
def short_hog_inversion():
    model = load_model("hog", input_size=64)
    kw = dict(layers=["hog"], preset="shallow", steps=1, lr=1e-9, seed=0)  # the start: one step that moves nothing
    start = invert(model, "sample:chelsea", **kw)
    kw.update(steps=120, lr=0.05, decay_steps=(60, 90))
    done = invert(model, "sample:chelsea", **kw)
    return model, start, done


def test_short_hog_inversion_lowers_the_feature_error(short_hog_inversion):
    _, start, done = short_hog_inversion
    before = start.metrics[0]["feature_error"]["hog"] ** 2
    after = done.metrics[0]["feature_error"]["hog"] ** 2
    assert done.status == "done"
    assert before > 0.3            # noise has little of the photo's HOG (random HOG cells are ~0.36 away)
    assert after < 0.1 * before    # a short run already recovers most of it (measured: 0.36 -> 0.007)


def test_glyph_lines_up_with_the_image():
    img = torch.zeros(3, 70, 60)
    img[:, :, 30:] = 1.0  # one vertical edge between columns 29 and 30
    g = glyph(img, hog=HOG(cell_size=10))
    assert g.shape == (3, 70, 60)
    col = g[0].sum(0)
    assert col[20:40].sum() > 0.9 * col.sum()  # all the ink in the cells that hold the edge
    assert torch.equal(g[0], g[1]) and g.max() == 1.0


def test_glyph_figure_has_one_panel_per_image_with_captions(short_hog_inversion, tmp_path):
    model, _, done = short_hog_inversion
    fig = glyph_figure(done.reference[0], [("HOG", done.image[0]), ("again", done.image[0])], model=model)
    assert fig.width > 4 * 64 and fig.height > 64 + 12  # four panels and a caption line
    path = save_glyph_figure(tmp_path / "fig.png", done.reference[0], done.image[0], model=model)
    saved = np.asarray(Image.open(path).convert("RGB"))
    assert saved.shape[1] > 3 * 64
    with pytest.raises(PreimageError, match="exists"):
        save_glyph_figure(path, done.reference[0], done.image[0], model=model)


def test_inversion_glyphs_written_per_image(short_hog_inversion, tmp_path):
    model, _, done = short_hog_inversion
    paths = save_inversion_glyphs(done, model, tmp_path)
    assert [p.name for p in paths] == ["chelsea_glyph.png"]
    glyph_panel = np.asarray(Image.open(paths[0]).convert("L"))[4:68, 72:136]
    assert glyph_panel.std() > 5  # the glyph panel is drawn, not blank


def test_device_follows_the_network():
    # HOG has no parameters; Model.device must still report where .to() put it (meta: no real device)
    assert load_model("hog").device.type == "cpu"
    assert load_model("dsift").to("meta").device.type == "meta"
