"""The captioner's cells, model, loss, decoding and vocabulary."""
from __future__ import annotations

import pytest
import torch

from preimage.captioning.cells import LSTMCell, RNNCell, make_cell
from preimage.captioning.model import Captioner, CaptionerConfig, temporal_softmax_loss
from preimage.captioning.vocab import MAX_TOKENS, SPECIALS, CaptionTooLong, Vocab, tokenize
from preimage.errors import PreimageError


@pytest.mark.parametrize("mine,theirs", [(RNNCell, torch.nn.RNNCell), (LSTMCell, torch.nn.LSTMCell)])
def test_cell_matches_torch_cell_outputs_and_gradients(mine, theirs):
    torch.manual_seed(0)
    ref = theirs(5, 7)
    cell = mine(5, 7)
    cell.load_state_dict(ref.state_dict())
    x = torch.randn(3, 5, requires_grad=True)
    h = torch.randn(3, 7, requires_grad=True)
    if mine is LSTMCell:
        c = torch.randn(3, 7, requires_grad=True)
        out, (h2, c2) = cell(x, (h, c))
        rh, rc = ref(x, (h, c))
        torch.testing.assert_close(c2, rc)
        loss, rloss = (h2 * 1.3 + c2).sum(), (rh * 1.3 + rc).sum()
        inputs = (x, h, c)
    else:
        out, h2 = cell(x, h)
        rh = ref(x, h)
        loss, rloss = (h2 ** 2).sum(), (rh ** 2).sum()
        inputs = (x, h)
    torch.testing.assert_close(out, rh)
    grads = torch.autograd.grad(loss, [*inputs, *cell.parameters()])
    rgrads = torch.autograd.grad(rloss, [*inputs, *ref.parameters()])
    for g, rg in zip(grads, rgrads):
        torch.testing.assert_close(g, rg)


def test_rnn_step_is_the_formula_of_the_notes():
    cell = RNNCell(2, 3)
    x, h = torch.randn(4, 2), torch.randn(4, 3)
    expected = torch.tanh(x @ cell.weight_ih.t() + h @ cell.weight_hh.t() + cell.bias_ih + cell.bias_hh)
    torch.testing.assert_close(cell(x, h)[0], expected)


def test_unknown_cell_is_refused_with_a_suggestion():
    with pytest.raises(PreimageError, match="did you mean 'lstm'"):
        make_cell("lsmt", 2, 2)


def test_temporal_softmax_loss_ignores_null_and_averages_over_the_batch():
    scores = torch.randn(2, 3, 5)
    targets = torch.tensor([[4, 2, 0], [3, 0, 0]])
    logp = scores.log_softmax(-1)
    expected = -(logp[0, 0, 4] + logp[0, 1, 2] + logp[1, 0, 3]) / 2
    torch.testing.assert_close(temporal_softmax_loss(scores, targets), expected)
    # changing the scores under <NULL> targets changes nothing
    scores2 = scores.clone()
    scores2[0, 2] += 10
    scores2[1, 1:] -= 3
    torch.testing.assert_close(temporal_softmax_loss(scores2, targets), expected)


def _model(cell: str = "lstm", vocab: int = 9, seed: int = 0) -> Captioner:
    torch.manual_seed(seed)
    return Captioner(CaptionerConfig(vocab_size=vocab, feature_dim=6, cell=cell, wordvec_dim=4, hidden_dim=8))


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_teacher_forcing_scores_depend_only_on_earlier_words(cell):
    model = _model(cell)
    f = torch.randn(2, 6)
    caps = torch.tensor([[1, 4, 5, 6, 2], [1, 7, 8, 2, 0]])
    s1 = model(f, caps[:, :-1])
    caps2 = caps.clone()
    caps2[:, 3] = 3
    s2 = model(f, caps2[:, :-1])
    torch.testing.assert_close(s1[:, :3], s2[:, :3])
    assert not torch.allclose(s1[:, 3], s2[:, 3])
    assert s1.shape == (2, 4, 9)


def test_loss_uses_shifted_captions():
    model = _model()
    f = torch.randn(2, 6)
    caps = torch.tensor([[1, 4, 5, 2, 0], [1, 7, 2, 0, 0]])
    expected = temporal_softmax_loss(model(f, caps[:, :-1]), caps[:, 1:])
    torch.testing.assert_close(model.loss(f, caps), expected)
    lp = model.word_logprobs(f, caps)
    torch.testing.assert_close(-(lp * (caps[:, 1:] != 0)).sum() / 2, expected)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_greedy_sample_feeds_each_argmax_word_back(cell):
    model = _model(cell)
    f = torch.randn(3, 6)
    out = model.sample(f, max_length=6)
    assert out.shape == (3, 6)
    for n in range(3):
        seq = [1]
        for t in range(6):
            scores = model(f[n:n + 1], torch.tensor([seq]))[0, -1]
            w = int(scores.argmax())
            assert int(out[n, t]) == w
            if w == 2:
                assert (out[n, t + 1:] == 0).all()
                break
            seq.append(w)


