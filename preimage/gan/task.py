"""GAN training as a :class:`preimage.train.TrainTask`: the notes' ``run_a_gan``, one step at a time.

Each step (Goodfellow et al. 2014, alternating updates)::

    x      = 2 · real - 1                     # images scaled to [-1, 1]
    z      ~ U[-1, 1]^noise_dim               # drawn from the epoch's seeded generator
    L_D    = d_loss(D(x), D(G(z).detach()))    ->  Adam step on D
    z'     ~ U[-1, 1]^noise_dim
    L_G    = g_loss(D(G(z')))                 ->  Adam step on G

with batches of 128 (full batches only), Adam lr 1e-3, β = (0.5, 0.999): the ``cs231n`` preset. The
``dcgan`` preset has Radford et al. 2016's settings instead: lr 2e-4 and weights drawn from N(0, 0.02).
After every epoch a grid of samples from a fixed noise batch is written to ``samples/epoch_NNN.png``
and ``samples.png`` (the latest).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import ImageData
from ..config import with_settings
from ..errors import PreimageError, did_you_mean
from .losses import LOSSES
from .nets import ARCHS, INITS, build_pair, init_weights, sample_noise

__all__ = ["GanConfig", "GanTask", "GAN_PRESETS", "gan_config", "SAMPLE_SEED"]

#: the seed of the fixed noise behind the per-epoch sample grids
SAMPLE_SEED = 1234


@dataclass
class GanConfig:
    """Every setting of a GAN run; the defaults are the notes' (the ``cs231n`` preset)."""

    loss: str = "vanilla"        # vanilla (BCE, non-saturating G loss) | ls (least squares)
    arch: str = "dc"             # fc (fully connected pair) | dc (DCGAN pair)
    data: str = "fashion-mnist"  # data set name or folder the model was trained on
    size: int = 28               # image side in pixels (28, 32 or 64)
    channels: int = 1            # 1 (grey) or 3 (colour)
    noise_dim: int = 96          # dimension of the uniform noise z
    batch_size: int = 128        # images per step; only full batches are used
    lr: float = 1e-3             # Adam learning rate, both networks
    beta1: float = 0.5           # Adam β1
    beta2: float = 0.999         # Adam β2
    grid: int = 64               # samples in the per-epoch grid (a square number looks best)
    init_seed: int = 0           # seeds the networks' initial weights (train() passes the run's seed)
    init: str = "torch"          # initial weights: torch (PyTorch's layer defaults) | normal (Radford et al.
                                 # 2016: conv/linear weights N(0, 0.02), batch-norm scales N(1, 0.02), biases 0)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: ``cs231n``: the notes' settings. ``dcgan``: Radford et al. 2016's (Adam lr 2e-4, β1 0.5, weights
#: drawn from N(0, 0.02)), which keep the DCGAN pair balanced over longer runs (docs/gan.md).
GAN_PRESETS = {"cs231n": GanConfig(), "dcgan": GanConfig(lr=2e-4, init="normal")}


def gan_config(preset: str = "cs231n", **overrides: Any) -> GanConfig:
    """The preset's settings with ``overrides`` (None values ignored), validated."""
    if preset not in GAN_PRESETS:
        raise PreimageError(f"unknown GAN preset {preset!r}" + did_you_mean(str(preset), GAN_PRESETS)
                            + f" ({', '.join(GAN_PRESETS)})")
    cfg = with_settings(GAN_PRESETS[preset], overrides, kind="GAN training")
    if cfg.loss not in LOSSES:
        raise PreimageError(f"unknown loss {cfg.loss!r}" + did_you_mean(str(cfg.loss), LOSSES)
                            + f" ({', '.join(LOSSES)})")
    if cfg.arch not in ARCHS:
        raise PreimageError(f"unknown architecture {cfg.arch!r}" + did_you_mean(str(cfg.arch), ARCHS)
                            + f" ({', '.join(ARCHS)})")
    if cfg.init not in INITS:
        raise PreimageError(f"unknown initialization {cfg.init!r}" + did_you_mean(str(cfg.init), INITS)
                            + f" ({', '.join(INITS)})")
    if cfg.size not in (28, 32, 64):
        raise PreimageError(f"image size must be 28, 32 or 64, not {cfg.size}")
    if cfg.channels not in (1, 3):
        raise PreimageError(f"channels must be 1 or 3, not {cfg.channels}")
    for name in ("noise_dim", "batch_size", "grid"):
        if getattr(cfg, name) < 1:
            raise PreimageError(f"{name} must be >= 1, not {getattr(cfg, name)}")
    if not cfg.lr > 0:
        raise PreimageError(f"lr must be > 0, not {cfg.lr}")
    for name in ("beta1", "beta2"):
        if not 0 <= getattr(cfg, name) < 1:
            raise PreimageError(f"{name} must be in [0, 1), not {getattr(cfg, name)}")
    return cfg


