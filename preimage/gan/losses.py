"""The four GAN losses of the notes (CS231n assignment 3), on discriminator scores of shape ``(N,)``.

Vanilla GAN (Goodfellow et al. 2014, https://arxiv.org/abs/1406.2661), with the non-saturating
generator loss (Goodfellow 2016, https://arxiv.org/abs/1701.00160). With ``s`` the logits and
``bce(s, y) = -mean(y log σ(s) + (1 - y) log(1 - σ(s)))``::

    discriminator_loss = bce(s_real, 1) + bce(s_fake, 0)
    generator_loss     = bce(s_fake, 1)                     # maximize log D(G(z))

Least-squares GAN (Mao et al. 2017, https://arxiv.org/abs/1611.04076), on raw scores::

    ls_discriminator_loss = ½ mean((s_real - 1)²) + ½ mean(s_fake²)
    ls_generator_loss     = ½ mean((s_fake - 1)²)

``LOSSES`` maps the names the CLI takes (``vanilla``, ``ls``) to ``(discriminator, generator)`` pairs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["discriminator_loss", "generator_loss", "ls_discriminator_loss", "ls_generator_loss", "LOSSES"]


def discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """``bce(s_real, 1) + bce(s_fake, 0)``, each term a mean over the batch (numerically stable:
    computed from logits)."""
    real = F.binary_cross_entropy_with_logits(logits_real, torch.ones_like(logits_real))
    fake = F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
    return real + fake


def generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """``bce(s_fake, 1) = -mean(log σ(s_fake))``: the non-saturating loss (maximize log D(G(z)))."""
    return F.binary_cross_entropy_with_logits(logits_fake, torch.ones_like(logits_fake))


def ls_discriminator_loss(scores_real: torch.Tensor, scores_fake: torch.Tensor) -> torch.Tensor:
    """``½ mean((s_real - 1)²) + ½ mean(s_fake²)``."""
    return 0.5 * ((scores_real - 1).pow(2).mean() + scores_fake.pow(2).mean())


def ls_generator_loss(scores_fake: torch.Tensor) -> torch.Tensor:
    """``½ mean((s_fake - 1)²)``."""
    return 0.5 * (scores_fake - 1).pow(2).mean()


LOSSES = {
    "vanilla": (discriminator_loss, generator_loss),
    "ls": (ls_discriminator_loss, ls_generator_loss),
}
