"""The two generator/discriminator pairs of the notes, adapted to 1 or 3 channels and 28/32/64 px.

Fully connected (``fc``; CS231n's first GAN)::

    G: z (96) -> Linear 1024 -> ReLU -> Linear 1024 -> ReLU -> Linear C·S·S -> tanh
    D: C·S·S -> Linear 256 -> LeakyReLU(0.01) -> Linear 256 -> LeakyReLU(0.01) -> Linear 1

DCGAN (``dc``; Radford et al. 2016, https://arxiv.org/abs/1511.06434, as the notes print it)::

    D: Conv 32@5x5 -> LeakyReLU -> MaxPool 2 -> Conv 64@5x5 -> LeakyReLU -> MaxPool 2
       -> Linear 1024 -> LeakyReLU -> Linear 1                (28 px: 64·4·4 = 1024 inputs)
    G: Linear 1024 -> ReLU -> BN -> Linear 128·s·s -> ReLU -> BN -> reshape 128 x s x s
       -> ConvT 64 4x4/2 -> ReLU -> BN -> ConvT C 4x4/2 -> tanh       (s = S/4: 7 at 28 px, 8 at 32 px)

At 64 px the DCGAN generator starts from 128 x 8 x 8 and has one more ``ConvT 32 4x4/2 -> ReLU -> BN``
stage (rather than a 128·16·16-wide linear layer); the discriminator's first linear layer takes
the flattened size it is given. Generators output ``N x C x S x S`` in [-1, 1]; discriminators
output one unnormalized score per image, shape ``(N,)``.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["build_pair", "fc_generator", "fc_discriminator", "dc_generator", "dc_discriminator", "sample_noise",
           "ARCHS", "INITS", "init_weights"]

ARCHS = ("fc", "dc")
INITS = ("torch", "normal")


def init_weights(net: nn.Module, scheme: str = "torch") -> nn.Module:
    """Re-draw ``net``'s initial weights in place (from torch's global RNG). ``torch`` leaves PyTorch's
    layer defaults; ``normal`` is Radford et al. 2016's: every convolution, transposed convolution and
    linear weight ~ N(0, 0.02), batch-norm scales ~ N(1, 0.02), all biases 0."""
    if scheme not in INITS:
        raise ValueError(f"unknown initialization {scheme!r} ({', '.join(INITS)})")
    if scheme == "normal":
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)
    return net


def sample_noise(n: int, dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform noise in [-1, 1], ``n x dim`` (the notes' ``sample_noise``)."""
    return torch.rand(n, dim, generator=generator) * 2 - 1


class _Scores(nn.Module):
    """Wraps a discriminator body so that it returns shape ``(N,)``."""

    def __init__(self, body: nn.Sequential):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).view(-1)


def fc_generator(noise_dim: int = 96, channels: int = 1, size: int = 28) -> nn.Module:
    return nn.Sequential(
        nn.Linear(noise_dim, 1024), nn.ReLU(),
        nn.Linear(1024, 1024), nn.ReLU(),
        nn.Linear(1024, channels * size * size), nn.Tanh(),
        nn.Unflatten(1, (channels, size, size)),
    )


def fc_discriminator(channels: int = 1, size: int = 28) -> nn.Module:
    return _Scores(nn.Sequential(
        nn.Flatten(),
        nn.Linear(channels * size * size, 256), nn.LeakyReLU(0.01),
        nn.Linear(256, 256), nn.LeakyReLU(0.01),
        nn.Linear(256, 1),
    ))


def dc_discriminator(channels: int = 1, size: int = 28) -> nn.Module:
    side = ((size - 4) // 2 - 4) // 2  # two valid 5x5 convolutions, each followed by a 2x2 max-pool
    return _Scores(nn.Sequential(
        nn.Conv2d(channels, 32, 5), nn.LeakyReLU(0.01), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5), nn.LeakyReLU(0.01), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * side * side, 1024), nn.LeakyReLU(0.01),
        nn.Linear(1024, 1),
    ))


def dc_generator(noise_dim: int = 96, channels: int = 1, size: int = 28) -> nn.Module:
    if size % 4:
        raise ValueError(f"the DCGAN generator needs a size divisible by 4, not {size}")
    ups = 3 if size >= 64 else 2
    start = size // 2 ** ups
    layers: list[nn.Module] = [
        nn.Linear(noise_dim, 1024), nn.ReLU(), nn.BatchNorm1d(1024),
        nn.Linear(1024, 128 * start * start), nn.ReLU(), nn.BatchNorm1d(128 * start * start),
        nn.Unflatten(1, (128, start, start)),
    ]
    width = 128
    for _ in range(ups - 1):
        layers += [nn.ConvTranspose2d(width, width // 2, 4, stride=2, padding=1), nn.ReLU(), nn.BatchNorm2d(width // 2)]
        width //= 2
    layers += [nn.ConvTranspose2d(width, channels, 4, stride=2, padding=1), nn.Tanh()]
    return nn.Sequential(*layers)


def build_pair(arch: str, *, noise_dim: int = 96, channels: int = 1, size: int = 28) -> tuple[nn.Module, nn.Module]:
    """``(generator, discriminator)`` for ``arch`` ("fc" or "dc")."""
    if arch == "fc":
        return fc_generator(noise_dim, channels, size), fc_discriminator(channels, size)
    if arch == "dc":
        return dc_generator(noise_dim, channels, size), dc_discriminator(channels, size)
    raise ValueError(f"unknown architecture {arch!r} (fc, dc)")
