"""Training, evaluating and loading captioners, through the one training loop (:func:`preimage.train.fit`).

:class:`CaptionTask` is the :class:`~preimage.train.TrainTask` of a captioner: each step draws
``batch_size`` training captions (in an order drawn from the epoch's generator), computes the
temporal softmax loss with teacher forcing, clips the gradient norm and takes an Adam step; the
learning rate is ``lr · lr_decay^(epoch-1)`` (the assignment's schedule). After each epoch the
first ``eval_images`` validation images are captioned greedily and scored (BLEU-1..4, CIDEr).

The checkpoint holds the captioner (its vocabulary included, as the module's extra state) and
the PCA of the feature pipeline, so a run folder is all :func:`load_captioner` needs.

Example::

    from preimage.captioning.data import load_shapes
    from preimage.captioning.task import CaptionTask, TrainConfig
    from preimage.train import fit

    data = load_shapes()
    result = fit(CaptionTask(data, TrainConfig(cell="lstm")), "out/caption-lstm", epochs=15)
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import PreimageError
from .data import CaptionData, Split
from .features import PCA, FeaturePipeline, FeatureSpec
from .metrics import caption_scores
from .model import Captioner, CaptionerConfig
from .vocab import MAX_TOKENS, Vocab

__all__ = ["TrainConfig", "CaptionTask", "LoadedCaptioner", "load_captioner", "generate", "vocab_digest",
           "evaluate_split"]

KIND = "caption"


@dataclass
class TrainConfig:
    cell: str = "lstm"            # "rnn" or "lstm"
    wordvec_dim: int = 256        # word embedding size (the assignment's)
    hidden_dim: int = 512         # hidden state size (the assignment's)
    batch_size: int = 100         # captions per step
    lr: float = 5e-3              # Adam learning rate (the assignment's)
    lr_decay: float = 0.995       # learning rate multiplier per epoch (the assignment's)
    grad_clip: float = 5.0        # clip the gradient's global L2 norm (0: off); guards the vanilla RNN
    eval_images: int = 500        # validation images captioned after each epoch (0: no validation)
    beam_size: int = 1            # decoding for validation: 1 = greedy, k = beam search

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        from .cells import make_cell

        make_cell(self.cell, 1, 1)
        for name in ("wordvec_dim", "hidden_dim", "batch_size", "beam_size"):
            if int(getattr(self, name)) < 1:
                raise PreimageError(f"{name} must be >= 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise PreimageError("lr must be a positive number")
        if not 0 < self.lr_decay <= 1:
            raise PreimageError("lr_decay must be in (0, 1]")
        if self.grad_clip < 0 or self.eval_images < 0:
            raise PreimageError("grad_clip and eval_images must be >= 0")


def vocab_digest(vocab: Vocab) -> str:
    """A short hash of the word list (resume and evaluation check it)."""
    return hashlib.sha256(json.dumps(list(vocab.idx_to_word)).encode()).hexdigest()[:16]


class _WithVocab(Captioner):
    """A :class:`Captioner` that carries its word list in its state dict (as extra state)."""

    def __init__(self, config: CaptionerConfig, vocab: Vocab | None = None) -> None:
        super().__init__(config)
        self.words: Vocab | None = vocab

    def get_extra_state(self) -> dict[str, Any]:
        return {"idx_to_word": list(self.words.idx_to_word) if self.words is not None else []}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        words = state.get("idx_to_word") or []
        vocab = Vocab(tuple(words))
        if len(vocab) != self.config.vocab_size:
            raise PreimageError(f"the checkpoint's vocabulary has {len(vocab)} words, its network {self.config.vocab_size}")
        self.words = vocab


@torch.no_grad()
def generate(model: Captioner, vocab: Vocab, features: torch.Tensor, *, beam_size: int = 1,
             batch_size: int = 500) -> list[str]:
    """Captions (strings) for ``N x D`` features: greedy (``beam_size=1``) or beam search."""
    was = model.training
    model.eval()
    out: list[str] = []
    for s in range(0, features.shape[0], batch_size):
        f = features[s:s + batch_size]
        ids = model.sample(f) if beam_size <= 1 else model.beam_search(f, beam_size=beam_size)
        out += [vocab.decode(row) for row in ids.tolist()]
    model.train(was)
    return out


def evaluate_split(model: Captioner, vocab: Vocab, split: Split, *, images: int | None = None,
                   beam_size: int = 1) -> tuple[dict[str, float], list[str], list[list[str]]]:
    """Scores of the model's captions on the first ``images`` images of ``split`` (all: None)."""
    part = split if images is None or images >= split.num_images else split.subset(images)
    hyps = generate(model, vocab, part.features, beam_size=beam_size)
    refs = part.references(vocab)
    return caption_scores(hyps, refs), hyps, refs


