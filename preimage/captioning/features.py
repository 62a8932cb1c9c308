"""Image features for the captioner: a zoo network, pooled, then PCA.

The assignment feeds the captioner VGG-16 ``fc7`` activations reduced from 4096 to 512 numbers by
PCA. Here any zoo model plays VGG's part (default: the embedded EfficientNet-Lite0, whose weights
work offline)::

    a = layer(model(image))                 C x h x w activations of ``layer`` (default ``head``)
    p = adaptive_avg_pool(a, grid)          C x grid x grid, flattened (grid=1: global average pooling)
    f = (p - μ) Vₖ                          the first k principal directions of the training images

A 2 x 2 grid (the default) keeps a coarse layout (which half of the image an object is in) that
global average pooling throws away; captions that say "left of" need it.

:class:`FeaturePipeline` is differentiable end to end, so a caption's log-probability can be traced
back to the pixels (:mod:`.explain`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FeatureSpec", "PCA", "FeaturePipeline"]


@dataclass(frozen=True)
class FeatureSpec:
    model: str = "efficientnet_lite0"  # zoo name of the frozen image network (embedded weights, offline)
    layer: str = "head"                # layer whose activations are pooled (lite0: after conv_head, 1280 ch)
    grid: int = 2                      # adaptive average pooling to grid x grid cells (1 = global pooling)
    input_size: int = 128              # images are resized and centre-cropped to this many pixels
    pca_dim: int = 512                 # PCA components kept (the assignment's 512)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class PCA(nn.Module):
    """``x -> (x - mean) @ components`` with ``components`` the top-k right singular vectors."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim_in))
        self.register_buffer("components", torch.zeros(dim_in, dim_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) @ self.components

    @classmethod
    def fit(cls, x: torch.Tensor, k: int, *, seed: int = 0) -> "PCA":
        """The first ``k`` principal directions of the rows of ``x`` (randomized SVD, Halko et al.
        2011, through ``torch.pca_lowrank``; its random projections are drawn from ``seed``).
        ``k`` is capped at ``min(rows, columns)``."""
        x = x.double()
        k = max(1, min(k, x.shape[0], x.shape[1]))
        mean = x.mean(0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _, _, v = torch.pca_lowrank(x - mean, q=min(k + 10, *x.shape), center=False, niter=4)
        v = v[:, :k]
        # fix each direction's sign (largest entry positive): the same data gives the same features
        sign = torch.sign(v.gather(0, v.abs().argmax(0, keepdim=True)))
        pca = cls(x.shape[1], k)
        pca.mean.copy_(mean.float())
        pca.components.copy_((v * sign).float())
        return pca


class FeaturePipeline(nn.Module):
    """Pixels (``N x 3 x S x S`` in [0, 1]) -> captioner features, through a frozen zoo model."""

    def __init__(self, spec: FeatureSpec, model=None, pca: PCA | None = None) -> None:
        super().__init__()
        self.spec = spec
        self._model = model
        self._extractor = None
        self.pca = pca

    @property
    def model(self):
        """The zoo network (loaded on first use with its default weights)."""
        if self._model is None:
            from ..models import load_model

            self._model = load_model(self.spec.model, input_size=self.spec.input_size)
        return self._model

    def pooled(self, pixels: torch.Tensor, *, network_input: bool = False) -> torch.Tensor:
        """``N x (C·grid²)``: the layer's activations, average-pooled to the grid and flattened.
        ``network_input=True`` when ``pixels`` is already normalized for the network."""
        from ..layers import FeatureExtractor

        if self._extractor is None:
            self._extractor = FeatureExtractor(self.model, [self.spec.layer])
        x = pixels if network_input else self.model.normalize(pixels)
        return self.pool(self._extractor(x)[self.spec.layer])

    def pool(self, activations: torch.Tensor) -> torch.Tensor:
        """``N x C x h x w`` activations -> ``N x (C·grid²)`` (2-D activations pass through)."""
        if activations.dim() == 2:
            return activations
        return F.adaptive_avg_pool2d(activations, self.spec.grid).flatten(1)

    def forward(self, pixels: torch.Tensor, *, network_input: bool = False) -> torch.Tensor:
        if self.pca is None:
            raise RuntimeError("the PCA of this pipeline has not been fitted")
        return self.pca(self.pooled(pixels, network_input=network_input))

    @torch.no_grad()
    def pooled_batches(self, load: Callable[[int], torch.Tensor], count: int, *, batch_size: int = 64,
                       progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """Pooled features of ``count`` images, ``load(i)`` giving image ``i`` (``3 x S x S``)."""
        rows = []
        for s in range(0, count, batch_size):
            idx = range(s, min(count, s + batch_size))
            batch = torch.stack([load(i) for i in idx]).to(self.model.device)
            rows.append(self.pooled(batch).float().cpu())
            if progress is not None:
                progress(len(idx))
        return torch.cat(rows) if rows else torch.zeros(0, 0)

    def fit_pca(self, train_pooled: torch.Tensor, *, seed: int = 0) -> PCA:
        self.pca = PCA.fit(train_pooled, self.spec.pca_dim, seed=seed)
        return self.pca

    @staticmethod
    def spec_from(data: dict[str, object] | None) -> FeatureSpec | None:
        return None if data is None else FeatureSpec(**data)  # type: ignore[arg-type]


def image_tensor(img, size: int) -> torch.Tensor:
    """A Pillow image -> ``3 x size x size`` in [0, 1] (short side resized, centre-cropped)."""
    from ..images import to_tensor

    return to_tensor(img, size)[0]


