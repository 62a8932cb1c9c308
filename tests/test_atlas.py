"""The channel atlas: channel specs, image folders, crops at the channel's peak, many channels per
batch, the saved grid / HTML / JSON, ViT token layers, and `preimage atlas` with its one-line errors."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from preimage.cli import main
from preimage.errors import PreimageError
from preimage.images import expand_sources
from preimage.models import Model, load_model
from preimage.tasks.atlas import _box, channel_atlas, layer_channels
from preimage.validate import check_channels, parse_channels

from conftest import make_tiny_model


# -- channel specs and image sources ---------------------------------------------------------------

def test_channel_specs_are_ranges_lists_or_both() -> None:
    assert parse_channels("0:4") == [0, 1, 2, 3]
    assert parse_channels("3, 7,9") == [3, 7, 9]
    assert parse_channels("0:2,5,1") == [0, 1, 5]


@pytest.mark.parametrize("spec, words", [("3,,7", "'' is not a channel"), ("a:3", "'a:3' is not"),
                                         ("5:2", "START < STOP"), ("-1", "must be >= 0"), ("", "no channels"),
                                         ("1:2:3", "'1:2:3' is not")])
def test_malformed_channel_specs_name_the_bad_part(spec: str, words: str) -> None:
    with pytest.raises(PreimageError, match=re.escape(words)):
        parse_channels(spec)


def test_channels_beyond_the_layer_are_refused() -> None:
    check_channels([0, 7], 8, "conv2")
    with pytest.raises(PreimageError, match=r"channel 8 is out of range: conv2 has 8 channels \(0..7\)"):
        check_channels([3, 8, 9], 8, "conv2")


def test_a_folder_means_its_image_files_sorted(tmp_path) -> None:
    for name in ("b.png", "a.JPG", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    assert expand_sources([str(tmp_path), "sample:coffee"]) == [str(tmp_path / "a.JPG"), str(tmp_path / "b.png"),
                                                               "sample:coffee"]
    with pytest.raises(PreimageError, match="no images found in"):
        expand_sources([str(tmp_path / "sub")])
    with pytest.raises(PreimageError, match="no such file or folder"):
        expand_sources([str(tmp_path / "missing")])


# -- dataset examples ------------------------------------------------------------------------------

def colour_model() -> Model:
    """Channel 0 sees red (R - G - B), channel 1 blue (B - R - G), pooled 4 x 4: stride 4."""
    conv = nn.Conv2d(3, 2, 1, bias=False)
    conv.weight.data = torch.tensor([[1.0, -1, -1], [-1, -1, 1]]).view(2, 3, 1, 1)
    net = nn.Sequential(conv, nn.AvgPool2d(4))
    return Model(name="colour", net=net, input_size=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def write_photo(path, spots: dict[tuple[int, int], tuple[int, int, int]], size=(48, 32)) -> None:
    w, h = size
    a = np.full((h, w, 3), 128, np.uint8)
    for (y, x), colour in spots.items():
        a[y - 3:y + 3, x - 3:x + 3] = colour
    Image.fromarray(a).save(path)


def test_crops_are_centred_on_each_channels_peak_best_photo_first(tmp_path) -> None:
    write_photo(tmp_path / "red.png", {(8, 10): (255, 0, 0), (24, 40): (0, 0, 160)})
    write_photo(tmp_path / "blue.png", {(20, 30): (0, 0, 255)})
    write_photo(tmp_path / "grey.png", {})
    r = channel_atlas(colour_model(), "1", [0, 1], [str(tmp_path)], steps=2, size=16, top_k=2, photo_size=32)
    red, blue = r.examples
    assert [e.source.rsplit("/", 1)[1] for e in red][:1] == ["red.png"]
    assert [e.source.rsplit("/", 1)[1] for e in blue] == ["blue.png", "red.png"]  # the stronger blue first
    assert len(red) == 2 and red[0].peak > red[1].peak
    for e, (y, x) in ((red[0], (8, 10)), (blue[0], (20, 30)), (blue[1], (24, 40))):
        top, left, side = e.box
        assert side == 12  # 3 x the stride
        assert top <= y < top + side and left <= x < left + side  # the coloured spot is in the crop
        assert e.image.shape == (3, 16, 16)
    # on plain grey both channels read -0.5; a crop holding the spot reads more
    assert blue[0].activation > -0.4 and red[0].activation > -0.4


def test_crop_box_stays_inside_the_photo() -> None:
    assert _box(1.0, 1.0, 12, 32, 48) == (0, 0, 12)
    assert _box(31.0, 47.0, 12, 32, 48) == (20, 36, 12)
    assert _box(16.0, 24.0, 100, 32, 48) == (0, 8, 32)


def test_the_same_photo_twice_gives_its_crop_once() -> None:
    r = channel_atlas(colour_model(), "1", [0], ["sample:chelsea", "sample:cat", "sample:coffee"], steps=1,
                      size=16, top_k=3, photo_size=32)
    assert len(r.examples[0]) == 2


# -- visualizations --------------------------------------------------------------------------------

def test_many_channels_in_chunked_batches_each_raised(tmp_path) -> None:
    model = make_tiny_model(input_size=32)
    photos = [str(tmp_path / "a.png")]
    write_photo(photos[0], {(8, 8): (200, 30, 30)})
    short = channel_atlas(model, "conv2", "0:3", photos, steps=1, size=32, batch=2, seed=0)
    r = channel_atlas(model, "conv2", "0:3", photos, steps=25, size=32, batch=2, seed=0)
    assert r.channels == [0, 1, 2] and r.images.shape == (3, 3, 32, 32)
    assert {h["chunk"] for h in r.history} == {0, 1} and len(r.history) == 50  # chunks of 2 and 1 channels
    assert all(a > b for a, b in zip(r.activation, short.activation))  # each image raised its own channel
    assert r.config.jitter == 2  # 16 px at 224, scaled to 32
    assert r.channels_per_minute == pytest.approx(60 * 3 / r.seconds)


def test_save_writes_grid_self_contained_html_and_json(tmp_path) -> None:
    write_photo(tmp_path / "p.png", {(8, 8): (255, 0, 0)})
    r = channel_atlas(colour_model(), "1", "0,1", [str(tmp_path / "p.png")], steps=2, size=16)
    out = tmp_path / "out"
    r.save(out)
    assert Image.open(out / "atlas.png").size[0] > 2 * 16
    assert (out / "channels" / "c0001.png").exists()
    page = (out / "atlas.html").read_text()
    sources = re.findall(r"src='([^']*)'", page)
    assert len(sources) == 4 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<th>1</th>" in page and f"{r.activation[1]:.4g}" in page
    m = json.loads((out / "atlas.json").read_text())
    assert [c["channel"] for c in m["channels"]] == [0, 1]
    assert m["channels"][0]["examples"][0]["box"] == list(r.examples[0][0].box)
    with pytest.raises(PreimageError, match="exists"):
        r.save(out)


def test_atlas_png_shows_whole_captions_at_small_sizes(tmp_path, cut_captions) -> None:
    write_photo(tmp_path / "a_long_photo_name.png", {(8, 8): (255, 0, 0)})
    r = channel_atlas(colour_model(), "1", "0,1", [str(tmp_path / "a_long_photo_name.png")], steps=2, size=16)
    cut = cut_captions
    img = r.grid()  # "#0  0.123" under a 16 px visualization: the cells widen, the number stays whole
    assert cut == [] and img.width > 2 * 16 + 40


def test_vit_token_layers_and_the_class_token() -> None:
    vit = load_model("timm:vit_tiny_patch16_224,patch_size=8,embed_dim=32,depth=2,num_heads=2,num_classes=10",
                     weights="none", input_size=32)
    assert layer_channels(vit, "blocks.1") == 32 and layer_channels(vit, "blocks.1.cls") == 32
    grid = channel_atlas(vit, "blocks.1", "0:2", ["sample:coffee"], steps=2, size=32, photo_size=32)
    assert grid.images.shape == (2, 3, 32, 32) and grid.examples[0][0].box[2] == 24  # 3 x the 8 px patch
    cls = channel_atlas(vit, "blocks.1.cls", [5], ["sample:coffee"], steps=2, size=32, photo_size=32)
    assert cls.examples[0][0].box == (0, 8, 32)  # no positions: the whole (square) photo


# -- command line ----------------------------------------------------------------------------------

TINY = ["--model", "resnet18", "--weights", "none", "--input-size", "32", "-q"]


@pytest.mark.parametrize("args, words", [
    (["--layer", "layr1"], "did you mean 'layer1'"),
    (["--layer", "layer1", "--channels", "0:65"], "channel 64 is out of range: layer1 has 64 channels"),
    (["--layer", "layer1", "--channels", "3,,7"], "malformed channel list"),
    (["--layer", "layer1", "EMPTY"], "no images found in"),
    (["--layer", "layer1", "sample:chelsae"], "did you mean 'chelsea'"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, words) -> None:
    (tmp_path / "empty").mkdir()
    args = [str(tmp_path / "empty") if a == "EMPTY" else a for a in args]
    assert main(["atlas", *args, *TINY, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_cli_writes_the_atlas(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["atlas", "--layer", "layer1", "--channels", "0:2", "sample:coffee", "sample:rocket", "--size", "32",
                 "--steps", "2", "--top-k", "2", *TINY, "--out", str(out)])
    assert code == 0
    assert {"atlas.png", "atlas.html", "atlas.json", "channels"} <= {p.name for p in out.iterdir()}
    printed = capsys.readouterr().out
    assert "channel 1:" in printed
    m = json.loads((out / "atlas.json").read_text())
    assert m["layer"] == "layer1" and m["config"]["steps"] == 2 and len(m["channels"][0]["examples"]) == 2
    # the photos are ranked by their peak, and the line shows it beside the crop's mean
    first = m["channels"][0]["examples"][0]
    assert f"{first['source']} {first['activation']:.3g} (peak {first['peak']:.3g})" in printed
    assert "top photos by peak" in printed


def test_bad_specs_and_missing_images_answer_before_torch_loads() -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for argv, words in ((["atlas", "--layer", "x", "--channels", "3,,7"], "malformed channel list"),
                        (["atlas", "--layer", "x", "nope.png"], "no such file or folder: nope.png"),
                        (["dream", "--image", "nope.png", "--layer", "x"], "no such file: nope.png")):
        code = (f"import sys; from preimage.cli import main; rc = main({argv!r}); "
                "assert rc == 2, rc; assert 'torch' not in sys.modules")
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_embedded_model_visualizations_beat_their_best_photo_crops(lite0, one_thread) -> None:
    r = channel_atlas(lite0, "blocks.5", [0, 12], ["sample:chelsea", "sample:coffee", "sample:astronaut"],
                      size=64, steps=30, photo_size=128)
    for act, ex in zip(r.activation, r.examples):
        assert len(ex) == 3 and act > 1.5 * max(e.activation for e in ex)


def test_atlas_is_listed_in_the_main_help_after_dream(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "atlas     channel atlas" in out and out.index("  dream ") < out.index("  atlas ")


def test_cli_interruption_is_one_line_on_stderr_even_with_quiet(tmp_path, capsys, monkeypatch) -> None:
    import preimage.tasks.atlas as atlas_module

    real = atlas_module.optimize

    def stopped(*a, **k):  # Ctrl-C during the first chunk: the loop returns what it has, marked interrupted
        result = real(*a, **k)
        result.status = "interrupted"
        return result

    monkeypatch.setattr(atlas_module, "optimize", stopped)
    out = tmp_path / "out"
    code = main(["atlas", "--layer", "layer1", "--channels", "0:2", "sample:coffee", "--size", "32", "--steps", "2",
                 "--top-k", "1", *TINY, "--out", str(out)])
    assert code == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("preimage atlas: interrupted") and str(out) in err[0]
    assert (out / "atlas.json").is_file()
