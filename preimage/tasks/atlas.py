"""The channel atlas: each channel's feature visualization beside the real image crops that excite it.

Olah, Mordvintsev & Schubert 2017 ("Feature Visualization", Distill) show a unit twice: an image
optimized to raise it, and the dataset examples that raise it most. For each channel ``k`` of a layer:

- **visualization**: ``x*_k = argmax_x mean_{y,x} Φ_k(x)`` (:func:`preimage.objectives.channel`),
  with the class-visualization Fourier recipe (:class:`~preimage.params.Fourier`: decorrelated colour,
  sigmoid; Adam lr 0.05, jitter, random scale 0.9–1.1). Many channels are optimized in ONE batch
  (image ``i`` raises channel ``k_i``; the images do not interact), in chunks of ``batch`` channels.
- **dataset examples**: every photo (short side resized to ``photo_size``, not cropped) goes through
  the network once; for each channel, each photo's peak ``max_{y,x} Φ_k(photo)[y, x]`` and its
  position. The ``top_k`` photos with the highest peak give one crop each: the square window of side
  ``crop`` pixels centred on the peak's receptive-field centre ``((y + ½) H/h, (x + ½) W/w)``, moved
  inside the photo (default side: 3 × the layer's stride ``H/h``; the whole photo for a layer without
  positions). One crop per photo, so the examples are different photos (a photo given twice, or
  ``sample:cat``, which is ``sample:chelsea``, counts once).
- **activations shown**: the channel's spatial mean ``mean_{y,x} Φ_k`` on each image as shown — the
  saved 8-bit visualization, and each crop resized to the visualization's size — so the numbers in a
  row compare directly.

Outputs: ``atlas.png`` (a grid), ``atlas.html`` (one self-contained page, images inlined),
``atlas.json`` and ``channels/cNNNN.png``. Example::

    preimage atlas --layer blocks.5 --channels 0:32 --out out/atlas     # all bundled photos
"""
from __future__ import annotations

import base64
import html
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import with_settings
from ..errors import PreimageError
from ..images import SAMPLES, expand_sources, image_name, load_image, save_image, to_channels, to_tensor
from ..io import all_or_nothing
from ..layers import FeatureExtractor
from ..models import Model, check_model
from ..objectives import _channel_maps, channel
from ..optimize import optimize
from ..params import Fourier
from ..transforms import jitter, random_scale
from ..validate import check_channels, check_config, parse_channels

__all__ = ["AtlasConfig", "AtlasResult", "Example", "channel_atlas", "layer_channels", "default_sources",
           "output_paths", "make_config"]


@dataclass(frozen=True)
class AtlasConfig:
    size: int = 128  # side of each visualization (and of the crops as shown), pixels
    steps: int = 256  # Adam steps per visualization (classviz's fourier preset)
    lr: float = 0.05  # Adam learning rate on the Fourier spectrum
    jitter: int | None = None  # random roll of up to ±jitter px per step (None: 16 at 224 px, scaled with size)
    scales: tuple[float, ...] = (0.9, 0.95, 1.0, 1.05, 1.1)  # random rescaling per step
    init_std: float = 0.01  # std of the starting spectrum
    top_k: int = 4  # crops per channel (one per photo)
    crop: int | None = None  # crop side in the analysed photo's pixels (None: 3 × the layer's stride)
    photo_size: int | None = None  # short side of the photos when analysed (None: the model's input size)
    batch: int = 32  # channels optimized together (chunks of this many; smaller if memory demands)


def make_config(**overrides: object) -> AtlasConfig:
    cfg = with_settings(AtlasConfig(), overrides, kind="channel_atlas")
    check_config(cfg, positive=("lr",), positive_int=("steps", "top_k", "batch"), nonneg=("init_std",),
                 nonneg_int=("jitter",), labels={"top_k": "top-k"})
    for name in ("size", "photo_size", "crop"):
        v = getattr(cfg, name)
        if v is not None and v < 16:
            raise PreimageError(f"{name.replace('_', ' ')} {v} is too small (at least 16 pixels)")
    if not cfg.scales or any(not s > 0 for s in cfg.scales):
        raise PreimageError("scales must be > 0")
    return cfg


def default_sources() -> list[str]:
    """Every bundled photo, as ``sample:NAME``."""
    return [f"sample:{n}" for n in SAMPLES]


def layer_channels(model: Model, layer: str) -> int:
    """The number of channels of ``layer`` (unknown layers raise with a did-you-mean)."""
    fx = FeatureExtractor(model, [layer])
    shape = fx.shapes[layer]
    if len(shape) == 2:  # (N, C) tokens as the module returns them, or register tokens
        return int(shape[1])
    if not shape:
        raise PreimageError(f"layer {layer!r} of {model.name} has no channels")
    return int(shape[0])


