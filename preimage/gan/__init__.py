"""Generative adversarial networks: vanilla GAN, least-squares GAN and DCGAN, as the CS231n notes
teach them, trained by :func:`preimage.train.fit`, scored offline, and inverted.

>>> from preimage import gan
>>> res = gan.train(data="digits", loss="ls", arch="dc", epochs=5, out="out/gan-digits")
>>> G, cfg = gan.load_generator("out/gan-digits")
>>> images = gan.sample(G, 64, noise_dim=cfg.noise_dim)          # 64 x 1 x 28 x 28 in [0, 1]
>>> inv = gan.invert("out/gan-digits", images[:4])                # pre-images: z with G(z) ≈ image
>>> gan.train_classifier(data="digits", out="out/lenet-digits")     # the scoring classifier
>>> gan.score("out/gan-digits", classifier="out/lenet-digits")      # FD-LeNet, KID-LeNet, class histogram

Modules: :mod:`.losses` (the notes' four losses), :mod:`.nets` (FC and DC pairs), :mod:`.task`
(the training step), :mod:`.sample`, :mod:`.score` (FD-LeNet, KID-LeNet, class histogram),
:mod:`.evaluate` (scoring a run; FID with Inception weights), :mod:`.inversion` (GAN inversion
through :func:`preimage.optimize`).
"""
from __future__ import annotations

import os
from typing import Any

# `score` is both a submodule and a function here: load the submodule now, so that the function
# defined below replaces it as the package's attribute and a later `from .score import ...` (by
# train_classifier and the scoring code) cannot put the module back in its place.
from . import score as _score_module  # noqa: F401
from .losses import LOSSES, discriminator_loss, generator_loss, ls_discriminator_loss, ls_generator_loss
from .nets import build_pair, sample_noise
from .sample import image_grid, interpolate, load_generator, sample
from .task import GAN_PRESETS, GanConfig, GanTask, gan_config

__all__ = [
    "train", "GanConfig", "GanTask", "GAN_PRESETS", "gan_config", "build_pair", "sample_noise", "LOSSES",
    "discriminator_loss", "generator_loss", "ls_discriminator_loss", "ls_generator_loss",
    "load_generator", "sample", "interpolate", "image_grid", "invert", "make_task",
    "train_classifier", "load_classifier", "score",
]


def make_task(*, data: str = "fashion-mnist", preset: str = "cs231n", data_root: str | os.PathLike | None = None,
              device: str = "cpu", **overrides: Any) -> GanTask:
    """Load the data and build the :class:`GanTask` (settings: :class:`GanConfig` fields)."""
    from pathlib import Path

    from ..config import check_settings
    from ..data import is_named, load_data

    check_settings(GanConfig, overrides, kind="GAN training")  # before the data loads
    size, channels = overrides.pop("size", None), overrides.pop("channels", None)
    images = load_data(data, split="train", size=size, channels=channels, root=data_root)
    name = data if is_named(str(data)) else str(Path(data).expanduser().resolve())
    cfg = gan_config(preset, data=name, size=images.size, channels=images.channels, **overrides)
    return GanTask(images, cfg, device=device)


def train(*, out: str | os.PathLike, epochs: int = 10, data: str = "fashion-mnist", loss: str = "vanilla",
          arch: str = "dc", seed: int = 0, preset: str = "cs231n", data_root: str | os.PathLike | None = None,
          device: str = "cpu", resume: bool = True, force: bool = False, progress: bool = False,
          **overrides: Any):
    """Train a GAN into ``out`` (checkpoint every epoch, exact resume; see :func:`preimage.train.fit`).

    ``overrides``: any :class:`GanConfig` field (``size``, ``channels``, ``batch_size``, ``lr``, ...).
    Returns the :class:`preimage.train.FitResult`."""
    import dataclasses
    import inspect

    from ..errors import PreimageError, did_you_mean
    from ..train import fit

    fields = [f.name for f in dataclasses.fields(GanConfig)]
    for k in overrides:  # a misspelt keyword of train itself (epochz) is named with its did-you-mean
        if k not in fields:
            own = [n for n in inspect.signature(train).parameters if n != "overrides"]
            raise PreimageError(f"unknown setting {k!r} for GAN training" + did_you_mean(k, [*own, *fields]))
    overrides.setdefault("init_seed", seed)
    task = make_task(data=data, preset=preset, data_root=data_root, device=device, loss=loss, arch=arch,
                     **overrides)
    return fit(task, out, epochs=epochs, seed=seed, resume=resume, force=force, progress=progress)


def train_classifier(**kwargs: Any):
    """Train the scoring LeNet; see :func:`preimage.gan.evaluate.train_classifier`."""
    from ..config import check_keywords
    from .evaluate import train_classifier as _train

    check_keywords(_train, kwargs, kind="train_classifier")
    return _train(**kwargs)


def load_classifier(path: str | os.PathLike):
    """The scoring LeNet and its settings; see :func:`preimage.gan.evaluate.load_classifier`."""
    from .evaluate import load_classifier as _load

    return _load(path)


def score(run: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
    """FD-LeNet / KID-LeNet / class histogram and, optionally, FID of a run's generator; see
    :func:`preimage.gan.evaluate.score_run`."""
    from ..config import check_keywords
    from .evaluate import score_run

    check_keywords(score_run, kwargs, kind="score")
    return score_run(run, **kwargs)


def invert(*args: Any, **kwargs: Any):
    """GAN inversion; see :func:`preimage.gan.inversion.invert_generator`."""
    from .inversion import invert_generator

    return invert_generator(*args, **kwargs)