class GanTask:
    """Trains a generator/discriminator pair on ``data`` (see the module docstring)."""

    kind = "gan"

    def __init__(self, data: ImageData, config: GanConfig, *, device: str | torch.device = "cpu"):
        if data.size != config.size or data.channels != config.channels:
            raise PreimageError(f"the data are {data.channels} x {data.size} x {data.size} but the config says "
                                f"{config.channels} x {config.size} x {config.size}")
        if len(data) < config.batch_size:
            raise PreimageError(f"{data.name} has {len(data)} images, fewer than one batch of {config.batch_size} "
                                f"(lower --batch-size)")
        self.data, self.cfg, self.device = data, config, torch.device(device)
        with torch.random.fork_rng(devices=[]):  # seeded initial weights; the caller's RNG is left alone
            torch.manual_seed(config.init_seed)
            G, D = build_pair(config.arch, noise_dim=config.noise_dim, channels=config.channels, size=config.size)
            init_weights(G, config.init)
            init_weights(D, config.init)
        self.G, self.D = G.to(self.device), D.to(self.device)
        betas = (config.beta1, config.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=config.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=config.lr, betas=betas)
        self.d_loss, self.g_loss = LOSSES[config.loss]
        self.fixed_noise = sample_noise(config.grid, config.noise_dim, torch.Generator().manual_seed(SAMPLE_SEED))

    # -- TrainTask ---------------------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"G": self.opt_g, "D": self.opt_d}

    def config(self) -> dict[str, Any]:
        return self.cfg.as_dict()

    def num_batches(self) -> int:
        return self.data.num_batches(self.cfg.batch_size)

    def batches(self, epoch: int, generator: torch.Generator) -> Iterable[Any]:
        return self._scaled(self.data.batches(self.cfg.batch_size, generator))

    @staticmethod
    def _scaled(it: Iterator[tuple[torch.Tensor, Any]]) -> Iterator[torch.Tensor]:
        for x, _ in it:
            yield x * 2 - 1

    def train_step(self, batch: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
        n, dim = batch.shape[0], self.cfg.noise_dim
        real = batch.to(self.device)
        self.G.train()
        self.D.train()
        self.opt_d.zero_grad(set_to_none=True)
        fake = self.G(sample_noise(n, dim, generator).to(self.device)).detach()
        d_loss = self.d_loss(self.D(real), self.D(fake))
        d_loss.backward()
        self.opt_d.step()

        self.opt_g.zero_grad(set_to_none=True)
        g_loss = self.g_loss(self.D(self.G(sample_noise(n, dim, generator).to(self.device))))
        g_loss.backward()
        self.opt_g.step()
        return {"D": float(d_loss.detach()), "G": float(g_loss.detach())}

    def end_epoch(self, epoch: int, out: Path) -> dict[str, float]:
        from ..images import save_image
        from ..io import atomic_write
        from .sample import image_grid

        self.G.eval()
        with torch.no_grad():
            images = to_pixels(self.G(self.fixed_noise.to(self.device))).cpu()
        self.G.train()
        grid = image_grid(images)
        save_image(grid, Path(out) / "samples" / f"epoch_{epoch:03d}.png")
        atomic_write(Path(out) / "samples.png", (Path(out) / "samples" / f"epoch_{epoch:03d}.png").read_bytes())
        return {}


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> [0, 1] pixels."""
    return (x + 1) / 2
