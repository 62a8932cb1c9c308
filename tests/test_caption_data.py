"""Captioning data: the assignment's HDF5 files, COCO JSON + images, the procedural scenes; metrics."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_tiny_model
from preimage.captioning.data import load_coco_h5, load_coco_json, load_shapes
from preimage.captioning.features import PCA, FeatureSpec
from preimage.captioning.metrics import bleu, caption_scores, cider, most_frequent_caption, nearest_neighbour_captions
from preimage.captioning.scenes import all_captions, make_scene, render, scene_captions
from preimage.captioning.vocab import SPECIALS, Vocab
from preimage.errors import PreimageError

TINY_SPEC = FeatureSpec(model="tiny", layer="pool2", grid=2, input_size=16, pca_dim=6)


# -- the assignment's files --------------------------------------------------------------------

def write_coco_h5(folder: Path, *, n_train=5, n_val=3, tokens=17, vocab_words=("a", "red", "circle", "dog")) -> Vocab:
    """Tiny files in the layout of the assignment's coco_captioning folder."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = Vocab(SPECIALS + tuple(vocab_words))
    (folder / "coco2014_vocab.json").write_text(json.dumps(vocab.to_json()))
    rng = np.random.default_rng(0)
    with h5py.File(folder / "coco2014_captions.h5", "w") as f:
        for name, n in (("train", n_train), ("val", n_val)):
            caps = np.zeros((2 * n, tokens), np.int32)
            caps[:, 0] = 1
            caps[:, 1:4] = rng.integers(4, len(vocab), size=(2 * n, 3))
            caps[:, 4] = 2
            f[f"{name}_captions"] = caps
            f[f"{name}_image_idxs"] = np.repeat(np.arange(n), 2).astype(np.int32)
    for name, n in (("train", n_train), ("val", n_val)):
        with h5py.File(folder / f"{name}2014_vgg16_fc7_pca.h5", "w") as f:
            f["features"] = rng.standard_normal((n, 512)).astype(np.float32)
        (folder / f"{name}2014_urls.txt").write_text("".join(f"http://x/{name}{i}.jpg\n" for i in range(n)))
    return vocab


def test_coco_h5_loads_the_assignment_layout(tmp_path):
    vocab = write_coco_h5(tmp_path)
    data = load_coco_h5(tmp_path)
    assert data.vocab == vocab
    train = data.splits["train"]
    assert train.features.shape == (5, 512) and train.captions.shape == (10, 17)
    assert train.names[0] == "http://x/train0.jpg"
    assert data.splits["test"] is data.splits["val"]
    with h5py.File(tmp_path / "coco2014_captions.h5") as f:
        first = f["train_captions"][0]
    assert train.references(vocab)[0][0] == vocab.decode(first)
    small = load_coco_h5(tmp_path, max_train=3)
    assert small.splits["train"].captions.shape[0] == 3 and small.splits["train"].num_images == 2


def test_coco_h5_missing_file_is_one_line(tmp_path):
    write_coco_h5(tmp_path)
    (tmp_path / "val2014_vgg16_fc7_pca.h5").unlink()
    with pytest.raises(PreimageError, match="has no val2014_vgg16_fc7_pca.h5"):
        load_coco_h5(tmp_path)


def test_coco_h5_file_that_is_not_hdf5_is_refused(tmp_path):
    write_coco_h5(tmp_path)
    (tmp_path / "coco2014_captions.h5").write_text("not hdf5")
    with pytest.raises(PreimageError, match="not a readable HDF5 file"):
        load_coco_h5(tmp_path)


def test_coco_h5_wrong_caption_length_missing_key_and_bad_indices(tmp_path):
    write_coco_h5(tmp_path, tokens=20)
    with pytest.raises(PreimageError, match="20 tokens per caption, expected 17"):
        load_coco_h5(tmp_path)
    write_coco_h5(tmp_path)
    with h5py.File(tmp_path / "coco2014_captions.h5", "a") as f:
        del f["val_image_idxs"]
    with pytest.raises(PreimageError, match="no dataset 'val_image_idxs'"):
        load_coco_h5(tmp_path)
    write_coco_h5(tmp_path)
    with h5py.File(tmp_path / "coco2014_captions.h5", "a") as f:
        f["train_image_idxs"][0] = 99
    with pytest.raises(PreimageError, match="points at image 99"):
        load_coco_h5(tmp_path)


