"""Image captioning with a vanilla RNN or an LSTM (CS231n assignment 3), trained and explained.

- :mod:`.cells` — the RNN and LSTM steps written out;
- :mod:`.model` — the captioner: feature -> h0, embedding, cell, vocabulary scores, loss, sampling;
- :mod:`.vocab` — ``<NULL> <START> <END> <UNK>``, at most 17 tokens;
- :mod:`.data`, :mod:`.features`, :mod:`.scenes` — the assignment's COCO files, COCO JSON + images,
  and the built-in procedural scenes;
- :mod:`.metrics` — BLEU, CIDEr, and the two baselines;
- :mod:`.task` — training through :func:`preimage.train.fit`; :mod:`.explain` — per-word saliency.
"""
from __future__ import annotations

from .cells import LSTMCell, RNNCell
from .model import Captioner, CaptionerConfig
from .vocab import MAX_TOKENS, Vocab

__all__ = ["RNNCell", "LSTMCell", "Captioner", "CaptionerConfig", "Vocab", "MAX_TOKENS"]
