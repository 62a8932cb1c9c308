"""DeepDream on a photo: amplify what a layer sees in an image.

Mordvintsev, Olah & Tyka 2015 ("Inceptionism: going deeper into neural networks"): start from a
photo and ascend the gradient of the size of a layer's activations,

    loss "l2":   L(x) = mean_{c,y,x} Φ(x)²      (the L2 norm of the activations, squared, per element)
    loss "mean": L(x) = mean_{c,y,x} Φ(x)

(with ``channel=k``, only that channel's map), taking normalized steps in [0, 1] pixel units

    x ← clip(x + lr · g / mean|g|, 0, 1),   g = ∂L/∂x   (each pixel moves lr on average)

with a random roll (jitter) of the image at every step, over *octaves*: the photo is shrunk by
``octave_scale`` ``octaves - 1`` times; the dream starts at the smallest scale, and after each octave
the detail it added (dream − photo at that scale) is enlarged and added to the photo at the next
scale, so large structures grow at coarse scales and fine ones at the full size (octaves smaller
than 16 px on a side are skipped). Defaults are the
original notebook's: 4 octaves, scale 1.4, 10 steps per octave, step 1.5/255, jitter 32 px.

Each step runs on the engine's one loop (:func:`preimage.optimize.optimize`, SGD without momentum and
a gradient hook for the normalization); this module only builds the pyramid around it. Example::

    preimage dream --image sample:chelsea --layer blocks.4 --out out/dream
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import with_settings
from ..errors import PreimageError
from ..images import as_pixels, image_name, load_image, save_image, to_channels, to_tensor, unique_names
from ..io import all_or_nothing
from ..layers import FeatureExtractor
from ..models import Model, check_model
from ..objectives import Objective, State, _channel_maps
from ..optimize import optimize
from ..params import Pixels
from ..transforms import jitter as jitter_transform
from ..validate import check_config

__all__ = ["DeepDreamConfig", "DeepDreamResult", "deep_dream", "dream_objective", "make_config", "output_paths"]

LOSSES = ("l2", "mean")
#: octaves whose image would be smaller than this on its short side are skipped
MIN_OCTAVE_SIDE = 16


@dataclass(frozen=True)
class DeepDreamConfig:
    octaves: int = 4  # image scales; the smallest is the photo shrunk by octave_scale^(octaves-1)
    octave_scale: float = 1.4  # size ratio between neighbouring octaves
    steps: int = 10  # gradient steps per octave
    lr: float = 1.5 / 255  # mean step per pixel and step, [0, 1] pixel units (1.5 levels of 255)
    jitter: int = 32  # random roll of up to ±jitter pixels per step (wrapping around)
    loss: str = "l2"  # "l2": raise mean Φ² (the activations' L2 norm); "mean": raise mean Φ
    channel: int | None = None  # one channel of the layer only (None: every channel)


def make_config(**overrides: object) -> DeepDreamConfig:
    """The defaults with some fields replaced (``None`` values are ignored); checks the values."""
    cfg = with_settings(DeepDreamConfig(), overrides, kind="deep_dream")
    check_config(cfg, positive=("lr",), positive_int=("octaves", "steps"), nonneg_int=("jitter",))
    if not cfg.octave_scale >= 1:
        raise PreimageError(f"octave scale must be >= 1, not {cfg.octave_scale!r}")
    if cfg.loss not in LOSSES:
        raise PreimageError(f"unknown DeepDream loss {cfg.loss!r} (choose from {', '.join(LOSSES)})")
    if cfg.channel is not None and (isinstance(cfg.channel, bool) or not isinstance(cfg.channel, int)
                                    or cfg.channel < 0):
        raise PreimageError(f"channel must be a whole number >= 0, not {cfg.channel!r}")
    return cfg


def _activation(maps: torch.Tensor, loss: str, channel: int | None) -> torch.Tensor:
    """Per image: mean of Φ² (``"l2"``) or of Φ (``"mean"``), over one channel or all."""
    if channel is not None:
        maps = maps[:, channel:channel + 1]
    flat = maps.reshape(maps.shape[0], -1)
    return flat.square().mean(1) if loss == "l2" else flat.mean(1)


def dream_objective(layer: str, *, loss: str = "l2", channel: int | None = None) -> Objective:
    """``-mean Φ²`` (``loss="l2"``) or ``-mean Φ`` (``"mean"``) of a layer per image, or of one of its
    channels: minimizing it amplifies what the layer sees (Mordvintsev et al. 2015)."""
    if loss not in LOSSES:
        raise PreimageError(f"unknown DeepDream loss {loss!r} (choose from {', '.join(LOSSES)})")

    def fn(s: State) -> torch.Tensor:
        return -_activation(_channel_maps(s.features[layer]), loss, channel)

    return Objective(fn, f"dream[{layer}]", [layer])


def _normalize_grad(param) -> None:
    """``g ← g / mean|g|`` per image (the step normalization of the original DeepDream)."""
    for t in param.parameters():
        if t.grad is not None:
            scale = t.grad.abs().flatten(1).mean(1).clamp_min(1e-12)
            t.grad.div_(scale.view(-1, *([1] * (t.grad.dim() - 1))))


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


@dataclass
class Measure:
    """A layer's activations on one image: L2 norm ``‖Φ‖₂``, ``mean Φ²`` and ``mean Φ`` (over the
    chosen channel, or all)."""

    norm: float
    mean_square: float
    mean: float


def measure(model: Model, image: torch.Tensor, layer: str, channel: int | None = None) -> Measure:
    """:class:`Measure` of ``layer`` on one image (``1 x C x H x W`` in [0, 1]), without transforms."""
    with torch.no_grad():
        f = _channel_maps(FeatureExtractor(model, [layer])(model.normalize(image.to(model.device)))[layer])
        if channel is not None:
            f = f[:, channel:channel + 1]
        f = f.float()
        return Measure(norm=float(f.norm()), mean_square=float(f.square().mean()), mean=float(f.mean()))


@dataclass
class DeepDreamResult:
    """One dream per photo (photos keep their own sizes, so these are lists)."""

    images: list[torch.Tensor]  # each 1 x 3 x H x W in [0, 1], the dream as saved (8-bit)
    photos: list[torch.Tensor]  # the photos at the size dreamt on
    names: list[str]
    sources: list[str]
    layer: str
    config: DeepDreamConfig
    before: list[Measure]  # the layer on each photo
    after: list[Measure]  # the layer on each saved 8-bit dream
    seconds: float = 0.0
    seed: int = 0
    status: str = "done"
    model: str = ""
    history: list[list[dict[str, float]]] = field(default_factory=list)  # per photo: every step of every octave
    octave_sizes: list[list[tuple[int, int]]] = field(default_factory=list)  # per photo: (H, W) of each octave run

    @all_or_nothing()
    def save(self, out_dir: str | os.PathLike, *, force: bool = False) -> list[Path]:
        """``NAME_dream.png``, ``NAME.png`` (the photo at the size dreamt on), ``NAME_compare.png``
        (photo | dream) per photo, and ``deepdream.json`` (the layer's activations before and after)."""
        from ..io import check_outputs, versions, write_json
        from ..viz import grid

        out = Path(out_dir)
        check_outputs(output_paths(out, self.names), force)
        written: list[Path] = []
        for n, photo, dream in zip(self.names, self.photos, self.images):
            written.append(save_image(dream[0], out / f"{n}_dream.png"))
            written.append(save_image(photo[0], out / f"{n}.png"))
            written.append(save_image(grid([photo[0], dream[0]], labels=["photo", f"DeepDream {self.layer}"]),
                                      out / f"{n}_compare.png"))
        manifest = {
            "task": "deepdream", "model": self.model, "layer": self.layer, "seed": self.seed,
            "config": asdict(self.config), "seconds": self.seconds, "status": self.status,
            "images": [{"source": s, "dream": f"{n}_dream.png", "photo": f"{n}.png",
                        "size": [int(d.shape[-2]), int(d.shape[-1])],
                        "octave_sizes": [list(hw) for hw in sizes],
                        "before": asdict(b), "after": asdict(a),
                        "norm_gain": a.norm / b.norm if b.norm > 0 else None}
                       for s, n, d, b, a, sizes in zip(self.sources, self.names, self.images, self.before,
                                                       self.after, self.octave_sizes)],
            "versions": versions(),
        }
        written.append(write_json(out / "deepdream.json", manifest))
        return written


def output_paths(out_dir: str | os.PathLike, names: Sequence[str]) -> list[Path]:
    out = Path(out_dir)
    return [out / f"{n}{suffix}.png" for n in names for suffix in ("_dream", "", "_compare")] + [out / "deepdream.json"]


def dream_names(sources: Sequence[str]) -> list[str]:
    """The file stems :meth:`DeepDreamResult.save` uses (``sample:chelsea`` -> ``chelsea``)."""
    return unique_names([image_name(s) for s in sources])


def _load(source: str | os.PathLike | torch.Tensor, size: int | None, channels: int) -> torch.Tensor:
    """A photo as ``1 x C x H x W``; with ``size``, its short side resized to ``size`` (aspect kept)."""
    if not isinstance(source, (str, os.PathLike)):
        x = as_pixels(source, "an image")
        if x.shape[0] != 1:
            raise PreimageError(f"an image tensor must be 1 x {channels} x H x W, not {tuple(source.shape)}")
        x = to_channels(x, channels)
    else:
        x = to_channels(to_tensor(load_image(source)), channels)
    if size is not None:
        h, w = x.shape[-2:]
        k = size / min(h, w)
        x = _resize(x, (max(1, round(h * k)), max(1, round(w * k)))).clamp(0, 1)
    return x


def deep_dream(
    model: Model,
    images: str | os.PathLike | torch.Tensor | Sequence[str | os.PathLike | torch.Tensor],
    *,
    layer: str,
    size: int | None = None,
    seed: int = 0,
    progress: bool = False,
    **overrides: object,
) -> DeepDreamResult:
    """DeepDream each photo (see the module docstring); photos are dreamt one after another.

    Args:
        images: a source (file, ``sample:NAME``), a ``1 x 3 x H x W`` tensor in [0, 1], a Pillow image,
            an ``H x W x 3`` numpy array (uint8, or floats in [0, 1]), or a list of them.
        layer: the layer whose activations grow (any name ``preimage layers`` lists).
        size: the short side in pixels the photo is resized to first (default: the photo as it is).
        seed: the jitter; the same seed gives the same dream.
        progress: show a progress bar for each octave.
        overrides: fields of :class:`DeepDreamConfig` (``octaves=3``, ``steps=20``, ``channel=5``,
            ``loss="mean"``, ...).
    """
    check_model(model)
    cfg = make_config(**overrides)
    if size is not None and size < 16:
        raise PreimageError(f"size {size} is too small (at least 16 pixels)")
    sources = list(images) if isinstance(images, (list, tuple)) else [images]
    if not sources:
        raise PreimageError("no image given")
    FeatureExtractor(model, [layer])  # an unknown layer fails before any photo is processed
    if cfg.channel is not None:
        from ..validate import check_channels
        from .atlas import layer_channels

        check_channels([cfg.channel], layer_channels(model, layer), layer)
    names = [image_name(s) if isinstance(s, (str, os.PathLike)) else f"image{i}" for i, s in enumerate(sources)]
    names = unique_names(names)
    photos = [_load(s, size, model.channels) for s in sources]
    from ..memory import check_fits

    for name, p in zip(names, photos):
        side = int((p.shape[-2] * p.shape[-1]) ** 0.5)
        check_fits(model, batch=1, size=side, what=f"DeepDream of {name} ({p.shape[-1]}x{p.shape[-2]} px)",
                   hint="use a smaller --size")
    from .fool import png_roundtrip

    objective = dream_objective(layer, loss=cfg.loss, channel=cfg.channel)
    g = torch.Generator().manual_seed(seed)
    device = model.device
    dreams, before, after, history, octave_sizes = [], [], [], [], []
    seconds, status = 0.0, "done"
    for photo in photos:
        photo = photo.to(device)
        h, w = photo.shape[-2:]
        sizes = [(max(1, round(h / cfg.octave_scale ** i)), max(1, round(w / cfg.octave_scale ** i)))
                 for i in reversed(range(cfg.octaves))]
        sizes = [hw for hw in sizes if min(hw) >= MIN_OCTAVE_SIDE] or sizes[-1:]
        octave_sizes.append(sizes)
        detail = torch.zeros_like(_resize(photo, sizes[0]))
        steps: list[dict[str, float]] = []
        image = photo
        for octave, hw in enumerate(sizes):
            base = _resize(photo, hw).clamp(0, 1)
            detail = _resize(detail, hw)
            param = Pixels((base + detail).clamp(0, 1), space="pixel", bounds=(0.0, 1.0))
            jit = min(cfg.jitter, max(0, min(hw) - 1))
            result = optimize(param, objective, model, steps=cfg.steps, optimizer="sgd", lr=cfg.lr, momentum=0.0,
                              transforms=[jitter_transform(jit)] if jit else [], generator=g,
                              grad_hook=_normalize_grad, progress=progress,
                              progress_desc=f"deepdream octave {octave + 1}/{len(sizes)}")
            seconds += result.seconds
            steps.extend({**r, "octave": octave + 1} for r in result.history)
            image = result.image.clamp(0, 1)
            detail = image - base
            if result.status == "diverged":
                raise PreimageError(f"DeepDream diverged: {result.message}; try a smaller lr (--lr)")
            if result.status == "interrupted":
                status = "interrupted"
                image = _resize(image, (h, w)).clamp(0, 1) if octave < len(sizes) - 1 else image
                break
        saved = png_roundtrip(image.cpu())
        dreams.append(saved)
        history.append(steps)
        before.append(measure(model, photo, layer, cfg.channel))
        after.append(measure(model, saved, layer, cfg.channel))
        if status == "interrupted":
            break
    n = len(dreams)
    return DeepDreamResult(
        images=dreams, photos=[p.cpu() for p in photos[:n]], names=names[:n],
        sources=[str(s) if isinstance(s, (str, os.PathLike)) else names[i] for i, s in enumerate(sources[:n])],
        layer=layer, config=cfg, before=before, after=after, seconds=seconds, seed=seed, status=status,
        model=model.name, history=history, octave_sizes=octave_sizes[:n],
    )
