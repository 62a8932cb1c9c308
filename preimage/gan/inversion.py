"""The pre-image of a generator (GAN inversion): find ``z`` such that ``G(z)`` reproduces an image.

    ẑ = argmin_{z ∈ [-1, 1]^d}  mean_pixels (G(z) - x)²        (Zhu et al. 2016, §3.2; Creswell & Bharath 2018)

The search runs through the engine's one loop (:func:`preimage.optimize`) with the image
parameterized by its latent code (:class:`preimage.params.Latent`): ``restarts`` random starts per
image are optimized together as one batch (losses are per image, so they do not interact) and the
best one is kept. Metrics are those of other inversions (PSNR, SSIM, TV ratio, the normalized error
``||G(ẑ) - x||² / ||x||²`` as ``feature_error["pixels"]``) plus the mean absolute and mean squared
error per pixel in [0, 1] units. The result is an :class:`preimage.tasks.invert.Inversion`, saved
like any other (``NAME.png``, ``NAME_compare.png``, ``manifest.json``, ``history.json``).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import metrics as M
from ..config import with_settings
from ..errors import PreimageError
from ..models import Model
from ..objectives import Objective, State
from ..optimize import moved_milestones, optimize, step_schedule
from ..params import Latent
from .nets import sample_noise
from .sample import load_generator
from .task import to_pixels

__all__ = ["GanInvertConfig", "invert_generator", "GeneratorPixels"]


#: the starting codes of ``seed`` s are drawn from seed ``s + START_STREAM``: a stream of their own, so that
#: an image ``gan.sample(..., seed=s)`` made is not searched for from its own code (it would be found at once)
START_STREAM = 0x5EED_57A27


@dataclass
class GanInvertConfig:
    """Settings of a GAN inversion."""

    steps: int = 300                  # optimization steps
    optimizer: str = "adam"           # sgd | adam | lbfgs
    lr: float = 0.05                  # learning rate (units of z, which lives in [-1, 1])
    momentum: float = 0.9             # SGD momentum
    decay_steps: tuple[int, ...] = (200,)   # multiply the lr by decay_factor at these steps
    decay_factor: float = 0.1
    restarts: int = 8                 # random starts per image; the lowest final loss wins
    seed: int = 0                     # draws the starting codes (from a stream of their own: START_STREAM)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class GeneratorPixels(nn.Module):
    """A frozen generator as a decoder to the engine's images: ``z -> (G(z) + 1) / 2``, grey
    replicated to RGB, always in eval mode (batch norm uses its running statistics)."""

    def __init__(self, G: nn.Module):
        super().__init__()
        self.G = G.eval()

    def train(self, mode: bool = True) -> "GeneratorPixels":
        return super().train(False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = to_pixels(self.G(z))
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _reference(images: Any, size: int, channels: int) -> tuple[torch.Tensor, list[str], list[str]]:
    """Images as ``B x 3 x S x S`` in [0, 1]; grey for a grey generator. Files are resized (short side)
    and centre-cropped to ``S``, as for a network's input size; a tensor of another size is refused."""
    from ..images import image_name, load_tensor, unique_names

    if isinstance(images, torch.Tensor):
        x = images.unsqueeze(0) if images.dim() == 3 else images
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise PreimageError(f"images must be B x C x H x W with C = 1 or 3, not {tuple(images.shape)}")
        names = [f"image{i}" for i in range(x.shape[0])]
        sources = names
        bad = [(names[0], x.shape[-1], x.shape[-2])] if x.shape[-2:] != (size, size) else []
        x = x.float().expand(-1, 3, -1, -1) if x.shape[1] == 1 else x.float()
    else:
        sources = [str(images)] if isinstance(images, (str, os.PathLike)) else [str(s) for s in images]
        if not sources:
            raise PreimageError("no image given")
        x = torch.cat([load_tensor(s, size) for s in sources])
        names = unique_names([image_name(s) for s in sources])
        bad = []
    if bad:
        s, w, h = bad[0]
        raise PreimageError(f"the {s} tensor is {w}x{h} but the generator makes {size}x{size} images; resize it "
                            f"first (image files are resized)")
    if channels == 1:
        x = x.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    return x.contiguous(), names, sources


