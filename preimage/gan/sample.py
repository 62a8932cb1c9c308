"""Using a trained generator: load it from a checkpoint, draw samples, interpolate between noises."""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from ..errors import PreimageError
from .nets import build_pair, sample_noise
from .task import GanConfig, to_pixels

__all__ = ["load_generator", "sample", "interpolate", "image_grid", "memory_needed", "check_memory"]


def load_generator(checkpoint: str | os.PathLike, *, device: str | torch.device = "cpu"
                   ) -> tuple[nn.Module, GanConfig]:
    """The generator of a ``preimage gan train`` checkpoint (a ``checkpoint.pt`` or the run folder),
    in eval mode and frozen, with its config. A file of another kind, or weights that do not fit the
    architecture the config names, raise :class:`PreimageError`."""
    from ..train import load_checkpoint

    path = Path(checkpoint)
    if path.is_dir():
        path = path / "checkpoint.pt"
    ckpt = load_checkpoint(path, kind="gan")
    try:
        cfg = GanConfig(**ckpt["config"])
    except TypeError as exc:
        raise PreimageError(f"{path} has GAN settings this version does not know ({exc})") from None
    G, _ = build_pair(cfg.arch, noise_dim=cfg.noise_dim, channels=cfg.channels, size=cfg.size)
    try:
        G.load_state_dict(ckpt["modules"]["G"])
    except (RuntimeError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise PreimageError(f"{path}: the generator weights do not fit the {cfg.arch} architecture "
                            f"({cfg.channels} x {cfg.size} x {cfg.size}): {first[:160]}") from None
    G.to(device).eval()
    for p in G.parameters():
        p.requires_grad_(False)
    return G, cfg


@torch.no_grad()
def sample(G: nn.Module, n: int, *, noise_dim: int, seed: int = 0) -> torch.Tensor:
    """``n`` samples in [0, 1] (``n x C x S x S``) from noise drawn with ``seed``."""
    z = sample_noise(n, noise_dim, torch.Generator().manual_seed(seed))
    device = next(G.parameters()).device
    return to_pixels(G.eval()(z.to(device))).cpu()


@torch.no_grad()
def interpolate(G: nn.Module, *, noise_dim: int, steps: int = 10, rows: int = 1, seed: int = 0) -> torch.Tensor:
    """``rows`` strips of ``steps`` images each, along straight lines between pairs of noise vectors
    drawn with ``seed``: ``z(t) = (1 - t) z_a + t z_b``, t = 0 ... 1. Returns ``rows·steps x C x S x S``."""
    g = torch.Generator().manual_seed(seed)
    a, b = sample_noise(rows, noise_dim, g), sample_noise(rows, noise_dim, g)
    t = torch.linspace(0, 1, steps).view(1, steps, 1)
    z = ((1 - t) * a[:, None] + t * b[:, None]).reshape(rows * steps, noise_dim)
    device = next(G.parameters()).device
    return to_pixels(G.eval()(z.to(device))).cpu()


@torch.no_grad()
def memory_needed(G: nn.Module, n: int, *, noise_dim: int, pad: int = 2) -> int:
    """Estimated peak bytes of :func:`sample` / :func:`interpolate` of ``n`` images and their
    :func:`image_grid`: per image, every leaf module's output (measured on one noise vector), the
    noise, two float copies of the image and the grid's RGB pixels."""
    total = [0]

    def hook(_m, _i, out) -> None:
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                total[0] += t.numel() * t.element_size()

    handles = [m.register_forward_hook(hook) for m in G.modules() if not list(m.children())]
    try:
        device = next(G.parameters()).device
        out = G.eval()(torch.zeros(1, noise_dim, device=device))
    finally:
        for h in handles:
            h.remove()
    side = int(out.shape[-1]) + pad
    per_image = total[0] + 2 * out.numel() * 4 + 3 * noise_dim * 4 + 3 * side * side
    return int(n) * per_image


def check_memory(G: nn.Module, n: int, *, noise_dim: int, what: str, hint: str, device: str | torch.device = "cpu",
                 backward: bool = False) -> None:
    """Refuse, in one line, ``n`` images through ``G`` estimated not to fit under the memory limit of
    :mod:`preimage.memory` (``--max-memory``, ``PREIMAGE_MAX_MEMORY`` or what is available). With
    ``backward`` (a search through the generator) the activations are kept and their gradients are as
    large: twice :func:`memory_needed`."""
    from ..memory import ENV, format_size, memory_limit

    cap, source = memory_limit(device)
    if cap is None:
        return
    need = (2 if backward else 1) * memory_needed(G, n, noise_dim=noise_dim)
    if need > cap:
        raise PreimageError(f"{what} needs about {format_size(need)} of memory, more than the {format_size(cap)} "
                            f"{source} allows; {hint}, or raise the limit with --max-memory SIZE (or {ENV}=SIZE; "
                            "'off' disables the check)")


def image_grid(images: torch.Tensor, ncols: int | None = None, pad: int = 2) -> Image.Image:
    """A square-ish grid (``ncols`` columns; default √N) of ``N x C x S x S`` images in [0, 1]."""
    from ..images import to_pil

    n = images.shape[0]
    ncols = ncols or max(1, math.ceil(math.sqrt(n)))
    nrows = math.ceil(n / ncols)
    s = images.shape[-1]
    canvas = Image.new("RGB", (ncols * (s + pad) + pad, nrows * (s + pad) + pad), (255, 255, 255))
    for i in range(n):
        r, c = divmod(i, ncols)
        canvas.paste(to_pil(images[i]), (pad + c * (s + pad), pad + r * (s + pad)))
    return canvas