@dataclass
class Example:
    """One dataset example of a channel: a crop of a photo around the channel's peak."""

    source: str
    peak: float  # max_{y,x} Φ_k on the whole photo
    position: tuple[int, int]  # (y, x) of the peak on the layer's map
    box: tuple[int, int, int]  # (top, left, side) of the crop in the analysed photo's pixels
    activation: float = 0.0  # mean_{y,x} Φ_k on the crop resized to the visualization's size
    image: torch.Tensor | None = field(default=None, repr=False)  # 3 x size x size


@dataclass
class AtlasResult:
    layer: str
    channels: list[int]
    images: torch.Tensor  # C x 3 x size x size: the saved 8-bit visualizations
    activation: list[float]  # mean_{y,x} Φ_k on each saved visualization
    examples: list[list[Example]]  # per channel, best first
    sources: list[str]
    config: AtlasConfig
    seed: int = 0
    seconds: float = 0.0  # optimizing the visualizations
    seconds_examples: float = 0.0  # running the photos and crops
    status: str = "done"
    model: str = ""
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def channels_per_minute(self) -> float:
        """Channels visualized per minute of optimization (an interrupted chunk counts by its steps done)."""
        done = sum(h.get("chunk_size", 0.0) for h in self.history) / max(1, self.config.steps)
        return 60.0 * done / self.seconds if self.seconds > 0 else 0.0

    def grid(self):
        """The atlas as one Pillow image: per channel its visualization, then its crops."""
        from ..viz import grid

        k = max([len(e) for e in self.examples] + [0])
        per_row = 2 if len(self.channels) > 8 else 1
        cells, labels = [], []
        for c, img, act, ex in zip(self.channels, self.images, self.activation, self.examples):
            cells.append(img)
            labels.append(f"#{c}  {act:.3g}")
            for j in range(k):
                cells.append(ex[j].image if j < len(ex) else None)
                labels.append(f"{image_name(ex[j].source)} {ex[j].activation:.3g}" if j < len(ex) else "")
        return grid(cells, ncols=(1 + k) * per_row, labels=labels, font_size=11, fit_labels=True)

    def html(self) -> str:
        """One self-contained page (images inlined as base64 PNG)."""
        from ..images import encode_png

        e = html.escape

        def uri(t: torch.Tensor) -> str:
            return "data:image/png;base64," + base64.b64encode(encode_png(t)).decode()

        rows = []
        for c, img, act, ex in zip(self.channels, self.images, self.activation, self.examples):
            crops = "".join(
                f"<figure><img src='{uri(x.image)}' alt='crop of {e(x.source)}'><figcaption>{e(image_name(x.source))}"
                f"<br>{x.activation:.4g} <span class=m>(peak {x.peak:.4g})</span></figcaption></figure>"
                for x in ex if x.image is not None)
            rows.append(f"<tr><th>{c}</th><td><figure><img src='{uri(img)}' alt='visualization of channel {c}'>"
                        f"<figcaption>{act:.4g}</figcaption></figure></td><td>{crops}</td></tr>")
        cfg = self.config
        return "\n".join([
            "<!doctype html><html lang=en><head><meta charset=utf-8>",
            f"<title>Channel atlas: {e(self.model)} {e(self.layer)}</title><style>",
            "body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1200px;padding:0 16px;color:#222}"
            "table{border-collapse:collapse}td,th{border-top:1px solid #ddd;padding:6px;vertical-align:top}"
            "figure{display:inline-block;margin:0 6px 0 0;text-align:center;font-size:.8em}"
            f"img{{width:{cfg.size}px;height:{cfg.size}px;image-rendering:auto}}.m{{color:#777}}</style></head><body>",
            f"<h1>Channel atlas: {e(self.model)} <code>{e(self.layer)}</code></h1>",
            f"<p>{len(self.channels)} channels. Left: an image optimized to raise the channel's spatial mean "
            f"(Fourier parameterization, {cfg.steps} Adam steps at {cfg.size} px, jitter and random scale). Right: "
            f"crops of the {min(cfg.top_k, len(self.sources))} photos (of {len(self.sources)}) where the channel peaks "
            "highest, one per photo, centred on "
            f"the peak. Numbers: the channel's spatial mean on the image shown (crops resized to {cfg.size} px); "
            "in brackets, the peak on the whole photo.</p>",
            "<table><thead><tr><th>channel</th><th>visualization</th><th>dataset examples</th></tr></thead><tbody>",
            *rows,
            "</tbody></table>",
            f"<p class=m>preimage seed {self.seed}; visualizations {self.seconds:.1f} s "
            f"({self.channels_per_minute:.1f} channels/min); photos and crops {self.seconds_examples:.1f} s.</p>",
            "</body></html>",
        ])

    @all_or_nothing()
    def save(self, out_dir: str | os.PathLike, *, force: bool = False) -> list[Path]:
        """``atlas.png``, ``atlas.html``, ``atlas.json`` and ``channels/cNNNN.png``."""
        from ..io import atomic_write, check_outputs, versions, write_json

        out = Path(out_dir)
        check_outputs(output_paths(out, self.channels), force)
        written = [save_image(img, out / "channels" / f"c{c:04d}.png") for c, img in zip(self.channels, self.images)]
        written.append(save_image(self.grid(), out / "atlas.png"))
        written.append(atomic_write(out / "atlas.html", self.html().encode()))
        manifest = {
            "task": "atlas", "model": self.model, "layer": self.layer, "seed": self.seed,
            "config": asdict(self.config), "status": self.status, "seconds": self.seconds,
            "seconds_examples": self.seconds_examples, "channels_per_minute": self.channels_per_minute,
            "sources": self.sources,
            "crops": "one per photo: a square of side `crop` centred on the channel's peak (its receptive-field "
                     "centre), moved inside the photo",
            "channels": [{"channel": c, "file": f"channels/c{c:04d}.png", "activation": a,
                          "examples": [{"source": x.source, "activation": x.activation, "peak": x.peak,
                                        "position": list(x.position), "box": list(x.box)} for x in ex]}
                         for c, a, ex in zip(self.channels, self.activation, self.examples)],
            "versions": versions(),
        }
        written.append(write_json(out / "atlas.json", manifest))
        return written


