"""Feature visualization: the objective expression language, direction and diversity terms, the rotation
and padding transforms, preimage.visualize_objective and `preimage dream --objective/--direction`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from preimage.cli import main
from preimage.errors import PreimageError
from preimage.expr import Unit, build, describe, parse_terms
from preimage.objectives import State, channel, direction, diversity, neuron, parse, total_variation
from preimage.tasks.featviz import (direction_from_images, file_stems, load_direction, objective_values,
                                    visualize_objective)
from preimage.transforms import pad, random_rotate, rotate

from conftest import make_tiny_model


def _state(features: dict, batch: int | None = None) -> State:
    b = batch or next(iter(features.values())).shape[0]
    x = torch.zeros(b, 3, 4, 4)
    return State(image=x, input=x, features=features)


# -- the expression language ---------------------------------------------------------------------

def test_expressions_reduce_to_weighted_units():
    assert parse_terms("blocks.5:12") == [(1.0, Unit("blocks.5", 12, None, 1))]
    assert [(w, str(u)) for w, u in parse_terms("blocks.5:12@3,4")] == [(1.0, "blocks.5:12@3,4")]
    assert [(w, str(u)) for w, u in parse_terms("blocks.5:12 - 0.5*blocks.5:40")] == \
        [(1.0, "blocks.5:12"), (-0.5, "blocks.5:40")]
    assert [(w, str(u)) for w, u in parse_terms("-(a:1 + 2*b.3:3)/4")] == [(-0.25, "a:1"), (-0.5, "b.3:3")]
    assert [(w, str(u)) for w, u in parse_terms("2*(a:1)*3 + a:1")] == [(7.0, "a:1")]
    assert parse_terms("logits:'golden retriever'")[0][1].index == "golden retriever"
    assert describe(parse_terms(" a:1-0.5 * a:2 ")) == "a:1 - 0.5*a:2"


@pytest.mark.parametrize("expr, column, what", [
    ("blocks.5:12 -* 2", 14, "expected a unit"),
    ("blocks.5 12", 10, "expected ':'"),
    ("blocks.5:1.5", 10, "channel index"),
    ("a:1 * a:2", 5, "cannot multiply two units"),
    ("a:1 + 2", 5, "cannot add a number"),
    ("a:1@3", 6, "','"),
    ("a:1 # 2", 5, "unexpected character"),
    ("(a:1", 5, "expected ')'"),
    ("a:1 / 0", 7, "division by zero"),
])
def test_malformed_expressions_name_the_offending_column(expr, column, what):
    with pytest.raises(PreimageError) as e:
        parse_terms(expr)
    msg = str(e.value)
    assert f"at column {column} " in msg and what in msg and "\n" not in msg


def test_a_number_or_cancelling_terms_are_not_objectives():
    with pytest.raises(PreimageError, match="is a number"):
        parse_terms("3")
    with pytest.raises(PreimageError, match="cancels out"):
        parse_terms("a:1 - a:1")


def test_units_are_checked_against_the_model_at_the_chosen_size():
    model = make_tiny_model()  # features.3: 8 channels, 8 x 8 at 16 px; logits: 10 classes
    with pytest.raises(PreimageError, match="did you mean"):
        build("features.33:1", model)
    with pytest.raises(PreimageError, match="channel 8 is out of range; features.3 has 8 channels"):
        build("features.3:8", model)
    with pytest.raises(PreimageError, match=r"position \(8, 0\) is outside the 8 x 8 map"):
        build("features.3:1@8,0", model)
    build("features.3:1@8,0", model, size=32)  # 16 x 16 at 32 px: inside
    with pytest.raises(PreimageError, match="must be an integer"):
        build("features.3:cat", model)
    with pytest.raises(PreimageError, match="did you mean"):
        build("logits:'clas 3'", model)
    assert parse("logits:'class 3'", model).names == ["logits:3"]  # the name resolved to its index


def test_a_built_objective_is_the_weighted_sum_of_negated_activations():
    model = make_tiny_model()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    obj = build("features.3:1 - 0.5*features.3:2@1,2 + 2*logits:3", model)
    with torch.no_grad():
        feats = model.net.features[:4](model.normalize(x))
        logits = model.net(model.normalize(x))
    want = feats[:, 1].mean((1, 2)) - 0.5 * feats[:, 2, 1, 2] + 2 * logits[:, 3]
    value, units = objective_values(model, obj, x)
    assert torch.allclose(value, want, atol=1e-5)
    assert units[0]["features.3:2@1,2"] == pytest.approx(float(feats[0, 2, 1, 2]), abs=1e-5)


# -- objectives ----------------------------------------------------------------------------------

def test_a_one_hot_direction_is_the_channel_and_the_length_of_the_vector_does_not_matter():
    f = torch.randn(3, 5, 4, 4, generator=torch.Generator().manual_seed(0))
    s = _state({"l": f})
    e2 = torch.zeros(5)
    e2[2] = 1
    assert torch.allclose(direction("l", e2)(s), channel("l", 2)(s))
    v = torch.randn(5, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(direction("l", 3 * v)(s), direction("l", v)(s))
    want = -(f * (v / v.norm()).view(1, -1, 1, 1)).sum(1).mean((1, 2))
    assert torch.allclose(direction("l", v)(s), want, atol=1e-6)
    cos = -direction("l", v, cosine=True)(s)
    assert (cos.abs() <= 1 + 1e-6).all()
    with pytest.raises(ValueError, match="non-zero"):
        direction("l", torch.zeros(5))


def test_diversity_is_the_mean_gram_cosine_to_the_other_images():
    g = torch.Generator().manual_seed(0)
    same = torch.rand(1, 4, 3, 3, generator=g).expand(3, 4, 3, 3)
    assert torch.allclose(diversity("l")(_state({"l": same})), torch.ones(3), atol=1e-5)
    one = torch.rand(1, 4, 3, 3, generator=g)
    assert diversity("l")(_state({"l": one})).tolist() == [0.0]
    # two images with activity in different channels only: orthogonal Gram matrices
    a = torch.zeros(2, 2, 2, 2)
    a[0, 0], a[1, 1] = 1.0, 2.0
    assert diversity("l")(_state({"l": a})).tolist() == [0.0, 0.0]
    # by hand, three images
    f = torch.rand(3, 4, 3, 3, generator=g)
    grams = [(m.reshape(4, -1) @ m.reshape(4, -1).T).flatten() for m in f]
    cos = lambda i, j: float(torch.nn.functional.cosine_similarity(grams[i], grams[j], dim=0))  # noqa: E731
    want = [(cos(0, 1) + cos(0, 2)) / 2, (cos(1, 0) + cos(1, 2)) / 2, (cos(2, 0) + cos(2, 1)) / 2]
    assert diversity("l")(_state({"l": f})).tolist() == pytest.approx(want, abs=1e-5)
    # two augmentation copies of three images: each copy compared within its own draw, then averaged
    two = torch.cat([f, same])
    s = State(image=torch.zeros(3, 3, 4, 4), input=torch.zeros(3, 3, 4, 4), features={"l": two})
    folded = diversity("l").terms(s)["diversity"]
    assert folded.tolist() == pytest.approx([(w + 1) / 2 for w in want], abs=1e-5)


def test_a_neuron_keeps_its_offset_from_the_centre_on_a_larger_map():
    f = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    s = _state({"l": f})
    # 4 x 4 grid, (1, 3) is offset (-1, +1) from the centre (2, 2); on 6 x 6 the centre is (3, 3)
    assert neuron("l", 0, at=(1, 3), grid=(4, 4))(s).tolist() == (-f[:, 0, 2, 4]).tolist()
    assert neuron("l", 0, at=(1, 3), grid=(6, 6))(s).tolist() == (-f[:, 0, 1, 3]).tolist()
    assert neuron("l", 0, at=(0, 0), grid=(20, 20))(s).tolist() == (-f[:, 0, 0, 0]).tolist()  # clamped


# -- transforms ----------------------------------------------------------------------------------

def test_rotation_by_quarter_turns_matches_rot90_and_fills_the_corners():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(rotate(x, 90), torch.rot90(x, 1, (-2, -1)), atol=1e-5)
    assert torch.allclose(rotate(x, -90), torch.rot90(x, -1, (-2, -1)), atol=1e-5)
    assert torch.equal(rotate(x, 0), x)
    r = rotate(torch.zeros(1, 3, 9, 9), 45, fill=[1.0, 2.0, 3.0])
    assert r[0, :, 0, 0].tolist() == pytest.approx([1.0, 2.0, 3.0])
    t = random_rotate(10)
    a = t(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, t(x, torch.Generator().manual_seed(3))) and not torch.equal(a, x)


def test_padding_adds_a_constant_border_per_channel():
    x = torch.rand(1, 3, 4, 5)
    y = pad(2, fill=[0.1, 0.2, 0.3])(x, torch.Generator())
    assert y.shape == (1, 3, 8, 9)
    assert torch.allclose(y[0, :, 0, 0], torch.tensor([0.1, 0.2, 0.3]))
    assert torch.allclose(y[:, :, 2:6, 2:7], x)


# -- the task ------------------------------------------------------------------------------------

#: transforms sized for a 16-px image of the tiny model (the defaults are for 128-224 px)
SMALL = dict(pad=0, jitter=1, scales=(), rotate=0.0, lr=0.2)


def test_visualization_raises_the_channel_on_the_saved_png_and_reproduces():
    model = make_tiny_model()
    r = visualize_objective(model, "features.3:5", size=16, steps=30, seed=1, **SMALL)
    start = visualize_objective(model, "features.3:5", size=16, steps=1, seed=1, **{**SMALL, "lr": 1e-6})
    assert r.values[0] > start.values[0] + 0.1
    again = visualize_objective(model, "features.3:5", size=16, steps=30, seed=1, **SMALL)
    assert torch.equal(r.image, again.image) and r.values == again.values
    assert r.labels == ["features.3:5"] and r.terms[0] == {"features.3:5": pytest.approx(r.values[0])}


def test_many_channels_in_one_batch_and_a_direction_objective():
    model = make_tiny_model()
    r = visualize_objective(model, channel("features.3", [0, 1, 2]), batch=3, size=16, steps=5,
                            labels=["c0", "c1", "c2"])
    assert r.image.shape == (3, 3, 16, 16) and r.stems == ["c0", "c1", "c2"]
    v = direction_from_images(model, "features.3", torch.zeros(1, 3, 16, 16), torch.ones(1, 3, 16, 16))
    assert v.shape == (8,)
    d = visualize_objective(model, direction("features.3", v), size=16, steps=5)
    assert len(d.values) == 1


def test_an_objective_labels_each_image_with_what_it_shows_unless_labels_are_given(tmp_path):
    model = make_tiny_model()
    r = visualize_objective(model, channel("features.3", [3, 7, 1]), batch=3, size=16, steps=1)
    assert r.labels == ["features.3:3", "features.3:7", "features.3:1"]
    assert r.stems == ["features.3_3", "features.3_7", "features.3_1"]  # as the CLI's --objective features.3:3
    r.save(tmp_path)
    assert (tmp_path / "features.3_7.png").is_file()
    mix = channel("features.3", [0, 2]) - 0.5 * neuron("features.3", 4, at=(1, 2))
    assert mix.labels(2) == ["features.3:0 - 0.5*features.3:4@1,2", "features.3:2 - 0.5*features.3:4@1,2"]
    assert channel("features.3", 5).labels(2) == ["features.3:5"] * 2
    assert direction("features.3", [1.0, 2.0]).labels(1) == ["direction[features.3]"]
    assert (channel("features.3", 5) + total_variation()).labels(1) is None  # a loss term: repr's terms label it
    assert channel("features.3", [0, 1]).labels(3) is None  # not one text per image
    named = visualize_objective(model, channel("features.3", [3, 7]), batch=2, size=16, steps=1, labels=["a", "b"])
    assert named.stems == ["a", "b"]


def test_the_file_stems_docstring_example_is_what_file_stems_gives():
    import re

    examples = re.findall(r"``([^`]+)`` -> ``([^`]+)``", file_stems.__doc__)
    assert examples and all(file_stems([given]) == [stem] for given, stem in examples), examples


def test_diversity_makes_the_batch_less_alike():
    model = make_tiny_model()
    sims = {}
    for w in (0.0, 1.0):
        r = visualize_objective(model, "features.3:1", batch=3, size=16, steps=40, seed=0, diversity=w,
                                diversity_layer="features.1", **SMALL)
        with torch.no_grad():
            f = model.net.features[:2](model.normalize(r.image))
        sims[w] = float(diversity("l")(_state({"l": f})).mean())
        assert ("diversity" in r.history[-1]) == (w > 0)
    assert sims[0.0] > 0.99 and sims[1.0] < 0.9


def test_bad_settings_fail_in_one_line():
    model = make_tiny_model()
    with pytest.raises(PreimageError, match="steps"):
        visualize_objective(model, "features.3:1", steps=0)
    with pytest.raises(PreimageError, match="too small"):
        visualize_objective(model, "features.3:1", size=8)
    with pytest.raises(PreimageError, match="rotate"):
        visualize_objective(model, "features.3:1", rotate=400)
    with pytest.raises(PreimageError, match="2 labels for a batch of 3"):
        visualize_objective(model, "features.3:1", batch=3, labels=["a", "b"])
    with pytest.raises(PreimageError, match="polish"):
        visualize_objective(model, "features.3:1", polish=1.0)


def test_polish_leaves_the_last_steps_untransformed():
    from preimage.tasks.featviz import make_config, transform_steps

    assert transform_steps(make_config()) == 256 - 13  # the default: the last 5 %
    assert transform_steps(make_config(steps=10, polish=0.0)) == 10
    assert transform_steps(make_config(steps=10, polish=0.5)) == 5


def test_file_stems_are_safe_and_unique():
    assert file_stems(["blocks.5:12@3,4"]) == ["blocks.5_12_at3_4"]
    assert file_stems(["a:1 - 0.5*a:2"] * 2) == ["a_1_minus_0.5xa_2_0", "a_1_minus_0.5xa_2_1"]


def test_direction_files_npy_and_pt(tmp_path):
    np.save(tmp_path / "v.npy", np.arange(1, 5, dtype=np.float32)[None])
    assert load_direction(tmp_path / "v.npy").tolist() == [1, 2, 3, 4]
    torch.save(torch.ones(3), tmp_path / "v.pt")
    assert load_direction(tmp_path / "v.pt").tolist() == [1, 1, 1]
    np.save(tmp_path / "m.npy", np.ones((2, 3)))
    with pytest.raises(PreimageError, match="expected a vector"):
        load_direction(tmp_path / "m.npy")
    np.save(tmp_path / "z.npy", np.zeros(3))
    with pytest.raises(PreimageError, match="non-zero"):
        load_direction(tmp_path / "z.npy")
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(PreimageError, match="cannot read direction file"):
        load_direction(tmp_path / "bad.npy")


# -- the command line ----------------------------------------------------------------------------

TINY = ["--model", "resnet18", "--weights", "none", "--input-size", "32", "--size", "32", "-q"]


def test_cli_objective_writes_images_grid_and_values(tmp_path, capsys):
    out = tmp_path / "d"
    code = main(["dream", "--objective", "layer2:3 - 0.5*layer2:4@1,1", "--batch", "2", "--diversity", "1",
                 "--steps", "3", *TINY, "--out", str(out)])
    assert code == 0
    stems = file_stems(["layer2:3 - 0.5*layer2:4@1,1"] * 2)
    assert {f"{s}.png" for s in stems} | {"dream_grid.png", "dream.json"} == {p.name for p in out.iterdir()}
    manifest = json.loads((out / "dream.json").read_text())
    assert manifest["config"]["diversity"] == 1.0 and len(manifest["images"]) == 2
    img = manifest["images"][0]
    assert img["value"] == pytest.approx(img["units"]["layer2:3"] - 0.5 * img["units"]["layer2:4@1,1"], abs=1e-4)
    assert f"{stems[0]}.png: layer2:3 - 0.5*layer2:4@1,1 = " in capsys.readouterr().out


def test_cli_direction_from_two_images(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["dream", "--direction", "layer1", "sample:coffee", "sample:chelsea", "--steps", "2", *TINY,
                 "--out", str(out)]) == 0
    assert (out / "direction_layer1_.png").exists() or any(p.name.startswith("direction") for p in out.iterdir())
    np.save(tmp_path / "v.npy", np.ones(7))
    assert main(["dream", "--direction", "layer1", str(tmp_path / "v.npy"), *TINY, "--out", str(tmp_path / "e")]) == 2
    assert "7 values but layer1 has 64 channels" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--objective", "layer2:3 +* 1"], "column 11"),
    (["--objective", "layer9:3"], "did you mean"),
    (["--objective", "layer2:999"], "out of range"),
    (["--objective", "layer2:1@50,0"], "outside the 4 x 4 map"),
    (["--objective", "layer2:1", "--preset", "classic"], "--preset goes with --class"),
    (["--class", "goldfish", "--batch", "2"], "--batch goes with --objective"),
    (["--direction", "layer1", "x.txt"], ".npy or .pt"),
    ([], "give --class"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    out = tmp_path / "d"
    assert main(["dream", *argv, *TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_vit_patch_grids_and_class_tokens_are_units():
    from preimage.models import load_model

    vit = load_model("timm:vit_tiny_patch16_224,patch_size=8,embed_dim=32,depth=2,num_heads=2", weights="none",
                     input_size=32)
    obj = build("blocks.1:3@3,3 + blocks.1.cls:5", vit)  # 4 x 4 patch grid at 32 px
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    value, units = objective_values(vit, obj, x)
    assert value.shape == (2,) and set(units[0]) == {"blocks.1:3@3,3", "blocks.1.cls:5"}
    with pytest.raises(PreimageError, match="outside the 4 x 4 map"):
        build("blocks.1:3@4,0", vit)
    r = visualize_objective(vit, "blocks.1:3", batch=2, size=32, steps=2, diversity=1.0, **SMALL)
    assert len(r.values) == 2