def invert_generator(checkpoint: str | os.PathLike | tuple[nn.Module, Any], images: Any, *,
                     config: GanInvertConfig | None = None, progress: bool = False, callbacks: Any = (),
                     frame_every: int = 0, **overrides: Any):
    """Find, for each image, the noise vector whose generated image reproduces it best.

    Args:
        checkpoint: a ``preimage gan train`` checkpoint or run folder, or ``(G, GanConfig)``.
        images: paths / ``sample:NAME`` / a ``B x C x S x S`` tensor in [0, 1]; each must be the
            generator's size (a colour image is averaged to grey for a grey generator).
        config, **overrides: :class:`GanInvertConfig` and any of its fields.

    Returns:
        :class:`preimage.tasks.invert.Inversion`; ``metrics[i]["z"]`` is the code found for image i.
    """
    from ..tasks.invert import Inversion

    base = config or GanInvertConfig()
    cfg = with_settings(base, overrides, kind="invert_generator")
    if overrides.get("steps") and overrides.get("decay_steps") is None:
        # the user's step count: the lr drops keep their place in it (200 of 300 steps: 100 of 150)
        cfg.decay_steps = moved_milestones(base.decay_steps, base.steps, cfg.steps)
    if cfg.steps < 0 or cfg.restarts < 1 or not cfg.lr > 0:
        raise PreimageError("steps must be >= 0, restarts >= 1 and lr > 0")
    if cfg.optimizer not in ("sgd", "adam", "lbfgs"):
        raise PreimageError(f"unknown optimizer {cfg.optimizer!r} (sgd, adam, lbfgs)")
    if isinstance(checkpoint, tuple):
        G, gcfg = checkpoint
        label = "gan"
    else:
        G, gcfg = load_generator(checkpoint)
        label = f"gan:{checkpoint}"
    ref, names, sources = _reference(images, gcfg.size, gcfg.channels)
    device = next(G.parameters()).device
    b, k = ref.shape[0], cfg.restarts
    target = ref.to(device).repeat_interleave(k, 0)  # image i's starts are rows i*k ... i*k + k-1
    gen = torch.Generator().manual_seed(int(cfg.seed) + START_STREAM)
    param = Latent(GeneratorPixels(G), sample_noise(b * k, gcfg.noise_dim, gen).to(device), bounds=(-1.0, 1.0))
    identity = Model(name=label, net=nn.Identity(), input_size=gcfg.size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))

    def rec(state: State) -> torch.Tensor:
        return (state.image - target).pow(2).flatten(1).mean(1)

    objective = Objective(rec, name="rec[pixels]")
    schedule = step_schedule([s for s in cfg.decay_steps if s > 0], cfg.decay_factor) if cfg.decay_steps else None
    result = optimize(param, objective, identity, steps=cfg.steps, optimizer=cfg.optimizer, lr=cfg.lr,
                      momentum=cfg.momentum, schedule=schedule, generator=gen, progress=progress,
                      progress_desc=f"invert {label}", callbacks=list(callbacks), frame_every=frame_every)
    with torch.no_grad():
        per = (result.image - target).pow(2).flatten(1).mean(1).view(b, k)
        best = per.argmin(1) + torch.arange(b, device=per.device) * k
        image = result.image[best].clamp(0, 1).cpu()
        z = param.z.detach()[best].cpu()
    result.frames = [f[best.cpu()] for f in result.frames]
    result.per_image_loss = [float(v) for v in per.min(1).values]
    ref = ref.cpu()
    psnr, ssim, tvr = M.psnr(image, ref), M.ssim(image, ref), M.tv_ratio(image, ref)
    diff = image - ref
    rel = diff.pow(2).flatten(1).sum(1) / ref.pow(2).flatten(1).sum(1).clamp_min(1e-12)
    mets = [{"feature_error": {"pixels": float(rel[i])}, "psnr": float(psnr[i]), "ssim": float(ssim[i]),
             "tv_ratio": float(tvr[i]), "mae": float(diff[i].abs().mean()), "mse": float(diff[i].pow(2).mean()),
             "z": [round(float(v), 6) for v in z[i]]} for i in range(b)]
    return Inversion(image=image, reference=ref, names=names, layers=[("pixels", 1.0)], model=label, config=cfg,
                     result=result, metrics=mets, sources=sources,
                     effective={"generator": gcfg.as_dict(), "restarts": k})
