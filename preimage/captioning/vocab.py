"""Words <-> indices, with the conventions of the CS231n captioning data.

- indices 0..3 are ``<NULL> <START> <END> <UNK>`` (padding, start, end, out-of-vocabulary);
- a caption is at most ``MAX_TOKENS = 17`` indices: ``<START>``, up to 15 words, ``<END>``, then
  ``<NULL>`` padding to 17;
- words are lower-cased runs of letters and digits (:func:`tokenize`); punctuation is dropped.

The JSON form is the assignment's ``coco2014_vocab.json``: ``{"idx_to_word": [...],
"word_to_idx": {...}}``.
"""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import PreimageError

__all__ = ["NULL", "START", "END", "UNK", "SPECIALS", "MAX_TOKENS", "Vocab", "tokenize", "CaptionTooLong"]

NULL, START, END, UNK = "<NULL>", "<START>", "<END>", "<UNK>"
SPECIALS = (NULL, START, END, UNK)
#: the longest encoded caption: <START> + 15 words + <END>
MAX_TOKENS = 17

_WORD = re.compile(r"[a-z0-9]+")


class CaptionTooLong(PreimageError):
    """A caption has more words than fit in ``MAX_TOKENS``."""


def tokenize(text: str) -> list[str]:
    """``"A red circle, left."`` -> ``["a", "red", "circle", "left"]``."""
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class Vocab:
    """An ordered list of words; ``idx_to_word[0:4]`` must be :data:`SPECIALS`."""

    idx_to_word: tuple[str, ...]
    word_to_idx: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        words = tuple(self.idx_to_word)
        object.__setattr__(self, "idx_to_word", words)
        if words[:4] != SPECIALS:
            raise PreimageError(f"a vocabulary must start with {' '.join(SPECIALS)} (indices 0-3), "
                                f"not {' '.join(map(str, words[:4]))}")
        if len(set(words)) != len(words):
            dup = next(w for w, n in Counter(words).items() if n > 1)
            raise PreimageError(f"the vocabulary lists {dup!r} twice")
        object.__setattr__(self, "word_to_idx", {w: i for i, w in enumerate(words)})

    def __len__(self) -> int:
        return len(self.idx_to_word)

    @classmethod
    def build(cls, captions: Iterable[str], *, min_count: int = 1) -> "Vocab":
        """Every word used at least ``min_count`` times, most frequent first (ties alphabetical)."""
        counts = Counter(w for c in captions for w in tokenize(c))
        words = sorted((w for w, n in counts.items() if n >= min_count and w not in SPECIALS),
                       key=lambda w: (-counts[w], w))
        return cls(SPECIALS + tuple(words))

    def encode(self, caption: str | Sequence[str], *, max_tokens: int = MAX_TOKENS, truncate: bool = False
               ) -> list[int]:
        """``"a red circle"`` -> ``[1, i(a), i(red), i(circle), 2, 0, ..., 0]`` (length ``max_tokens``).

        Unknown words become ``<UNK>``. A caption with more than ``max_tokens - 2`` words raises
        :class:`CaptionTooLong` unless ``truncate`` (then the extra words are dropped)."""
        words = tokenize(caption) if isinstance(caption, str) else list(caption)
        room = max_tokens - 2
        if len(words) > room:
            if not truncate:
                text = caption if isinstance(caption, str) else " ".join(words)
                raise CaptionTooLong(f"caption has {len(words)} words, more than the {room} that fit in "
                                     f"{max_tokens} tokens: {text[:60]!r}")
            words = words[:room]
        unk = self.word_to_idx[UNK]
        ids = [self.word_to_idx[START]] + [self.word_to_idx.get(w, unk) for w in words] + [self.word_to_idx[END]]
        return ids + [self.word_to_idx[NULL]] * (max_tokens - len(ids))

    def encode_batch(self, captions: Sequence[str], **kw) -> torch.Tensor:
        return torch.tensor([self.encode(c, **kw) for c in captions], dtype=torch.long)

    def words(self, ids: Iterable[int]) -> list[str]:
        """Indices -> words, stopping at ``<END>`` and leaving out ``<NULL>`` and ``<START>``."""
        out = []
        for i in ids:
            i = int(i)
            if i == 2:
                break
            if i in (0, 1):
                continue
            if not 0 <= i < len(self.idx_to_word):
                raise PreimageError(f"word index {i} is outside the vocabulary (0..{len(self) - 1})")
            out.append(self.idx_to_word[i])
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Indices -> the caption as a string of words."""
        return " ".join(self.words(ids))

    def to_json(self) -> dict[str, object]:
        return {"idx_to_word": list(self.idx_to_word), "word_to_idx": dict(self.word_to_idx)}

    @classmethod
    def from_json(cls, data: object, *, source: str = "vocabulary") -> "Vocab":
        """From the assignment's form (``idx_to_word`` list, optional ``word_to_idx`` that must agree)."""
        if not isinstance(data, dict) or not isinstance(data.get("idx_to_word"), list):
            raise PreimageError(f"{source}: not a vocabulary (expected a JSON object with an idx_to_word list)")
        words = data["idx_to_word"]
        if not all(isinstance(w, str) for w in words):
            raise PreimageError(f"{source}: idx_to_word must be a list of strings")
        vocab = cls(tuple(words))
        w2i = data.get("word_to_idx")
        if w2i is not None:
            if not isinstance(w2i, dict) or any(vocab.word_to_idx.get(w) != i for w, i in w2i.items()) \
                    or len(w2i) != len(vocab):
                raise PreimageError(f"{source}: word_to_idx does not agree with idx_to_word")
        return vocab

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocab":
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise PreimageError(f"no such file: {p}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise PreimageError(f"cannot read {p}: {exc}") from None
        except json.JSONDecodeError as exc:
            raise PreimageError(f"{p} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
        return cls.from_json(data, source=str(p))