def output_paths(out_dir: str | os.PathLike, channels: Sequence[int]) -> list[Path]:
    out = Path(out_dir)
    return ([out / "channels" / f"c{c:04d}.png" for c in channels]
            + [out / "atlas.png", out / "atlas.html", out / "atlas.json"])


def _photo(source: str, size: int, channels: int) -> torch.Tensor:
    """``1 x C x H x W``: the photo with its short side resized to ``size`` (not cropped)."""
    x = to_channels(to_tensor(load_image(source)), channels)
    h, w = x.shape[-2:]
    k = size / min(h, w)
    hw = (max(1, round(h * k)), max(1, round(w * k)))
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def _box(cy: float, cx: float, side: int, h: int, w: int) -> tuple[int, int, int]:
    """A square of ``side`` centred on ``(cy, cx)``, shrunk to fit and moved inside ``h x w``."""
    side = min(side, h, w)
    top = min(max(0, round(cy - side / 2)), h - side)
    left = min(max(0, round(cx - side / 2)), w - side)
    return top, left, side


def _channel_means(model: Model, fx: FeatureExtractor, layer: str, images: torch.Tensor,
                   channels: Sequence[int], chunk: int) -> list[float]:
    """``mean_{y,x} Φ_{k_i}(image_i)`` for each image and its channel, without transforms."""
    out: list[float] = []
    with torch.no_grad():
        for i in range(0, images.shape[0], chunk):
            x = images[i:i + chunk].to(model.device)
            maps = _channel_maps(fx(model.normalize(x))[layer]).mean((2, 3))
            idx = torch.as_tensor(list(channels[i:i + chunk]), device=maps.device)
            out.extend(maps.gather(1, idx[:, None]).squeeze(1).float().tolist())
    return out


def _examples(model: Model, fx: FeatureExtractor, layer: str, sources: Sequence[str], channels: Sequence[int],
              cfg: AtlasConfig) -> list[list[Example]]:
    """The ``top_k`` photos per channel by peak activation, each with its crop box (see the module docstring)."""
    photo_size = cfg.photo_size or model.input_size
    best: list[list[Example]] = [[] for _ in channels]  # per channel, the top_k so far, highest peak first
    idx = torch.as_tensor(list(channels))
    seen: set[int] = set()
    for src in sources:
        photo = _photo(src, photo_size, model.channels)
        key = hash(photo.numpy().tobytes())
        if key in seen:  # the same photo twice (sample:cat is sample:chelsea): its crops once
            continue
        seen.add(key)
        with torch.no_grad():
            maps = _channel_maps(fx(model.normalize(photo.to(model.device)))[layer])[0].float().cpu()
        h, w = photo.shape[-2:]
        mh, mw = maps.shape[-2:]
        side = cfg.crop or (3 * max(round(h / mh), round(w / mw)))
        if mh == mw == 1:
            side = min(h, w)  # a layer without positions: the whole (square-cropped) photo
        peak, where = maps[idx].reshape(len(channels), -1).max(1)
        for j, top_k in enumerate(best):
            value = float(peak[j])
            if len(top_k) == cfg.top_k and value <= top_k[-1].peak:
                continue  # only the crops that may be shown are cut (memory stays bounded for big folders)
            y, x = divmod(int(where[j]), mw)
            box = _box((y + 0.5) * h / mh, (x + 0.5) * w / mw, side, h, w)
            top, left, s = box
            crop = F.interpolate(photo[:, :, top:top + s, left:left + s], size=(cfg.size, cfg.size), mode="bilinear",
                                 align_corners=False, antialias=True).clamp(0, 1)[0]
            top_k.append(Example(src, value, (y, x), box, image=crop))
            top_k.sort(key=lambda e: -e.peak)  # stable: a tie keeps the earlier photo first
            del top_k[cfg.top_k:]
    return best


