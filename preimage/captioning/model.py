"""The captioner of CS231n assignment 3 (``CaptioningRNN``), in PyTorch.

For image features ``f`` (``N x D``) and captions of ``T + 1`` tokens::

    h_0      = W_proj f + b_proj                        (image feature -> initial hidden state)
    x_t      = W_embed[w_t]                             (word embedding, t = 0..T-1)
    h_{t+1}  = cell(x_t, h_t)                           (vanilla RNN or LSTM, :mod:`.cells`)
    s_{t+1}  = W_vocab h_{t+1} + b_vocab                (scores over the vocabulary)
    loss     = -(1/N) Σ_n Σ_t m_{n,t} log softmax(s_{n,t})[w_{n,t}]

with ``m = 0`` where the target word is ``<NULL>`` (the temporal softmax loss of the notes: summed
over time, averaged over the batch). Training uses teacher forcing: the input is the caption
without its last token (``captions[:, :-1]``), the target the caption without its first
(``captions[:, 1:]``). At test time :meth:`Captioner.sample` starts from ``<START>`` and feeds each
greedily chosen word back in, up to ``max_length`` words; :meth:`Captioner.beam_search` keeps the
``k`` most probable partial captions instead (Sutskever et al. 2014; Vinyals et al. 2015, "Show and
tell", use the same model with beam search).

Karpathy & Fei-Fei 2015 ("Deep visual-semantic alignments") and Vinyals et al. 2015 are the papers
behind the assignment.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .cells import make_cell
from .vocab import MAX_TOKENS

__all__ = ["CaptionerConfig", "Captioner", "temporal_softmax_loss"]

NULL_ID, START_ID, END_ID = 0, 1, 2


@dataclass
class CaptionerConfig:
    vocab_size: int                 # words, the four special tokens included
    feature_dim: int = 512          # image feature size (512 after PCA, as in the assignment)
    cell: str = "lstm"              # "rnn" (tanh) or "lstm"
    wordvec_dim: int = 256          # word embedding size (the assignment's default)
    hidden_dim: int = 512           # hidden state size (the assignment's default)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def temporal_softmax_loss(scores: torch.Tensor, targets: torch.Tensor, *, ignore: int = NULL_ID) -> torch.Tensor:
    """``-(1/N) Σ_{n,t} [y_{n,t} ≠ ignore] log softmax(scores_{n,t})[y_{n,t}]`` for ``N x T x V`` scores."""
    n = scores.shape[0]
    logp = F.log_softmax(scores.float(), dim=-1)
    picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    mask = targets != ignore
    return -(picked * mask).sum() / n


class Captioner(nn.Module):
    """Image feature -> caption, with a vanilla RNN or an LSTM (see the module docstring)."""

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        self.config = config
        self.proj = nn.Linear(config.feature_dim, config.hidden_dim)
        self.embed = nn.Embedding(config.vocab_size, config.wordvec_dim)
        self.cell = make_cell(config.cell, config.wordvec_dim, config.hidden_dim)
        self.vocab = nn.Linear(config.hidden_dim, config.vocab_size)

    def forward(self, features: torch.Tensor, captions_in: torch.Tensor) -> torch.Tensor:
        """Scores ``N x T x V`` for every next word, given the words so far (teacher forcing)."""
        h = self.proj(features)
        state = self.cell.initial_state(h)
        x = self.embed(captions_in)
        hs = []
        for t in range(captions_in.shape[1]):
            h, state = self.cell(x[:, t], state)
            hs.append(h)
        return self.vocab(torch.stack(hs, 1))

    def loss(self, features: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        """The temporal softmax loss of ``N x (T+1)`` captions (``<START> ... <END> <NULL>...``)."""
        return temporal_softmax_loss(self(features, captions[:, :-1]), captions[:, 1:])

    def word_logprobs(self, features: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        """``log p(w_{t+1} | image, w_0..w_t)`` for each position of ``N x (T+1)`` captions (``N x T``)."""
        scores = self(features, captions[:, :-1])
        return F.log_softmax(scores.float(), -1).gather(-1, captions[:, 1:].unsqueeze(-1)).squeeze(-1)

    @torch.no_grad()
    def sample(self, features: torch.Tensor, *, max_length: int = MAX_TOKENS - 2) -> torch.Tensor:
        """Greedy decoding: ``N x max_length`` word indices (``<NULL>`` after a caption's ``<END>``)."""
        n = features.shape[0]
        state = self.cell.initial_state(self.proj(features))
        word = torch.full((n,), START_ID, dtype=torch.long, device=features.device)
        out = torch.full((n, max_length), NULL_ID, dtype=torch.long, device=features.device)
        done = torch.zeros(n, dtype=torch.bool, device=features.device)
        for t in range(max_length):
            h, state = self.cell(self.embed(word), state)
            word = self.vocab(h).argmax(-1)
            out[:, t] = torch.where(done, torch.full_like(word, NULL_ID), word)
            done |= word == END_ID
            if bool(done.all()):
                break
        return out

    @torch.no_grad()
    def beam_search(self, features: torch.Tensor, *, beam_size: int = 3, max_length: int = MAX_TOKENS - 2,
                    length_penalty: float = 0.0) -> torch.Tensor:
        """Beam search: the most probable caption among ``beam_size`` hypotheses kept at each step.

        A finished hypothesis (one that emitted ``<END>``) is ranked by ``log p / L^α`` with ``L``
        its number of tokens and ``α = length_penalty`` (0: plain log-probability). ``beam_size=1``
        is greedy decoding. Returns ``N x max_length`` indices like :meth:`sample`."""
        if beam_size <= 1:
            return self.sample(features, max_length=max_length)
        n, k, dev = features.shape[0], beam_size, features.device
        vsize = self.config.vocab_size
        h0 = self.proj(features).repeat_interleave(k, 0)          # (N·K) x H
        state = self.cell.initial_state(h0)
        word = torch.full((n * k,), START_ID, dtype=torch.long, device=dev)
        score = torch.full((n, k), float("-inf"), device=dev)
        score[:, 0] = 0.0                                          # one live hypothesis to start
        seqs = torch.full((n, k, 0), NULL_ID, dtype=torch.long, device=dev)
        best = torch.full((n, max_length), NULL_ID, dtype=torch.long, device=dev)
        best_score = torch.full((n,), float("-inf"), device=dev)
        for t in range(max_length):
            h, state = self.cell(self.embed(word), state)
            logp = F.log_softmax(self.vocab(h).float(), -1).view(n, k, vsize)
            total = (score.unsqueeze(-1) + logp).view(n, k * vsize)
            # finished hypotheses: candidates ending in <END> now
            end_scores = total.view(n, k, vsize)[:, :, END_ID] / float(t + 1) ** length_penalty
            cand, cand_beam = end_scores.max(1)
            better = cand > best_score
            if bool(better.any()):
                rows = better.nonzero().squeeze(1)
                prefix = seqs[rows, cand_beam[rows]]
                best[rows] = NULL_ID
                best[rows, :t] = prefix
                best[rows, t] = END_ID
                best_score[rows] = cand[rows]
            # live hypotheses: the k best continuations that are not <END>
            total.view(n, k, vsize)[:, :, END_ID] = float("-inf")
            score, flat = total.topk(k, dim=1)
            beam, word = flat // vsize, flat % vsize
            seqs = torch.cat([seqs.gather(1, beam.unsqueeze(-1).expand(-1, -1, seqs.shape[2])), word.unsqueeze(-1)], 2)
            index = (beam + torch.arange(n, device=dev).unsqueeze(1) * k).view(-1)
            state = state[index] if isinstance(state, torch.Tensor) else tuple(s[index] for s in state)
            word = word.view(-1)
            # stop when no live hypothesis can beat a finished one (log-probabilities only fall)
            if length_penalty == 0.0 and bool((score.max(1).values <= best_score).all()):
                break
        unfinished = torch.isinf(best_score)                        # never emitted <END>: take the top live beam
        if bool(unfinished.any()):
            rows = unfinished.nonzero().squeeze(1)
            best[rows, :seqs.shape[2]] = seqs[rows, 0]
        return best
