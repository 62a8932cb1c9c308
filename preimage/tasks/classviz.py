"""Class visualization: an image the network is sure shows a given class.

Simonyan, Vedaldi & Zisserman 2014 ("Deep inside convolutional networks") find
``x* = argmax_x S_c(x) - λ‖x‖²`` by gradient ascent from noise on the unnormalized class score;
Yosinski et al. 2015 add regularizers that make the result look less like noise: a random jitter
(roll) of the image at every step and a periodic Gaussian blur. Both presets run on the engine's one
loop (``optimize``); the blur is a callback that smooths the parameter in place every N steps.

- ``preset="classic"`` (the CS231n assignment's settings): free pixels in the network's input space,
  started at Gaussian noise, gradient ascent along the normalized gradient (``x ← x + lr · g/‖g‖₂``
  per image, ``lr = 25``), L2 weight
  ``λ = 1e-3``, jitter ±16 px, blur σ = 0.5 every 10 steps, clamped to the valid pixel range.
- ``preset="fourier"`` (as in Lucid / Olah et al. 2017): the image is parameterized by a scaled
  Fourier spectrum with decorrelated colour and a sigmoid (:class:`~preimage.params.Fourier`), which
  favours low frequencies; Adam, jitter and small random rescaling. Cleaner, more object-like images.

The result is judged by classifying the 8-bit PNG that is saved, at the model's input size.
Example::

    preimage dream --class tarantula --preset fourier --out out/dream
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..config import with_settings
from ..errors import PreimageError
from ..io import all_or_nothing
from ..models import Model, check_model
from ..objectives import class_score, l2
from ..optimize import Step, optimize
from ..params import Fourier, Pixels
from ..transforms import ensemble, gaussian_blur, jitter, random_scale
from .classify import predict
from .dreamfiles import dream_paths, save_dream

__all__ = ["PRESETS", "DreamConfig", "visualize_class", "ClassVizResult", "output_paths"]


@dataclass(frozen=True)
class DreamConfig:
    param: str = "pixels"  # "pixels" (free pixels in input space) or "fourier"
    steps: int = 200  # gradient steps
    lr: float = 25.0  # step size (SGD for pixels, Adam for fourier)
    optimizer: str = "sgd"  # "sgd" (no momentum) or "adam"
    l2: float = 1e-3  # weight of ||x||² in the network's input space
    jitter: int = 16  # random roll of up to ±jitter pixels each step
    blur_every: int = 10  # blur the image every N steps (0: never)
    blur_sigma: float = 0.5  # Gaussian blur radius (pixels)
    scales: tuple[float, ...] = ()  # random rescaling factors per step (empty: none)
    init_std: float = 1.0  # pixels: std of the starting noise in input space; fourier: spectrum std
    normalize_grad: bool = True  # step along g / ||g||_2 per image (CS231n's update), not the raw gradient
    copies: int = 1  # augmentation ensembling (Ghiasi et al. 2022, for ViTs): copies of each image per
                     # step, each jittered (per copy), colour-shifted and noised on its own (1: off)
    color_shift: float = 0.0  # per-copy x*exp(U(-s, s)) + U(-s, s), normalized input units (0: off)
    noise: float = 0.0  # per-copy Gaussian noise std, normalized input units (0: off)


PRESETS: dict[str, DreamConfig] = {
    "classic": DreamConfig(),
    "fourier": DreamConfig(param="fourier", steps=256, lr=0.05, optimizer="adam", l2=0.0, jitter=16,
                           blur_every=0, scales=(0.9, 0.95, 1.0, 1.05, 1.1), init_std=0.01,
                           normalize_grad=False),
}


@dataclass
class ClassVizResult:
    image: torch.Tensor  # B x 3 x H x W in [0, 1]
    classes: list[int]
    class_names: list[str]
    prob: list[float]  # probability of the class for the saved 8-bit image
    top1: list[int]  # top-1 class of the saved 8-bit image
    config: DreamConfig
    seed: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    status: str = "done"
    model: str = ""

    @property
    def names(self) -> list[str]:
        return _stems(self.classes, self.class_names)

    @all_or_nothing()
    def save(self, out_dir: str | os.PathLike, *, force: bool = False) -> list[Path]:
        """``NNNN_NAME.png`` per class (class index in four digits, class name as in :attr:`names`,
        e.g. ``0076_tarantula.png``), ``dream_grid.png`` (with the probabilities) and ``dream.json``."""
        manifest = {
            "task": "dream", "model": self.model, "seed": self.seed, "config": asdict(self.config),
            "seconds": self.seconds, "status": self.status,
            "images": [{"file": f"{n}.png", "class": c, "class_name": cn, "prob": p, "top1": t}
                       for n, c, cn, p, t in zip(self.names, self.classes, self.class_names, self.prob, self.top1)],
        }
        labels = [f"{cn} {p:.0%}" for cn, p in zip(self.class_names, self.prob)]
        return save_dream(out_dir, self.names, self.image, labels, 5, manifest, force=force)


def _stems(classes: Sequence[int], names: Sequence[str]) -> list[str]:
    out = []
    for c, n in zip(classes, names):
        slug = "".join(ch if ch.isalnum() else "_" for ch in n.lower()).strip("_")
        out.append(f"{c:04d}_{slug}"[:60])
    return out


def output_paths(out_dir: str | os.PathLike, names: Sequence[str]) -> list[Path]:
    return dream_paths(out_dir, names)


def stems(model: Model, targets: Sequence[int | str]) -> list[str]:
    """The file stems :meth:`ClassVizResult.save` uses for these classes (``0076_tarantula``)."""
    idx = [model.class_index(t) for t in targets]
    return _stems(idx, [model.classes[i] for i in idx])  # type: ignore[index]


def make_config(preset: str = "fourier", **overrides: object) -> DreamConfig:
    """A preset with some fields replaced (``None`` values are ignored); checks the values."""
    if preset not in PRESETS:
        from ..errors import did_you_mean

        raise PreimageError(f"unknown preset {preset!r}" + did_you_mean(preset, PRESETS) + f"; choose from {', '.join(PRESETS)}")
    cfg = with_settings(PRESETS[preset], overrides, kind="visualize_class")
    if cfg.steps < 1:
        raise PreimageError("steps must be at least 1")
    if cfg.lr <= 0:
        raise PreimageError("lr must be > 0")
    if cfg.l2 < 0 or cfg.jitter < 0 or cfg.blur_every < 0 or cfg.blur_sigma < 0 or cfg.init_std < 0:
        raise PreimageError("l2, jitter, blur-every, blur-sigma and init-std must be >= 0")
    if cfg.copies < 1:
        raise PreimageError("copies must be at least 1")
    if cfg.color_shift < 0 or cfg.noise < 0:
        raise PreimageError("color-shift and noise must be >= 0")
    if cfg.param not in ("pixels", "fourier"):
        raise PreimageError(f"unknown parameterization {cfg.param!r} (pixels, fourier)")
    if cfg.optimizer not in ("sgd", "adam"):
        raise PreimageError(f"unknown optimizer {cfg.optimizer!r} (sgd, adam)")
    if any(s <= 0 for s in cfg.scales):
        raise PreimageError("scales must be > 0")
    return cfg


def visualize_class(
    model: Model,
    target: int | str | Sequence[int | str],
    *,
    preset: str = "fourier",
    size: int | None = None,
    seed: int = 0,
    progress: bool = False,
    callbacks: Sequence[Callable[[Step], bool | None]] = (),
    **overrides: object,
) -> ClassVizResult:
    """Generate one image per target class (a batch; the images do not interact).

    Args:
        target: class index or (fuzzy) name, or a list of them.
        preset: ``"fourier"`` (default) or ``"classic"`` (see the module docstring); keyword ``overrides``
            replace fields of :class:`DreamConfig` (``steps=500``, ``lr=10``, ``blur_every=0``, ...).
        size: image side in pixels (default: the model's input size).
        seed: the starting noise and the random jitter; the same seed gives the same image.
        progress: show a progress bar with each loss term.
        callbacks: passed to the engine after the preset's own (return True to stop; the result then
            has ``status == "stopped"``).
    """
    check_model(model)
    if model.classes is None:
        raise PreimageError(f"{model.name} is not a classifier; class visualization needs class scores")
    cfg = make_config(preset, **overrides)
    targets = [target] if isinstance(target, (int, str)) else list(target)
    if not targets:
        raise PreimageError("no class given")
    classes = [model.class_index(t) for t in targets]
    size = int(size or model.input_size)
    if size < 16:
        raise PreimageError(f"size {size} is too small (at least 16 pixels)")
    b = len(classes)
    from ..memory import check_fits

    check_fits(model, batch=b, size=size, what=f"class visualization of {b} image(s) at {size} px",
               hint="use a smaller size")  # before the image is allocated
    device = model.device
    g = torch.Generator().manual_seed(seed)
    if cfg.param == "fourier":
        param = Fourier((b, model.channels, size, size), sd=cfg.init_std, generator=g, device=device)
    else:
        lo = model.normalize(torch.zeros(1, model.channels, 1, 1, device=device))
        hi = model.normalize(torch.ones(1, model.channels, 1, 1, device=device))
        init = (torch.randn(b, model.channels, size, size, generator=g) * cfg.init_std).to(device)
        param = Pixels(init, space="input", bounds=(lo, hi))  # type: ignore[arg-type]
    objective = class_score(classes)
    if cfg.l2:
        objective = objective + cfg.l2 * l2(space="input")
    transforms = ensemble(cfg.copies, jitter_pixels=cfg.jitter, shift=cfg.color_shift, noise=cfg.noise)
    if cfg.jitter and not transforms:
        transforms.append(jitter(cfg.jitter))
    if cfg.scales:
        transforms.append(random_scale(cfg.scales))
    callbacks_in, callbacks = list(callbacks), []
    if cfg.blur_every and cfg.blur_sigma and cfg.param == "pixels":
        def blur(step: Step) -> bool:
            if step.step % cfg.blur_every == 0:
                with torch.no_grad():
                    step.param.x.copy_(gaussian_blur(step.param.x, cfg.blur_sigma))
            return False
        callbacks.append(blur)
    callbacks.extend(callbacks_in)
    grad_hook = None
    if cfg.normalize_grad:
        def grad_hook(p) -> None:
            for t in p.parameters():
                if t.grad is not None:
                    n = t.grad.flatten(1).norm(dim=1).clamp_min(1e-12)
                    t.grad.div_(n.view(-1, *([1] * (t.grad.dim() - 1))))
    result = optimize(param, objective, model, steps=cfg.steps, optimizer=cfg.optimizer, lr=cfg.lr,
                      momentum=0.0, transforms=transforms, generator=g, callbacks=callbacks, grad_hook=grad_hook,
                      progress=progress, progress_desc="dream")
    if result.status == "diverged":
        raise PreimageError(f"class visualization diverged: {result.message}; try a smaller lr (--lr)")
    image = result.image.clamp(0, 1)
    from .fool import png_roundtrip

    with torch.no_grad():
        png = png_roundtrip(image).to(device)
        if size != model.input_size:
            import torch.nn.functional as F

            png = F.interpolate(png, size=(model.input_size, model.input_size), mode="bilinear",
                                align_corners=False, antialias=True)
        probs = predict(model, png)
    return ClassVizResult(
        image=image.cpu(), classes=classes, class_names=[model.classes[c] for c in classes],
        prob=[float(probs[i, c]) for i, c in enumerate(classes)], top1=probs.argmax(1).tolist(),
        config=cfg, seed=seed, history=result.history, seconds=result.seconds, status=result.status,
        model=model.name,
    )
