"""Which pixels made the captioner say each word: per-word gradient saliency through the whole chain.

For a caption ``w_1 .. w_T`` generated for image ``x``, the map of word ``t`` is the vanilla
saliency of Simonyan, Vedaldi & Zisserman (2014) applied to that word's log-probability::

    M_t(i, j) = max_k | ∂ log p(w_t | x, w_1 .. w_{t-1}) / ∂x(k, i, j) |

where the gradient flows through the captioner, the PCA, the pooling and the frozen zoo network
down to the pixels. The earlier words are held fixed (teacher forcing on the generated caption), so
``M_t`` shows what in the image the choice of ``w_t`` depended on — the object that made it say
"red", the side that made it say "left". All ``T`` words are explained in one batched
forward/backward pass (the image repeated ``T`` times), through the engine's
:func:`~preimage.optimize.forward_state` on a :class:`~preimage.params.Pixels` parameter, as
:mod:`preimage.tasks.saliency` does for class scores.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import PreimageError

__all__ = ["WordSaliency", "explain_caption"]


@dataclass
class WordSaliency:
    """One image's caption with a saliency map (``H x W``, non-negative, unscaled) per word."""

    image: torch.Tensor          # 3 x H x W in [0, 1]
    words: list[str]             # the generated words (<END> not included)
    logprobs: list[float]        # log p(w_t | image, earlier words)
    maps: torch.Tensor           # T x H x W

    @property
    def caption(self) -> str:
        return " ".join(self.words)

    def picture(self, *, cmap: str = "inferno", percentile: float = 99.0, ncols: int = 6, size: int = 192):
        """A Pillow image: the caption on top, then the image and one overlay per word (labelled
        with the word and its log-probability), each shown at ``size`` pixels."""
        import torch.nn.functional as F
        from PIL import Image, ImageDraw

        from ..viz import _font, grid, normalize_map, overlay

        def up(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t[None].float(), size=(size, size), mode="bilinear", align_corners=False)[0]

        image = up(self.image).clamp(0, 1)
        cells = [image]
        labels = ["image"]
        for t, w in enumerate(self.words):
            m = normalize_map(up(self.maps[t][None])[0], percentile=percentile)
            cells.append(overlay(image, m, cmap=cmap))
            labels.append(f"{w} ({self.logprobs[t]:.2f})")
        body = grid(cells, ncols=min(ncols, len(cells)), labels=labels, font_size=13)
        font = _font(15)
        canvas = Image.new("RGB", (body.width, body.height + 26), (255, 255, 255))
        ImageDraw.Draw(canvas).text((6, 5), self.caption or "(empty caption)", fill=(0, 0, 0), font=font)
        canvas.paste(body, (0, 26))
        return canvas


def explain_caption(loaded, pixels: torch.Tensor, *, beam_size: int = 1) -> WordSaliency:
    """Caption one image (``1 x 3 x S x S`` or ``3 x S x S``, [0, 1]) and explain every word.

    ``loaded``: a :class:`~preimage.captioning.task.LoadedCaptioner` with a feature pipeline."""
    from ..layers import FeatureExtractor
    from ..optimize import forward_state
    from ..params import Pixels

    pipeline = loaded.pipeline
    if pipeline is None:
        raise PreimageError("this captioner was trained on precomputed features; there are no pixels to explain")
    x = pixels if pixels.dim() == 4 else pixels.unsqueeze(0)
    if x.shape[0] != 1:
        raise PreimageError("explain one image at a time")
    net = pipeline.model
    x = x.to(net.device).float()
    with torch.no_grad():
        feats = pipeline(x)
    vocab = loaded.vocab
    ids = (loaded.model.sample(feats) if beam_size <= 1 else loaded.model.beam_search(feats, beam_size=beam_size))[0]
    words_ids = []
    for i in ids.tolist():
        if i == 2 or i == 0:
            break
        words_ids.append(i)
    if not words_ids:
        return WordSaliency(x[0].cpu(), [], [], torch.zeros(0, *x.shape[-2:]))
    t = len(words_ids)
    caps = torch.tensor([[1, *words_ids]] * t, device=x.device)
    param = Pixels(x.repeat(t, 1, 1, 1))
    state = forward_state(param, net, FeatureExtractor(net, [pipeline.spec.layer]))
    f = pipeline.pca(pipeline.pool(state.features[pipeline.spec.layer]))
    lp = loaded.model.word_logprobs(f, caps)             # t x t: row r, column c = log p(w_c) for copy r
    chosen = lp.diagonal()                                 # copy r explains word r
    chosen.sum().backward()
    grad = param.x.grad.detach()
    return WordSaliency(
        image=x[0].detach().cpu(), words=vocab.words(words_ids), logprobs=[float(v) for v in chosen.detach()],
        maps=grad.abs().amax(1).cpu())
