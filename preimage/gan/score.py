"""An offline quality score for generators: Fréchet distance and KID on a locally trained classifier.

Inception weights cannot be downloaded everywhere, so the features come from a small classifier
trained here on the same data (:class:`LeNet`); the scores are therefore called **FD-LeNet** and
**KID-LeNet**, never FID/KID: their values are not comparable with Inception-based numbers.

- Fréchet distance (Heusel et al. 2017, https://arxiv.org/abs/1706.08500) between Gaussians fitted
  to the features of two image sets: ``||μ_r - μ_g||² + Tr(Σ_r + Σ_g - 2 (Σ_r Σ_g)^½)``.
- Kernel inception distance (Bińkowski et al. 2018, https://arxiv.org/abs/1801.01401): the unbiased
  MMD² with the cubic polynomial kernel ``k(x, y) = (xᵀy / d + 1)³``, mean and std over random
  subsets.

Both statistics are computed by torchmetrics (``FrechetInceptionDistance`` /
``KernelInceptionDistance`` with the classifier as their feature module). The class histogram of
generated samples under the same classifier shows mode coverage.

The classifier (``LeNet``: conv 32@3 -> ReLU -> pool -> conv 64@3 -> ReLU -> pool -> FC 128 -> ReLU
-> FC 10, after LeCun et al. 1998) is trained by :class:`ClassifierTask` through
:func:`preimage.train.fit`; its 128 penultimate activations are the features.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import ImageData

__all__ = ["LeNet", "LeNetFeatures", "ClassifierConfig", "ClassifierTask", "frechet_kid", "class_histogram",
           "accuracy", "predict"]


class LeNet(nn.Module):
    """A LeNet-style classifier of ``C x S x S`` images in [0, 1]; :meth:`features` gives the 128
    penultimate activations."""

    num_features = 128

    def __init__(self, channels: int = 1, size: int = 28, classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * (size // 4) ** 2, self.num_features), nn.ReLU(),
        )
        self.head = nn.Linear(self.num_features, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x * 2 - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class LeNetFeatures(nn.Module):
    """The feature module torchmetrics calls: images in [0, 1] -> ``N x 128`` (eval mode, no grad)."""

    def __init__(self, net: LeNet):
        super().__init__()
        self.net = net
        self.num_features = net.num_features

    def train(self, mode: bool = True) -> "LeNetFeatures":
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x.float())


class _GivenFeatures(nn.Module):
    """The identity as torchmetrics' feature module: the features are computed once, outside."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return f


@dataclass
class ClassifierConfig:
    """Training settings of the scoring classifier."""

    data: str = "fashion-mnist"  # what it learns to classify (the GAN's data)
    size: int = 28               # image side
    channels: int = 1            # image channels
    classes: int = 10            # number of classes
    batch_size: int = 128        # images per step
    lr: float = 1e-3             # Adam learning rate
    init_seed: int = 0           # seeds the initial weights


class ClassifierTask:
    """Cross-entropy training of :class:`LeNet` on labelled data (a :class:`preimage.train.TrainTask`);
    ``end_epoch`` reports the test accuracy."""

    kind = "classifier"

    def __init__(self, train: ImageData, test: ImageData, config: ClassifierConfig | None = None):
        if train.labels is None or train.classes is None:
            raise ValueError("the scoring classifier needs labelled data")
        self.cfg = config or ClassifierConfig(data=train.name, size=train.size, channels=train.channels,
                                              classes=len(train.classes))
        self.train_data, self.test_data = train, test
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.init_seed)
            self.net = LeNet(self.cfg.channels, self.cfg.size, self.cfg.classes)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=self.cfg.lr)

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"net": self.opt}

    def config(self) -> dict[str, Any]:
        return asdict(self.cfg)

    def num_batches(self) -> int:
        return self.train_data.num_batches(self.cfg.batch_size, drop_last=False)

    def batches(self, epoch: int, generator: torch.Generator) -> Iterable[Any]:
        return self.train_data.batches(self.cfg.batch_size, generator, drop_last=False)

    def train_step(self, batch: Any, generator: torch.Generator) -> dict[str, float]:
        x, y = batch
        self.net.train()
        self.opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.net(x), y)
        loss.backward()
        self.opt.step()
        return {"loss": float(loss.detach())}

    def end_epoch(self, epoch: int, out: Path) -> dict[str, float]:
        return {"test_accuracy": accuracy(self.net, self.test_data)}


@torch.no_grad()
def predict(net: LeNet, images: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """Predicted class of each image (``N x C x S x S`` in [0, 1])."""
    net.eval()
    return torch.cat([net(images[i:i + batch].float()).argmax(1) for i in range(0, len(images), batch)])


def accuracy(net: LeNet, data: ImageData) -> float:
    """Fraction of ``data`` classified correctly."""
    assert data.labels is not None
    return float((predict(net, data.pixels()) == data.labels).float().mean())


def class_histogram(net: LeNet, images: torch.Tensor, classes: int = 10) -> list[float]:
    """Fraction of ``images`` assigned to each class (mode coverage of a generator)."""
    counts = torch.bincount(predict(net, images), minlength=classes).float()
    return (counts / counts.sum()).tolist()


def frechet_kid(net: nn.Module, real: torch.Tensor, fake: torch.Tensor, *, kid_subsets: int = 100,
                kid_subset_size: int = 1000, seed: int = 0, batch: int = 1000) -> dict[str, float]:
    """FD-LeNet and KID-LeNet (mean, std) between two image sets in [0, 1] (``N x C x S x S``); ``net`` is
    a :class:`LeNet` or any feature module with a ``num_features`` attribute (e.g.
    :class:`preimage.gan.evaluate.InceptionFeatures`: then they are FID and KID).

    ``kid_subset_size`` is capped at the smaller set; KID's subsets are drawn from a torch RNG
    seeded with ``seed`` (the caller's global RNG state is restored afterwards)."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    feats = (LeNetFeatures(net) if isinstance(net, LeNet) else net).eval()
    size = min(kid_subset_size, len(real), len(fake))
    with torch.no_grad():  # each image through the network once; both metrics read the same features
        f_real, f_fake = ([feats(images[i:i + batch].float()) for i in range(0, len(images), batch)]
                          for images in (real, fake))
    given = _GivenFeatures(feats.num_features)
    fid = FrechetInceptionDistance(feature=given)
    with warnings.catch_warnings():  # "KID keeps every feature in memory": 128 floats per image here
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=given, subsets=kid_subsets, subset_size=size)
    for metric in (fid, kid):
        for chunks, is_real in ((f_real, True), (f_fake, False)):
            for f in chunks:
                metric.update(f, real=is_real)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return {"fd": float(fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std)}