def _brute_force_best(model, f, max_length):
    """The most probable caption of at most max_length tokens ending in <END> (or unfinished), by enumeration."""
    import itertools

    v = model.config.vocab_size
    best, best_lp = None, -float("inf")
    words = list(range(3, v))
    for length in range(0, max_length):
        for seq in itertools.product(words, repeat=length):
            caps = torch.tensor([[1, *seq, 2]])
            with torch.no_grad():
                lp = float(model.word_logprobs(f, caps).sum())
            if lp > best_lp:
                best, best_lp = [*seq, 2], lp
    return best, best_lp


def test_beam_search_with_a_wide_beam_finds_the_most_probable_caption():
    torch.manual_seed(3)
    model = Captioner(CaptionerConfig(vocab_size=6, feature_dim=4, cell="lstm", wordvec_dim=3, hidden_dim=5))
    with torch.no_grad():
        model.vocab.bias[2] -= 1.0  # make <END> less likely so longer captions compete
    f = torch.randn(1, 4)
    expected, _ = _brute_force_best(model, f, 3)
    got = model.beam_search(f, beam_size=6 * 6 * 6, max_length=3)[0].tolist()
    assert got[:len(expected)] == expected


def test_beam_search_is_never_worse_than_greedy():
    model = _model("lstm", vocab=12, seed=5)
    f = torch.randn(6, 6)
    greedy = model.sample(f, max_length=8)
    beam = model.beam_search(f, beam_size=4, max_length=8)

    def logp(seqs):
        starts = torch.ones(seqs.shape[0], 1, dtype=torch.long)
        caps = torch.cat([starts, seqs], 1)
        lp = model.word_logprobs(f, caps)
        mask = torch.ones_like(lp, dtype=torch.bool)
        for n in range(seqs.shape[0]):
            ends = (seqs[n] == 2).nonzero()
            if len(ends):
                mask[n, int(ends[0]) + 1:] = False
        return (lp * mask).sum(1)

    assert (logp(beam) >= logp(greedy) - 1e-5).all()
    torch.testing.assert_close(model.beam_search(f, beam_size=1, max_length=8), greedy)


def test_tokenize_lowercases_and_drops_punctuation():
    assert tokenize("A red Circle, left-of it.") == ["a", "red", "circle", "left", "of", "it"]


def test_vocab_encodes_with_special_tokens_and_decodes_back():
    vocab = Vocab.build(["a red circle", "a blue square", "a red square"])
    assert vocab.idx_to_word[:4] == SPECIALS
    assert vocab.idx_to_word[4] == "a"  # most frequent first
    ids = vocab.encode("a red triangle")
    assert len(ids) == MAX_TOKENS
    assert ids[0] == 1 and ids[4] == 2 and ids[5:] == [0] * 12
    assert ids[3] == 3  # unknown word
    assert vocab.decode(ids) == "a red <UNK>"
    assert vocab.decode([1, 4, 2, 5, 6]) == "a"  # stops at <END>


def test_vocab_refuses_long_captions_unless_truncating():
    vocab = Vocab.build(["w"])
    with pytest.raises(CaptionTooLong, match="16 words"):
        vocab.encode(" ".join(["w"] * 16))
    assert len(vocab.encode(" ".join(["w"] * 15))) == MAX_TOKENS
    assert vocab.decode(vocab.encode(" ".join(["w"] * 20), truncate=True)) == " ".join(["w"] * 15)


def test_vocab_json_round_trip_and_malformed_vocabularies():
    vocab = Vocab.build(["a red circle"])
    assert Vocab.from_json(vocab.to_json()) == vocab
    with pytest.raises(PreimageError, match="must start with"):
        Vocab(("a", "b", "c", "d"))
    with pytest.raises(PreimageError, match="twice"):
        Vocab(SPECIALS + ("a", "a"))
    with pytest.raises(PreimageError, match="does not agree"):
        Vocab.from_json({"idx_to_word": list(SPECIALS) + ["a"], "word_to_idx": {"a": 5}})
    with pytest.raises(PreimageError, match="not a vocabulary"):
        Vocab.from_json([1, 2])
