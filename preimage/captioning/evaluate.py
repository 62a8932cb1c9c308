"""Score a trained captioner on a split, beside the two baselines (``preimage caption eval DIR``).

The run folder's configuration names the data it was trained on; the same data is rebuilt (the
features come from the cache), its vocabulary is checked against the checkpoint's, and the
captioner, the most-frequent-caption baseline and the nearest-neighbour baseline are scored with
BLEU-1..4 and CIDEr (:mod:`.metrics`) on every image of the split.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .data import default_cache_dir, load_source
from .features import FeatureSpec
from .metrics import caption_scores, most_frequent_caption, nearest_neighbour_captions
from .task import check_vocab, generate, load_captioner

__all__ = ["evaluate_run"]


def evaluate_run(run: str | os.PathLike, *, split: str = "test", beam_size: int = 1,
                 cache_dir: str | os.PathLike | None = None, model=None, examples: int = 24,
                 progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """A JSON-able report: scores of the captioner and both baselines, and example captions."""
    loaded = load_captioner(run, model=model)
    cfg = loaded.config
    spec = FeatureSpec(**cfg["features"]) if cfg.get("features") else None
    data = load_source(cfg["data"], spec=spec, model=model, cache_dir=cache_dir or default_cache_dir(),
                       progress=progress)
    check_vocab(loaded, data.vocab, f"the {cfg['data'].get('kind')} data")
    part = data.splits[split]
    train = data.splits["train"]
    refs = part.references(data.vocab)
    t0 = time.perf_counter()
    hyps = generate(loaded.model, loaded.vocab, part.features, beam_size=beam_size)
    seconds = time.perf_counter() - t0
    frequent = most_frequent_caption(train.captions, data.vocab)
    nearest = nearest_neighbour_captions(train.features, train.captions, train.image_idx, part.features, data.vocab)
    cell = cfg["model"]["cell"]
    scores = {
        f"{cell} ({'greedy' if beam_size <= 1 else f'beam {beam_size}'})": caption_scores(hyps, refs),
        "most frequent caption": caption_scores([frequent] * len(refs), refs),
        "nearest neighbour": caption_scores(nearest, refs),
    }
    exact = sum(h in r for h, r in zip(hyps, refs))
    return {
        "run": str(Path(run)), "epoch": loaded.epoch, "split": split, "images": len(refs), "beam": beam_size,
        "data": cfg["data"], "scores": scores, "most_frequent_caption": frequent,
        "exact_match": exact / max(1, len(refs)), "decode_seconds": round(seconds, 3),
        "examples": [{"image": part.names[i] if i < len(part.names) else i, "caption": hyps[i],
                      "nearest_neighbour": nearest[i], "references": refs[i], "matches_a_reference": hyps[i] in refs[i]}
                     for i in range(min(examples, len(refs)))],
    }