def test_coco_h5_vocabulary_that_does_not_match_the_captions(tmp_path):
    write_coco_h5(tmp_path)
    (tmp_path / "coco2014_vocab.json").write_text(json.dumps({"idx_to_word": list(SPECIALS) + ["a"]}))
    with pytest.raises(PreimageError, match="vocabulary has 5 words"):
        load_coco_h5(tmp_path)
    (tmp_path / "coco2014_vocab.json").write_text("{broken")
    with pytest.raises(PreimageError, match="not valid JSON"):
        load_coco_h5(tmp_path)


# -- COCO JSON + images --------------------------------------------------------------------------

def write_coco_json(folder: Path, n: int = 6, caption=lambda i: f"a picture number {i}") -> Path:
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    images, anns = [], []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / "imgs" / f"{i}.png")
        images.append({"id": 100 + i, "file_name": f"imgs/{i}.png"})
        anns += [{"image_id": 100 + i, "caption": caption(i)}, {"image_id": 100 + i, "caption": "Something else."}]
    path = folder / "captions_train.json"
    path.write_text(json.dumps({"images": images, "annotations": anns}))
    return path


def test_coco_json_features_are_cached_and_splits_are_disjoint(tmp_path):
    path = write_coco_json(tmp_path)
    model = make_tiny_model()
    data = load_coco_json(path, spec=TINY_SPEC, model=model, cache_dir=tmp_path / "cache", seed=3)
    names = [set(data.splits[s].names) for s in ("train", "val", "test")]
    assert sum(len(n) for n in names) == 6 and not (names[0] & names[1]) and not (names[1] & names[2])
    assert data.splits["train"].features.shape[1] <= 6
    assert "something" in data.vocab.word_to_idx
    cached = list((tmp_path / "cache").glob("features-*.pt"))
    assert len(cached) == 1
    again = load_coco_json(path, spec=TINY_SPEC, model=model, cache_dir=tmp_path / "cache", seed=3)
    torch.testing.assert_close(again.splits["val"].features, data.splits["val"].features)
    # the cached features are what the pipeline computes from the pixels
    img = data.image(data.splits["val"].names[0])
    from preimage.captioning.features import image_tensor

    with torch.no_grad():
        direct = again.pipeline(image_tensor(img, 16)[None])
    torch.testing.assert_close(direct[0], data.splits["val"].features[0], atol=1e-4, rtol=1e-4)


def test_coco_json_bad_inputs_are_one_line(tmp_path):
    path = write_coco_json(tmp_path)
    model = make_tiny_model()
    kw = dict(spec=TINY_SPEC, model=model, cache_dir=None)
    with pytest.raises(PreimageError, match="no such file"):
        load_coco_json(tmp_path / "nope.json", **kw)
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [}')
    with pytest.raises(PreimageError, match="not valid JSON"):
        load_coco_json(bad, **kw)
    bad.write_text('{"images": []}')
    with pytest.raises(PreimageError, match="not a COCO captions file"):
        load_coco_json(bad, **kw)
    (tmp_path / "imgs" / "2.png").unlink()
    with pytest.raises(PreimageError, match="2.png .* does not exist"):
        load_coco_json(path, **kw)
    (tmp_path / "imgs" / "2.png").write_bytes(b"not a png")
    with pytest.raises(PreimageError, match="not an image"):
        load_coco_json(path, **kw)


def test_coco_json_long_captions_error_skip_or_truncate(tmp_path):
    long = " ".join(["word"] * 20)
    path = write_coco_json(tmp_path, caption=lambda i: long if i == 0 else f"a picture {i}")
    kw = dict(spec=TINY_SPEC, model=make_tiny_model(), cache_dir=tmp_path / "c")
    with pytest.raises(PreimageError, match="20 words"):
        load_coco_json(path, **kw)
    skipped = load_coco_json(path, long_captions="skip", **kw)
    truncated = load_coco_json(path, long_captions="truncate", **kw)
    total = lambda d: sum(d.splits[s].captions.shape[0] for s in ("train", "val", "test"))  # noqa: E731
    assert total(skipped) == 11 and total(truncated) == 12


# -- the procedural scenes ------------------------------------------------------------------------