def _chunk(model: Model, cfg: AtlasConfig, n: int) -> int:
    """The largest batch of visualizations (at most ``cfg.batch``) the memory guard lets through."""
    from ..memory import check_fits

    b = min(cfg.batch, n)
    while b > 1:
        try:
            check_fits(model, batch=b, size=cfg.size, what="")
            return b
        except PreimageError:
            b //= 2
    check_fits(model, batch=1, size=cfg.size, what=f"a channel visualization at {cfg.size} px",
               hint="use a smaller --size")
    return 1


def channel_atlas(
    model: Model,
    layer: str,
    channels: str | Sequence[int],
    images: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    *,
    seed: int = 0,
    progress: bool = False,
    **overrides: object,
) -> AtlasResult:
    """Visualize ``channels`` of ``layer`` and find their dataset examples (see the module docstring).

    Args:
        layer: the layer whose channels are shown (any name ``preimage layers`` lists).
        channels: indices, or a spec string (``"0:32"``, ``"3,7,9"``).
        images: photos (files, folders of images, ``sample:NAME``); default: every bundled photo.
        seed: the starting spectra and the jitter; the same seed and batch give the same images.
        progress: show a progress bar for each batch of channels.
        overrides: fields of :class:`AtlasConfig` (``size=96``, ``steps=128``, ``top_k=6``, ``batch=8``, ...).
    """
    check_model(model)
    cfg = make_config(**overrides)
    chans = parse_channels(channels) if isinstance(channels, str) else list(dict.fromkeys(int(c) for c in channels))
    if not chans:
        raise PreimageError("no channels given")
    sources = expand_sources([images] if isinstance(images, (str, os.PathLike)) else list(images or default_sources()))
    if not sources:
        raise PreimageError("no images found")
    count = layer_channels(model, layer)
    check_channels(chans, count, layer)
    fx = FeatureExtractor(model, [layer])
    for src in sources:
        load_image(src)  # a damaged file fails before the optimization starts
    chunk = _chunk(model, cfg, len(chans))
    size = cfg.size
    jit = cfg.jitter if cfg.jitter is not None else max(1, round(16 * size / 224))
    g = torch.Generator().manual_seed(seed)
    images_out: list[torch.Tensor] = []
    history: list[dict[str, float]] = []
    seconds, status = 0.0, "done"
    from .fool import png_roundtrip

    for i in range(0, len(chans), chunk):
        part = chans[i:i + chunk]
        param = Fourier((len(part), model.channels, size, size), sd=cfg.init_std, generator=g, device=model.device)
        result = optimize(param, channel(layer, part), model, steps=cfg.steps, optimizer="adam", lr=cfg.lr,
                          transforms=[jitter(jit), random_scale(cfg.scales)], generator=g, progress=progress,
                          progress_desc=f"atlas channels {i + 1}-{i + len(part)} of {len(chans)}")
        seconds += result.seconds
        history.extend({**r, "chunk": i // chunk, "chunk_size": len(part)} for r in result.history)
        if result.status == "diverged":
            raise PreimageError(f"channel visualization diverged: {result.message}; try a smaller lr (--lr)")
        images_out.append(png_roundtrip(result.image.clamp(0, 1).cpu()))
        if result.status == "interrupted":
            status = "interrupted"
            break
    vis = torch.cat(images_out)
    done = chans[:vis.shape[0]]
    start = time.perf_counter()
    activation = _channel_means(model, fx, layer, vis, done, chunk)
    examples = _examples(model, fx, layer, sources, done, cfg)
    flat = [e for ex in examples for e in ex]
    if flat:
        values = _channel_means(model, fx, layer, torch.stack([e.image for e in flat]),  # type: ignore[misc]
                                [c for c, ex in zip(done, examples) for _ in ex], chunk)
        for e, v in zip(flat, values):
            e.activation = v
    return AtlasResult(
        layer=layer, channels=done, images=vis, activation=activation, examples=examples, sources=sources,
        config=replace(cfg, jitter=jit), seed=seed, seconds=seconds, seconds_examples=time.perf_counter() - start,
        status=status, model=model.name, history=history,
    )