class CaptionTask:
    """A :class:`~preimage.train.TrainTask` for the captioner (see the module docstring)."""

    kind = KIND

    def __init__(self, data: CaptionData, config: TrainConfig = TrainConfig(), *, seed: int = 0) -> None:
        config.validate()
        self.data = data
        self.train_config = config
        train = data.splits["train"]
        if train.captions.shape[0] == 0:
            raise PreimageError("there are no training captions")
        if train.captions.shape[1] != MAX_TOKENS:
            raise PreimageError(f"captions must have {MAX_TOKENS} tokens, not {train.captions.shape[1]}")
        self.model_config = CaptionerConfig(vocab_size=len(data.vocab), feature_dim=data.feature_dim,
                                            cell=config.cell, wordvec_dim=config.wordvec_dim,
                                            hidden_dim=config.hidden_dim)
        with torch.random.fork_rng(devices=[]):  # the initial weights depend on the seed only
            torch.manual_seed(seed)
            self.model = _WithVocab(self.model_config, data.vocab)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        pipeline = data.pipeline
        self.pca = pipeline.pca if pipeline is not None and pipeline.pca is not None else None

    # -- TrainTask -----------------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        mods: dict[str, nn.Module] = {"captioner": self.model}
        if self.pca is not None:
            mods["pca"] = self.pca
        return mods

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adam": self.optimizer}

    def config(self) -> dict[str, Any]:
        pipeline = self.data.pipeline
        return {
            "train": self.train_config.to_dict(), "model": asdict(self.model_config),
            "data": self.data.source, "vocab": vocab_digest(self.data.vocab),
            "features": None if pipeline is None else pipeline.spec.to_dict(),
            "pca_in": None if self.pca is None else int(self.pca.mean.shape[0]),
        }

    def num_batches(self) -> int:
        return -(-self.data.splits["train"].captions.shape[0] // self.train_config.batch_size)

    def batches(self, epoch: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
        for group in self.optimizer.param_groups:  # the schedule is a function of the epoch alone
            group["lr"] = self.train_config.lr * self.train_config.lr_decay ** (epoch - 1)
        n = self.data.splits["train"].captions.shape[0]
        order = torch.randperm(n, generator=generator)
        bs = self.train_config.batch_size
        for s in range(0, n, bs):
            yield order[s:s + bs]

    def train_step(self, batch: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
        train = self.data.splits["train"]
        caps = train.captions[batch]
        length = int((caps != 0).sum(1).max())  # drop all-<NULL> columns: fewer steps, same loss
        caps = caps[:, :max(length, 2)]
        feats = train.features[train.image_idx[batch]]
        loss = self.model.loss(feats, caps)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.train_config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.train_config.grad_clip)
        self.optimizer.step()
        return {"loss": float(loss.detach())}

    def end_epoch(self, epoch: int, out: Path) -> dict[str, float]:
        k = self.train_config.eval_images
        if k <= 0:
            return {}
        scores, hyps, refs = evaluate_split(self.model, self.data.vocab, self.data.splits["val"], images=k,
                                            beam_size=self.train_config.beam_size)
        from ..io import write_json

        names = self.data.splits["val"].names
        write_json(Path(out) / "val_samples.json", {"epoch": epoch, "samples": [
            {"image": names[i] if i < len(names) else i, "caption": hyps[i], "references": refs[i]}
            for i in range(min(12, len(hyps)))]})
        return {f"val_{k}": v for k, v in scores.items()}


# -- loading a trained captioner -----------------------------------------------------------------

@dataclass
class LoadedCaptioner:
    """A trained captioner from a run folder, with its vocabulary and (when it has one) the
    pipeline from pixels to features."""

    model: Captioner
    vocab: Vocab
    pipeline: FeaturePipeline | None
    config: dict[str, Any]
    epoch: int
    path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def caption_features(self, features: torch.Tensor, *, beam_size: int = 1) -> list[str]:
        return generate(self.model, self.vocab, features, beam_size=beam_size)

    def caption_pixels(self, pixels: torch.Tensor, *, beam_size: int = 1) -> list[str]:
        """Captions of ``N x 3 x S x S`` images in [0, 1] (resized by the caller to the pipeline's size)."""
        if self.pipeline is None:
            raise PreimageError(f"{self.path} was trained on precomputed features ({self.config['data'].get('kind')}); "
                                "it cannot caption image files")
        with torch.no_grad():
            feats = self.pipeline(pixels.to(self.pipeline.model.device)).cpu()
        return self.caption_features(feats, beam_size=beam_size)


def load_captioner(run: str | Path, *, model=None) -> LoadedCaptioner:
    """A captioner from a run folder (or its ``checkpoint.pt``); ``model`` replaces the zoo network
    of the feature pipeline (tests use a tiny one)."""
    from ..train import load_checkpoint

    ckpt = load_checkpoint(run, kind=KIND)
    cfg = ckpt.get("config") or {}
    try:
        mcfg = CaptionerConfig(**cfg["model"])
        net = _WithVocab(mcfg)
        net.load_state_dict(ckpt["modules"]["captioner"])
    except PreimageError:
        raise
    except (KeyError, TypeError, RuntimeError) as exc:
        raise PreimageError(f"{run}: the checkpoint does not hold a captioner this version can read "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    net.eval()
    vocab = net.words
    assert vocab is not None
    if vocab_digest(vocab) != cfg.get("vocab"):
        raise PreimageError(f"{run}: the vocabulary in the checkpoint does not match its configuration")
    pipeline = None
    if cfg.get("features") is not None and "pca" in ckpt["modules"]:
        spec = FeatureSpec(**cfg["features"])
        pca_state = ckpt["modules"]["pca"]
        pca = PCA(pca_state["mean"].shape[0], pca_state["components"].shape[1])
        pca.load_state_dict(pca_state)
        pipeline = FeaturePipeline(spec, model=model, pca=pca)
    path = Path(run)
    return LoadedCaptioner(net, vocab, pipeline, cfg, int(ckpt.get("epoch", 0)), path if path.is_dir() else path.parent)


def check_vocab(loaded: LoadedCaptioner, vocab: Vocab, source: str) -> None:
    """Refuse data whose vocabulary is not the one the captioner was trained with."""
    if vocab.idx_to_word != loaded.vocab.idx_to_word:
        first = next((i for i, (a, b) in enumerate(zip(vocab.idx_to_word, loaded.vocab.idx_to_word)) if a != b),
                     min(len(vocab), len(loaded.vocab)))
        raise PreimageError(f"the vocabulary of {source} ({len(vocab)} words) is not the checkpoint's "
                            f"({len(loaded.vocab)} words; they differ from index {first})")


