"""Training a captioner through preimage.train.fit: the notes' overfitting check, resume, loading, explaining."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import make_tiny_model
from preimage.captioning.data import CaptionData, Split, load_shapes
from preimage.captioning.explain import explain_caption
from preimage.captioning.features import FeatureSpec
from preimage.captioning.scenes import make_scene, scene_captions
from preimage.captioning.task import CaptionTask, TrainConfig, check_vocab, load_captioner
from preimage.captioning.vocab import Vocab
from preimage.errors import PreimageError
from preimage.train import fit

TINY_SPEC = FeatureSpec(model="tiny", layer="pool2", grid=2, input_size=16, pca_dim=6)


def small_data(n: int = 50, dim: int = 32) -> CaptionData:
    """``n`` captions of ``n`` scenes with random features (the assignment's small_data, offline)."""
    caps = [scene_captions(make_scene(s), 1)[0] for s in range(n)]
    vocab = Vocab.build(caps)
    feats = torch.randn(n, dim, generator=torch.Generator().manual_seed(0))
    split = Split(feats, vocab.encode_batch(caps), torch.arange(n), [f"scene:{s}" for s in range(n)])
    return CaptionData(vocab, {"train": split, "val": split, "test": split}, {"kind": "test", "n": n})


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_overfitting_50_examples_drives_the_loss_below_0_1(cell, one_thread):
    # the notes' sanity check (RNN_Captioning / LSTM_Captioning: small_data, 50 epochs, batch 25,
    # lr 5e-3; here a smaller net at lr 1e-2 to run in seconds), with the task's own batches and steps
    task = CaptionTask(small_data(), TrainConfig(cell=cell, hidden_dim=128, wordvec_dim=64, batch_size=25, lr=1e-2,
                                                 eval_images=0))
    losses = []
    for epoch in range(1, 51):
        g = torch.Generator().manual_seed(epoch)
        losses.append(sum(task.train_step(b, g)["loss"] for b in task.batches(epoch, g)) / task.num_batches())
    assert losses[0] > 10 and losses[-1] < 0.1
    # and the captions it says for its training features are the training captions
    data = task.data
    said = [task.model.words.decode(r) for r in task.model.sample(data.splits["train"].features).tolist()]
    truth = [r[0] for r in data.splits["train"].references(data.vocab)]
    assert sum(a == b for a, b in zip(said, truth)) >= 48


def test_resume_gives_the_same_weights_and_a_folder_with_another_vocab_is_refused(tmp_path, one_thread):
    data = small_data(20)
    cfg = TrainConfig(cell="lstm", hidden_dim=16, wordvec_dim=8, batch_size=8, eval_images=5)
    full = fit(CaptionTask(data, cfg), tmp_path / "a", epochs=2, seed=1)
    fit(CaptionTask(data, cfg), tmp_path / "b", epochs=1, seed=1)
    resumed = fit(CaptionTask(data, cfg), tmp_path / "b", epochs=2, seed=1)
    assert resumed.resumed_from == 1 and full.status == resumed.status == "done"
    a, b = load_captioner(tmp_path / "a"), load_captioner(tmp_path / "b")
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        if isinstance(va, torch.Tensor):
            assert torch.equal(va, vb), k
    assert "val_bleu4" in full.history["epochs"][-1] and "val_cider" in full.history["epochs"][-1]
    assert json.loads((tmp_path / "a" / "val_samples.json").read_text())["samples"]
    other = small_data(21)
    with pytest.raises(PreimageError, match="other settings"):
        fit(CaptionTask(other, cfg), tmp_path / "a", epochs=3, seed=1)
    with pytest.raises(PreimageError, match="not the checkpoint's"):
        check_vocab(a, other.vocab, "the new data")


def test_loaded_captioner_says_what_the_trained_one_says(tmp_path, one_thread):
    data = small_data(20)
    task = CaptionTask(data, TrainConfig(cell="rnn", hidden_dim=16, wordvec_dim=8, batch_size=10, eval_images=0))
    fit(task, tmp_path, epochs=2, seed=0)
    loaded = load_captioner(tmp_path)
    assert loaded.vocab == data.vocab and loaded.pipeline is None
    feats = data.splits["val"].features
    assert loaded.caption_features(feats) == [data.vocab.decode(r) for r in task.model.sample(feats).tolist()]
    with pytest.raises(PreimageError, match="cannot caption image files"):
        loaded.caption_pixels(torch.rand(1, 3, 16, 16))


def test_load_captioner_refuses_other_checkpoints(tmp_path):
    with pytest.raises(PreimageError, match="checkpoint not found"):
        load_captioner(tmp_path)
    (tmp_path / "checkpoint.pt").write_text("nonsense")
    with pytest.raises(PreimageError, match="not a readable preimage checkpoint"):
        load_captioner(tmp_path)


def test_word_saliency_is_the_gradient_of_each_words_log_probability(tmp_path, one_thread):
    tiny = make_tiny_model()
    data = load_shapes(counts={"train": 30, "val": 3, "test": 3}, spec=TINY_SPEC, model=tiny, cache_dir=tmp_path / "c")
    fit(CaptionTask(data, TrainConfig(cell="lstm", hidden_dim=16, wordvec_dim=8, batch_size=50, eval_images=0)),
        tmp_path / "run", epochs=2, seed=0)
    loaded = load_captioner(tmp_path / "run", model=tiny)
    from preimage.captioning.features import image_tensor

    x = image_tensor(data.image(data.splits["test"].names[0]), 16)[None]
    ex = explain_caption(loaded, x)
    assert ex.caption == loaded.caption_pixels(x)[0]
    assert ex.maps.shape == (len(ex.words), 16, 16) and (ex.maps >= 0).all()
    # word 1 by hand: one image, one backward pass
    t = 1 if len(ex.words) > 1 else 0
    ids = [loaded.vocab.word_to_idx[w] for w in ex.words]
    xx = x.clone().requires_grad_(True)
    lp = loaded.model.word_logprobs(loaded.pipeline(xx), torch.tensor([[1, *ids]]))[0, t]
    lp.backward()
    torch.testing.assert_close(ex.maps[t], xx.grad[0].abs().amax(0), atol=1e-5, rtol=1e-4)
    assert ex.logprobs[t] == pytest.approx(float(lp), abs=1e-5)
    pic = ex.picture()
    assert pic.width > 16 * (len(ex.words) > 0)
