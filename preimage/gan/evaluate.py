"""Scoring a trained generator: the offline FD-LeNet / KID-LeNet and, where Inception weights can be had,
the standard FID / KID.

- :func:`train_classifier` trains the scoring LeNet on a labelled data set (``preimage gan classifier``);
- :func:`load_classifier` reads it back;
- :func:`inception_features` is Inception-v3's 2048 pool features as torchmetrics and torch-fidelity
  compute them (Heusel et al. 2017's FID network), from a weights file or downloaded once;
- :func:`score_run` samples ``n`` images from a ``preimage gan train`` run and compares them with ``n``
  training images of the run's data (``preimage gan score``).

FD-LeNet values are only comparable with FD-LeNet values of the same classifier; FID values with
other Inception FIDs at the same ``n`` (FID is biased upwards at small ``n``).
"""
from __future__ import annotations

import contextlib
import io
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import PreimageError

__all__ = ["train_classifier", "load_classifier", "inception_features", "InceptionFeatures", "score_run"]

#: the file torch-fidelity downloads for FID (its name in ~/.cache/torch/hub/checkpoints/)
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


def train_classifier(*, data: str, out: str | os.PathLike, epochs: int = 3, seed: int = 0,
                     data_root: str | os.PathLike | None = None, force: bool = False, progress: bool = False):
    """Train the scoring :class:`~preimage.gan.score.LeNet` on ``data`` (train split) into ``out``
    (checkpoint every epoch, exact resume). Returns the :class:`~preimage.train.FitResult` with the test
    accuracy of every epoch in its history."""
    from ..data import load_data
    from ..train import fit
    from .score import ClassifierConfig, ClassifierTask

    train, test = load_data(data, split="train", root=data_root), load_data(data, split="test", root=data_root)
    if train.labels is None or train.classes is None or test.labels is None:
        raise PreimageError(f"{data} has no class labels; the scoring classifier needs labelled data "
                            f"(a folder with one sub-folder per class, or a named data set)")
    cfg = ClassifierConfig(data=train.name, size=train.size, channels=train.channels, classes=len(train.classes),
                           init_seed=seed)
    return fit(ClassifierTask(train, test, cfg), out, epochs=epochs, seed=seed, force=force, progress=progress)