def test_scenes_are_seeded_and_captions_are_true_of_the_scene():
    a, b = make_scene(7), make_scene(7)
    assert a == b and np.array_equal(np.asarray(render(a, 32)), np.asarray(render(b, 32)))
    assert make_scene(8) != a
    for seed in range(200):
        scene = make_scene(seed)
        caps = scene_captions(scene)
        assert len(caps) == min(5, len(all_captions(scene))) and len(set(caps)) == len(caps)
        for c in caps:
            assert len(c.split()) <= 15
            # every colour and shape word said is in the scene
            for o_word in ("red", "green", "blue", "yellow", "purple", "orange"):
                if o_word in c.split():
                    assert any(o.colour == o_word for o in scene.objects), (c, scene)
            for s_word in ("circle", "square", "triangle", "diamond"):
                if s_word in c.split():
                    assert any(o.shape == s_word for o in scene.objects), (c, scene)
        for c in all_captions(scene):
            if " to the left of " in c:
                left, right = c.split(" to the left of ")
                lo = [o for o in scene.objects if f"{o.colour} {o.shape}" in left]
                ro = [o for o in scene.objects if f"{o.colour} {o.shape}" in right]
                assert any(x.col < y.col for x in lo for y in ro), (c, scene)


def test_scene_pixels_show_the_objects_colour():
    scene = next(make_scene(s) for s in range(100) if len(make_scene(s).objects) == 1)
    o = scene.objects[0]
    arr = np.asarray(render(scene, 64)).astype(int)
    y, x = int(o.y * 64), int(o.x * 64)
    assert np.abs(arr[y, x] - np.array(o.rgb)).max() < 30


def test_shapes_data_builds_splits_vocab_and_cache(tmp_path):
    model = make_tiny_model()
    counts = {"train": 12, "val": 4, "test": 4}
    data = load_shapes(counts=counts, spec=TINY_SPEC, model=model, cache_dir=tmp_path)
    assert data.splits["train"].num_images == 12 and data.splits["train"].captions.shape == (60, 17)
    assert set(data.splits["train"].names).isdisjoint(data.splits["test"].names)
    assert "circle" in data.vocab.word_to_idx or "square" in data.vocab.word_to_idx
    refs = data.splits["test"].references(data.vocab)
    seed = int(data.splits["test"].names[0].split(":")[1])
    assert refs[0] == [data.vocab.decode(data.vocab.encode(c)) for c in scene_captions(make_scene(seed))]
    again = load_shapes(counts=counts, spec=TINY_SPEC, model=model, cache_dir=tmp_path)
    torch.testing.assert_close(again.splits["test"].features, data.splits["test"].features)


def test_pca_keeps_the_directions_of_largest_variance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g) * torch.tensor([10.0, 0.1, 5.0, 0.1, 0.1]) + 3
    pca = PCA.fit(x, 2)
    dirs = pca.components.abs().argmax(0).tolist()
    assert dirs == [0, 2]
    y = pca(x)
    assert y.mean(0).abs().max() < 1e-3
    assert y[:, 0].var() > y[:, 1].var()


# -- metrics and baselines ----------------------------------------------------------------------------

def test_bleu_and_cider_reward_the_right_caption():
    refs = [["a red circle on the left", "a big red circle"], ["there are two blue squares", "a blue square and a blue square"],
            ["a green triangle at the top", "there is one green triangle"]]
    good = ["a red circle on the left", "there are two blue squares", "a green triangle at the top"]
    bad = ["there are two blue squares", "a green triangle at the top", "a red circle on the left"]
    s_good, s_bad = caption_scores(good, refs), caption_scores(bad, refs)
    assert s_good["bleu4"] == pytest.approx(1.0) and s_good["bleu1"] == pytest.approx(1.0)
    assert s_bad["bleu4"] < 0.5 and s_good["cider"] > s_bad["cider"] + 1
    assert bleu(["A red, circle!"], [["a red circle"]])["bleu1"] == pytest.approx(1.0)


def test_cider_matches_pycocoevalcap_on_strings():
    from pycocoevalcap.cider.cider import Cider

    refs = [["a red circle", "one red circle"], ["a blue square", "blue square"], ["a green thing", "green"]]
    hyps = ["a red circle", "a square", "green"]
    expected, _ = Cider().compute_score({i: r for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)})
    assert cider(hyps, refs) == pytest.approx(expected)


def test_metrics_refuse_mismatched_inputs():
    with pytest.raises(PreimageError, match="2 captions for 1"):
        bleu(["a", "b"], [["a"]])


def test_baselines_most_frequent_and_nearest_neighbour():
    vocab = Vocab.build(["a red circle", "a blue square", "a green triangle"])
    caps = vocab.encode_batch(["a red circle", "a blue square", "a blue square", "a green triangle"])
    idx = torch.tensor([0, 1, 2, 2])
    assert most_frequent_caption(caps, vocab) == "a blue square"
    feats = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    query = torch.tensor([[9.0, 1.0], [0.5, 0.2], [1.0, 8.0]])
    assert nearest_neighbour_captions(feats, caps, idx, query, vocab) == ["a blue square", "a red circle", "a blue square"]
