"""Caption metrics and the two baselines every captioner must beat.

- **BLEU-n** (Papineni et al. 2002): corpus-level modified n-gram precision up to order ``n`` with
  uniform weights and the brevity penalty, ``BLEU = BP · exp(Σ_{k≤n} (1/n) log p_k)``, computed by
  ``nltk.translate.bleu_score.corpus_bleu`` on lower-case word tokens (no smoothing). The notes
  report BLEU-1.
- **CIDEr** (Vedantam et al. 2015): TF-IDF weighted n-gram (n = 1..4) cosine similarity to the
  references, the IDF taken from the evaluated set's references — ``pycocoevalcap``'s CIDEr-D
  scorer, fed word-split strings (its Java PTB tokenizer is not used).

Baselines (:func:`most_frequent_caption`, :func:`nearest_neighbour_captions`):

- the most frequent caption of the training set, said of every image;
- the first caption of the training image nearest in feature space (Euclidean distance between the
  captioner's input features), a retrieval baseline in the spirit of Devlin et al. 2015.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch

from .vocab import Vocab, tokenize

__all__ = ["bleu", "cider", "caption_scores", "most_frequent_caption", "nearest_neighbour_captions"]


def bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]], *, max_n: int = 4) -> dict[str, float]:
    """``{"bleu1": ..., ..., "bleu{max_n}": ...}`` in [0, 1] (corpus BLEU, nltk)."""
    import warnings

    from nltk.translate.bleu_score import corpus_bleu

    _check(hypotheses, references)
    hyps = [tokenize(h) for h in hypotheses]
    refs = [[tokenize(r) for r in rs] for rs in references]
    out = {}
    with warnings.catch_warnings():  # nltk warns when an order has no overlap (the score is then 0)
        warnings.simplefilter("ignore", UserWarning)
        for n in range(1, max_n + 1):
            out[f"bleu{n}"] = float(corpus_bleu(refs, hyps, weights=tuple([1.0 / n] * n)))
    return out


def cider(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """CIDEr-D (pycocoevalcap), on word-split, lower-case captions; 0 for fewer than two images
    (the IDF of a one-image set is zero)."""
    from pycocoevalcap.cider.cider import Cider

    _check(hypotheses, references)
    gts = {i: [" ".join(tokenize(r)) for r in rs] for i, rs in enumerate(references)}
    res = {i: [" ".join(tokenize(h))] for i, h in enumerate(hypotheses)}
    if len(gts) < 2:
        return 0.0
    score, _ = Cider().compute_score(gts, res)
    return float(score)


def caption_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """BLEU-1..4 and CIDEr in one dict."""
    return {**bleu(hypotheses, references), "cider": cider(hypotheses, references)}


def _check(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    from ..errors import PreimageError

    if len(hypotheses) != len(references):
        raise PreimageError(f"{len(hypotheses)} captions for {len(references)} sets of references")
    if not hypotheses:
        raise PreimageError("no captions to score")
    if any(len(r) == 0 for r in references):
        raise PreimageError("an image has no reference caption")


def most_frequent_caption(captions: torch.Tensor, vocab: Vocab) -> str:
    """The caption (as words) that occurs most often in ``captions`` (ties: the first seen)."""
    counts = Counter(vocab.decode(c) for c in captions.tolist())
    return counts.most_common(1)[0][0]


def nearest_neighbour_captions(train_features: torch.Tensor, train_captions: torch.Tensor,
                               train_image_idx: torch.Tensor, query: torch.Tensor, vocab: Vocab,
                               *, chunk: int = 1024) -> list[str]:
    """For each query row, the first caption of its nearest training image (Euclidean distance)."""
    first = {}
    for row, i in enumerate(train_image_idx.tolist()):
        first.setdefault(i, row)
    has_caption = torch.tensor(sorted(first))
    bank = train_features[has_caption].float()
    out = []
    for s in range(0, query.shape[0], chunk):
        d = torch.cdist(query[s:s + chunk].float(), bank)
        for j in d.argmin(1).tolist():
            out.append(vocab.decode(train_captions[first[int(has_caption[j])]].tolist()))
    return out