def load_classifier(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """The LeNet of a :func:`train_classifier` run (folder or checkpoint.pt), in eval mode, with its
    settings (``data``, ``size``, ``channels``, ``classes``) and its last test accuracy."""
    from ..train import load_checkpoint
    from .score import LeNet

    ckpt = load_checkpoint(path, kind="classifier")
    cfg = dict(ckpt["config"])
    net = LeNet(cfg["channels"], cfg["size"], cfg["classes"])
    try:
        net.load_state_dict(ckpt["modules"]["net"])
    except (RuntimeError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise PreimageError(f"{path}: the classifier weights do not fit a LeNet: {first[:160]}") from None
    epochs = ckpt.get("history", {}).get("epochs") or [{}]
    cfg["test_accuracy"] = epochs[-1].get("test_accuracy")
    return net.eval(), cfg


class InceptionFeatures(nn.Module):
    """Images in [0, 1] (1 or 3 channels, any size) -> Inception-v3's 2048 pool features, the way FID
    feeds them: 8-bit RGB, resized to 299 x 299 inside torch-fidelity's network."""

    num_features = 2048

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def train(self, mode: bool = True) -> "InceptionFeatures":
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.net((x.clamp(0, 1) * 255).round().to(torch.uint8)).reshape(x.shape[0], -1)


def inception_features(weights: str | os.PathLike | None = None) -> InceptionFeatures:
    """Inception-v3 for FID (torchmetrics' ``NoTrainInceptionV3``, torch-fidelity's weights).

    ``weights``: torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``; without it the weights
    are downloaded once (about 100 MB, no progress shown) into torch's hub cache. Raises :class:`PreimageError` in one line when
    torch-fidelity is missing, the weights cannot be downloaded, or the file does not hold them."""
    if weights is not None and not Path(weights).expanduser().is_file():
        raise PreimageError(f"no such Inception weights file: {weights}")
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
        from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE
    except ImportError as exc:  # pragma: no cover - torchmetrics is a dependency
        raise PreimageError(f"FID needs torchmetrics ({exc})") from None
    if not _TORCH_FIDELITY_AVAILABLE:
        raise PreimageError("FID needs torch-fidelity: pip install 'preimage[fid]'")
    path = None if weights is None else str(Path(weights).expanduser())
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # torch.hub's download banner and progress bar
            net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                     feature_extractor_weights_path=path)
    except (OSError, RuntimeError, ValueError, EOFError) as exc:  # URLError is an OSError
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        if path is not None:
            raise PreimageError(f"{weights} does not hold torch-fidelity's Inception weights ({reason})") from None
        raise PreimageError(f"could not download the Inception weights for FID ({reason}); offline, pass "
                            f"--inception-weights FILE ({INCEPTION_FILE}) or use FD-LeNet (--classifier)") from None
    return InceptionFeatures(net)


def score_run(run: str | os.PathLike, *, classifier: str | os.PathLike | None = None, inception: bool = False,
              inception_weights: str | os.PathLike | None = None, n: int = 10_000, seed: int = 0,
              data_root: str | os.PathLike | None = None, kid_subset_size: int = 1000) -> dict[str, Any]:
    """Score the generator of ``run`` against ``n`` training images of its data.

    With ``classifier`` (a :func:`train_classifier` run): FD-LeNet, KID-LeNet and the class histogram of
    the samples; with ``inception``: FID and KID on Inception-v3 features. Samples come from noise
    seeded with ``seed``; the real images are a seeded random subset. Returns a JSON-ready dict."""
    if classifier is None and not inception:
        raise PreimageError("nothing to score with: give a classifier (FD-LeNet) and/or inception=True (FID)")
    if n < 2:
        raise PreimageError(f"n must be at least 2, not {n}")
    from ..data import load_data
    from .sample import load_generator, sample
    from .score import class_histogram, frechet_kid

    t0 = time.perf_counter()
    lenet = lenet_cfg = None
    if classifier is not None:
        lenet, lenet_cfg = load_classifier(classifier)
    feats = inception_features(inception_weights) if inception else None  # fails before the sampling work
    G, cfg = load_generator(run)
    if lenet_cfg is not None and (lenet_cfg["size"], lenet_cfg["channels"]) != (cfg.size, cfg.channels):
        raise PreimageError(f"the classifier sees {lenet_cfg['channels']} x {lenet_cfg['size']} px images but the "
                            f"generator makes {cfg.channels} x {cfg.size} px ones")
    data = load_data(cfg.data, split="train", size=cfg.size, channels=cfg.channels, root=data_root)
    pixels = data.pixels()
    n = min(n, len(pixels))
    real = pixels[torch.randperm(len(pixels), generator=torch.Generator().manual_seed(seed + 1))[:n]]
    fake = torch.cat([sample(G, min(1000, n - i), noise_dim=cfg.noise_dim, seed=seed + i) for i in range(0, n, 1000)])
    out: dict[str, Any] = {"run": str(run), "data": cfg.data, "n": n, "seed": seed, "loss": cfg.loss,
                           "arch": cfg.arch}
    size = min(kid_subset_size, n)
    if lenet is not None:
        s = frechet_kid(lenet, real, fake, kid_subset_size=size, seed=seed)
        hist = class_histogram(lenet, fake, classes=lenet_cfg["classes"])
        out["lenet"] = {"classifier": str(classifier), "test_accuracy": lenet_cfg["test_accuracy"],
                        "fd": s["fd"], "kid": s["kid"], "kid_std": s["kid_std"],
                        "class_histogram": [round(h, 4) for h in hist], "min_class_fraction": round(min(hist), 4)}
    if feats is not None:
        s = frechet_kid(feats, real, fake, kid_subset_size=size, seed=seed, batch=100)
        out["inception"] = {"fid": s["fd"], "kid": s["kid"], "kid_std": s["kid_std"],
                            "weights": str(inception_weights) if inception_weights else "downloaded"}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out
