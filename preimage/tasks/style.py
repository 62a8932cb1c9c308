"""Neural style transfer, texture synthesis and feature inversion as one recipe.

Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional Neural Networks" (CVPR 2016), and
for the colour option Gatys et al., "Preserving Color in Neural Artistic Style Transfer" (2016).

    x̂ = argmin_x  w_c Σ (F(x) − P)²  +  w_s Σ_l w_l Σ (G_l(x) − A_l)²  +  w_tv Σ (dx² + dy²)

``F``/``P``: activations of the image and of the content photo at the content layer; ``G_l = F_l F_lᵀ``
the Gram matrix of the image's activations at style layer ``l`` (optionally divided by C·H·W or H·W),
``A_l`` the style image's Gram matrix (with several style images, their weighted mean); ``dx, dy``:
differences between neighbouring pixels of the network input. Two special cases fall out:
``style_weight=0`` is feature inversion of the content photo, ``content_weight=0`` is texture
synthesis (Gatys et al., NeurIPS 2015) of the style image.

Everything runs on the one engine loop (:func:`preimage.optimize.optimize`): the terms are the
engine's ``feature_loss``, ``gram_matrix``/``gram_loss`` and ``total_variation``.

Presets (``STYLE_PRESETS``; every field can be overridden):

- ``classic`` (SqueezeNet 1.1): the settings of Stanford CS231n's style-transfer exercise:
  ``features.N`` of torchvision's ``squeezenet1_1`` (the index of the module in ``net.features``),
  content ``features.3`` weight 6e-2, style ``features.1, .4, .6, .7`` weights 300000, 1000, 15, 3
  (Gram divided by C·H·W), TV 2e-2, ImageNet mean/std input, images resized (short side) to 192 px,
  Adam lr 3.0 → 0.1 at step 180 (a fresh optimizer, as the exercise builds a new one), 200 steps,
  the input clamped to [-1.5, 1.5] before each of the first 190 steps.
- ``vgg`` (VGG-19): Gatys et al.'s layers, content ``relu4_2``, style ``relu1_1 … relu5_1`` with equal
  weights, L-BFGS, 512 px.
- ``efficientnet`` (the embedded ``efficientnet_lite0``, the default): layers and weights chosen by
  experiment, see docs/style.md.

``preset="auto"`` picks the preset that belongs to the model (``squeezenet*`` → classic, ``vgg*`` →
vgg, ``efficientnet_lite*`` → efficientnet); other models need explicit layers.

Python:

    >>> model = preimage.load_model()                        # efficientnet_lite0, offline
    >>> res = preimage.stylize(model, "sample:chelsea", "painting.jpg")
    >>> res.losses["style"]["start"] / res.losses["style"]["end"], res.save("out/style")

Command line: ``preimage style sample:chelsea painting.jpg``.
"""
from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import from_preset, with_settings
from ..errors import PreimageError
from ..images import _to_rgb, as_pixels, conversion_notes, image_name, load_image, save_image, to_channels, to_tensor
from ..io import all_or_nothing, check_outputs, versions, write_json
from ..layers import FeatureExtractor, parse_layer_spec, resolve_layer
from ..models import Model, check_model
from ..objectives import Objective, State, feature_loss, gram_loss, gram_matrix, total_variation
from ..optimize import Result, Step, forward_state, optimize
from ..params import Pixels

__all__ = ["StyleConfig", "STYLE_PRESETS", "style_config", "stylize", "Stylization", "preset_for", "output_name",
           "parse_style_layers"]


@dataclass
class StyleConfig:
    """Every setting of a style-transfer run. Presets fill these; users override any field."""

    content_layer: str = "blocks.3"                      # layer whose activations keep the content
    content_weight: float = 1.0                          # w_c (0: texture synthesis)
    style_layers: tuple[str, ...] = ("blocks.1",)        # layers whose Gram matrices carry the style
    style_layer_weights: tuple[float, ...] = (1.0,)      # w_l, one per style layer
    style_weight: float = 1.0                            # w_s, scales every w_l (0: feature inversion)
    tv_weight: float = 0.0                               # w_tv, total variation of the network input
    gram_normalize: str = "chw"                          # Gram divided by C·H·W ("chw"), H·W ("hw") or not ("none")
    image_size: int = 256                                # content (and result) short side in pixels
    style_size: int = 256                                # each style image's short side in pixels
    init: str = "content"                                # content | noise: the starting image
    noise_scale: float = 0.1                             # std of the starting noise, around grey, in [0, 1] units
    steps: int = 200                                     # optimization steps
    optimizer: str = "adam"                              # adam | lbfgs | sgd
    lr: float = 0.05                                     # learning rate, in units of ``space``
    lr_drop_step: int | None = None                      # after this step the lr becomes ``lr_drop_to``
    lr_drop_to: float = 0.0                              # ... this value (ignored without lr_drop_step)
    reset_on_drop: bool = False                          # start a fresh optimizer at the drop (CS231n does)
    space: str = "pixel"                                 # where the pixels live: pixel ([0, 1] RGB) | input
    bounds: tuple[float, float] | None = (0.0, 1.0)      # clamp the pixels to this box (in ``space`` units)
    clamp_steps: int | None = None                       # clamp only before the first N steps (None: always)
    preserve_color: bool = False                         # transfer luminance only, keep the content's colours
    seed: int = 0                                        # random seed (noise start)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_CLASSIC = StyleConfig(
    content_layer="features.3", content_weight=6e-2,
    style_layers=("features.1", "features.4", "features.6", "features.7"),
    style_layer_weights=(300000.0, 1000.0, 15.0, 3.0), style_weight=1.0, tv_weight=2e-2,
    gram_normalize="chw", image_size=192, style_size=192, init="content", steps=200, optimizer="adam",
    lr=3.0, lr_drop_step=180, lr_drop_to=0.1, reset_on_drop=True, space="input", bounds=(-1.5, 1.5),
    clamp_steps=190,
)

# Gatys et al. 2016: E_l = Σ(G_raw − A_raw)² / (4 N_l² M_l²) = Σ(G_chw − A_chw)² / 4 with G_chw the
# Gram divided by N·M; content ½ Σ(F − P)²; α/β = 1e-3 with w_l = 1/5. Hence w_c = 0.5 and
# w_l = 1e3 / 5 / 4 = 50 on chw-normalized Grams.
_VGG = StyleConfig(
    content_layer="relu4_2", content_weight=0.5,
    style_layers=("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
    style_layer_weights=(50.0,) * 5, style_weight=1.0, tv_weight=0.0, gram_normalize="chw",
    image_size=512, style_size=512, init="content", steps=500, optimizer="lbfgs", lr=1.0,
    space="input", bounds=None,
)

# Found by experiment on the embedded weights (docs/style.md): w_l ≈ 1 / (typical Σ A_l²) so each
# layer starts with a similar share; the stem is left out (it paints high-frequency colour noise).
_EFFICIENTNET = StyleConfig(
    content_layer="blocks.3", content_weight=3e-7,
    style_layers=("blocks.1", "blocks.2", "blocks.3", "blocks.4"),
    style_layer_weights=(0.5, 3.0, 6.0, 10.0), style_weight=1e-3, tv_weight=5e-5,
    gram_normalize="chw", image_size=256, style_size=256, init="content", steps=200, optimizer="adam",
    lr=0.05, lr_drop_step=180, lr_drop_to=0.01, space="pixel", bounds=(0.0, 1.0),
)

STYLE_PRESETS: dict[str, StyleConfig] = {"efficientnet": _EFFICIENTNET, "classic": _CLASSIC, "vgg": _VGG}

#: which preset belongs to which model family (``preset="auto"``)
_MODEL_PRESETS = (("efficientnet_lite", "efficientnet"), ("squeezenet", "classic"), ("vgg", "vgg"))


def preset_for(model_name: str) -> str | None:
    """The preset that belongs to a model (``None``: no preset; give the layers yourself)."""
    for prefix, preset in _MODEL_PRESETS:
        if model_name.startswith(prefix):
            return preset
    return None


def style_config(preset: str = "efficientnet", **overrides: Any) -> StyleConfig:
    """The preset's config with ``overrides`` (None values are ignored), validated."""
    cfg = from_preset(STYLE_PRESETS, preset, overrides, kind="stylize", preset_word="style preset",
                      tuple_fields=("style_layers", "style_layer_weights", "bounds"))
    if "style_layers" in overrides and overrides["style_layers"] is not None and overrides.get("style_layer_weights") is None:
        cfg.style_layer_weights = (1.0,) * len(cfg.style_layers)
    _validate(cfg)
    return cfg


def _finite_nonneg(name: str, v: Any) -> None:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not (v >= 0 and math.isfinite(v)):
        raise PreimageError(f"{name} must be a finite number >= 0, not {v!r}")


def _validate(cfg: StyleConfig) -> None:
    if not isinstance(cfg.steps, int) or cfg.steps < 0:
        raise PreimageError(f"steps must be an integer >= 0, not {cfg.steps!r}")
    for name in ("content_weight", "style_weight", "tv_weight", "lr_drop_to", "noise_scale"):
        _finite_nonneg(name, getattr(cfg, name))
    for w in cfg.style_layer_weights:
        _finite_nonneg("a style layer weight", w)
    if not (isinstance(cfg.lr, (int, float)) and cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise PreimageError(f"learning rate must be a finite number > 0, not {cfg.lr!r}")
    if cfg.optimizer not in ("adam", "lbfgs", "sgd"):
        raise PreimageError(f"unknown optimizer {cfg.optimizer!r} (adam, lbfgs, sgd)")
    if cfg.space not in ("pixel", "input"):
        raise PreimageError(f"space must be pixel or input, not {cfg.space!r}")
    if cfg.init not in ("content", "noise"):
        raise PreimageError(f"init must be content or noise, not {cfg.init!r}")
    if cfg.gram_normalize not in ("chw", "hw", "none"):
        raise PreimageError(f"gram normalization must be chw, hw or none, not {cfg.gram_normalize!r}")
    if len(cfg.style_layers) != len(cfg.style_layer_weights):
        raise PreimageError(f"{len(cfg.style_layers)} style layers but {len(cfg.style_layer_weights)} style layer weights")
    if not cfg.content_layer and cfg.content_weight > 0:
        raise PreimageError("no content layer given")
    if cfg.content_weight == 0 and (cfg.style_weight == 0 or not any(w > 0 for w in cfg.style_layer_weights)):
        raise PreimageError("the content and style weights are all 0: nothing to optimize but the TV prior "
                            "(give a content or a style weight above 0)")
    if not cfg.style_layers and cfg.style_weight > 0:
        raise PreimageError("no style layer given")
    for name in ("image_size", "style_size"):
        if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 16:
            raise PreimageError(f"{name} must be an integer >= 16, not {getattr(cfg, name)!r}")
    if cfg.bounds is not None and not (len(cfg.bounds) == 2 and cfg.bounds[0] < cfg.bounds[1]):
        raise PreimageError(f"bounds must be (low, high) with low < high, not {cfg.bounds!r}")


def parse_style_layers(spec: str | Sequence[str | tuple[str, float]]) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """``"features.1:300000+features.4:1000"`` (or a list of names / (name, weight) pairs) ->
    (layers, weights); a layer without ``:weight`` gets 1."""
    items: list[tuple[str, float]] = []
    for part in ([spec] if isinstance(spec, str) else list(spec)):
        if isinstance(part, tuple):
            items.append((str(part[0]), float(part[1])))
        else:
            items.extend(parse_layer_spec(part))
    return tuple(n for n, _ in items), tuple(w for _, w in items)


# -- images ----------------------------------------------------------------------------------

def _load(src: Any, size: int, what: str) -> tuple[torch.Tensor, str, str]:
    """A source (path, sample:NAME, PIL image or [0, 1] tensor) resized so its short side is ``size``
    (aspect ratio kept, no crop). Returns (1 x 3 x H x W, short name, source text)."""
    import torchvision.transforms.functional as TF
    from PIL import Image

    if not isinstance(src, (str, os.PathLike, Image.Image)):
        t = as_pixels(src, f"the {what} image")
        if t.shape[0] != 1:
            raise PreimageError(f"the {what} image must be one 3 x H x W (or 1 x H x W) image, not {tuple(src.shape)}")
        t = to_channels(t, 3)
        if min(t.shape[-2:]) != size:
            t = TF.resize(t, size, interpolation=TF.InterpolationMode.BILINEAR, antialias=True).clamp(0, 1)
        return t, what, "tensor"
    img = src if isinstance(src, Image.Image) else load_image(src)
    img = TF.resize(_to_rgb(img), size, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    name = what if isinstance(src, Image.Image) else image_name(src)
    return to_tensor(img), name, (what if isinstance(src, Image.Image) else str(src))


# Luminance/chrominance (YIQ, as used by Gatys et al. 2016 for colour preservation).
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _to_yiq(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("dc,bchw->bdhw", _YIQ.to(x), x)


def _from_yiq(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("dc,bchw->bdhw", torch.linalg.inv(_YIQ).to(x), x)


def _luminance(x: torch.Tensor) -> torch.Tensor:
    return _to_yiq(x)[:, :1]


def _match_luminance(style_y: torch.Tensor, content_y: torch.Tensor) -> torch.Tensor:
    """Shift and scale the style's luminance to the content's mean and standard deviation."""
    s_mu, s_sd = style_y.mean(), style_y.std().clamp_min(1e-6)
    return ((style_y - s_mu) * (content_y.std() / s_sd) + content_y.mean()).clamp(0, 1)


# -- objective -------------------------------------------------------------------------------

@dataclass
class _Parts:
    """The pieces of the objective, kept so each can be evaluated on its own."""

    content: Objective | None
    style_layers: list[tuple[str, float, Objective]]  # (layer, w_s·w_l, Σ(G − A)²)
    tv: Objective | None

    def objective(self) -> Objective:
        terms = [t for t in (self.content, self._style(), self.tv) if t is not None]
        if not terms:
            raise PreimageError("every weight is zero: nothing to optimize")
        obj = terms[0]
        for t in terms[1:]:
            obj = obj + t
        return obj

    def _style(self) -> Objective | None:
        layers = [(w, o) for _, w, o in self.style_layers if w > 0]
        if not layers:
            return None

        def fn(s: State) -> torch.Tensor:
            total = None
            for w, o in layers:
                v = w * o(s)
                total = v if total is None else total + v
            return total  # type: ignore[return-value]

        return Objective(fn, "style", [n for n, w, _ in self.style_layers if w > 0])

    @property
    def layers(self) -> list[str]:
        names = [n for n, _, _ in self.style_layers]
        return list(dict.fromkeys(([self.content.layers[0]] if self.content is not None else []) + names))


def _build(cfg: StyleConfig, model: Model, content: torch.Tensor, styles: list[torch.Tensor],
           blend: list[float]) -> _Parts:
    c_layer = cfg.content_layer if cfg.content_weight > 0 else None
    if c_layer is not None:
        resolve_layer(model, c_layer)  # one line with did-you-mean for an unknown name
    s_layers = list(cfg.style_layers) if cfg.style_weight > 0 else []
    for n in s_layers:
        resolve_layer(model, n)  # one line with did-you-mean for an unknown name
    content_obj = None
    if c_layer is not None:
        with torch.no_grad():
            p = FeatureExtractor(model, [c_layer])(model.normalize(content))[c_layer]
        content_obj = cfg.content_weight * feature_loss(c_layer, p, normalize=False, name="content")
    style_terms: list[tuple[str, float, Objective]] = []
    if s_layers:
        fx = FeatureExtractor(model, s_layers)
        total = sum(blend)
        grams: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for img, b in zip(styles, blend):
                feats = fx(model.normalize(img))
                for n in s_layers:
                    g = gram_matrix(feats[n], cfg.gram_normalize) * (b / total)
                    grams[n] = g if n not in grams else grams[n] + g
        for n, w in zip(cfg.style_layers, cfg.style_layer_weights):
            style_terms.append((n, cfg.style_weight * w, gram_loss(n, grams[n], normalize=cfg.gram_normalize)))
    tv_obj = cfg.tv_weight * total_variation(2.0, space="input", name="tv") if cfg.tv_weight > 0 else None
    return _Parts(content_obj, style_terms, tv_obj)


@torch.no_grad()
def _evaluate(parts: _Parts, model: Model, image: torch.Tensor) -> dict[str, Any]:
    """Each weighted term (and each style layer, weighted) on one image in [0, 1]."""
    names = parts.layers
    fx = FeatureExtractor(model, names) if names else None
    state = forward_state(Pixels(image.to(model.device)), model, fx)
    out: dict[str, Any] = {}
    if parts.content is not None:
        out["content"] = float(parts.content(state).sum())
    if parts.style_layers:
        per = {n: float(w * o(state).sum()) for n, w, o in parts.style_layers}
        out["style"] = sum(v for n, v in per.items())
        out["style_layers"] = per
    if parts.tv is not None:
        out["tv"] = float(parts.tv(state).sum())
    return out


# -- engine hooks ----------------------------------------------------------------------------

class _LrDrop:
    """After step ``at``, set the learning rate to ``lr`` (optionally with a fresh optimizer state,
    as CS231n's exercise builds a new Adam at the drop). Stepped by the engine once per step."""

    def __init__(self, opt: torch.optim.Optimizer, at: int, lr: float, reset: bool):
        self.opt, self.at, self.lr, self.reset, self.n = opt, at, lr, reset, 0

    def step(self) -> None:
        self.n += 1
        if self.n == self.at:
            for g in self.opt.param_groups:
                g["lr"] = self.lr
            if self.reset:
                self.opt.state.clear()


def _release_clamp(param: Pixels, steps: int) -> Callable[[Step], bool]:
    """Clamp before the first ``steps`` steps only: the box is lifted after step ``steps - 1``."""

    def cb(s: Step) -> bool:
        if s.step >= steps - 1:
            param.bounds = None
        return False

    return cb


# -- result ----------------------------------------------------------------------------------

@dataclass
class Stylization:
    """The result of :func:`stylize`: image, inputs, settings, per-term losses and the history."""

    image: torch.Tensor            # 1 x 3 x H x W result in [0, 1] (clamped)
    content: torch.Tensor          # 1 x 3 x H x W content photo as optimized against
    styles: list[torch.Tensor]     # each style image at its style size
    name: str                      # output base name: CONTENT_STYLE
    sources: dict[str, Any]        # content source, style sources and blend weights
    model: str
    config: StyleConfig
    result: Result
    losses: dict[str, Any] = field(default_factory=dict)  # term -> {"start", "end"}; style_layers too

    @property
    def status(self) -> str:
        return self.result.status

    @property
    def history(self) -> list[dict[str, float]]:
        return self.result.history

    def triptych(self):
        """content | style (each style image) | result, labelled, as a Pillow image."""
        h = self.image.shape[-2]
        cells = [self.content[0]] + [_fit_height(s[0], h) for s in self.styles] + [self.image[0]]
        labels = ["content"] + [f"style {image_name(s)}" if isinstance(s, str) else "style"
                                for s in self.sources["styles"]] + ["result"]
        return _grid(cells, labels)

    def manifest(self) -> dict[str, Any]:
        steps = self.result.steps
        return {
            "task": "style",
            "model": self.model,
            **self.sources,
            "image_notes": conversion_notes([self.sources.get("content"), *(self.sources.get("styles") or [])]),
            "config": self.config.as_dict(),
            "status": self.result.status,
            "message": self.result.message,
            "steps_run": steps,
            "seconds": round(self.result.seconds, 3),
            "seconds_per_step": round(self.result.seconds / steps, 4) if steps else None,
            "losses": self.losses,
            "history": self.result.history,
            "versions": versions(),
        }

    def output_paths(self, out: str | os.PathLike) -> list[Path]:
        out = Path(out)
        return [out / f"{self.name}.png", out / f"{self.name}_triptych.png", out / f"{self.name}.json"]

    @all_or_nothing()
    def save(self, out: str | os.PathLike, *, force: bool = False) -> list[Path]:
        """Write ``NAME.png`` (result), ``NAME_triptych.png`` and ``NAME.json`` (manifest), atomically."""
        paths = self.output_paths(out)
        check_outputs(paths, force)
        save_image(self.image[0], paths[0])
        save_image(self.triptych(), paths[1])
        write_json(paths[2], self.manifest())
        return paths


def _fit_height(t: torch.Tensor, h: int) -> torch.Tensor:
    import torch.nn.functional as F

    if t.shape[-2] == h:
        return t
    w = max(1, round(t.shape[-1] * h / t.shape[-2]))
    return F.interpolate(t[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)


def _grid(cells: list[torch.Tensor], labels: list[str]):
    try:
        from ..viz import grid
    except ImportError:  # pragma: no cover - viz is part of the package
        grid = None
    if grid is not None:
        return grid(cells, labels=labels)
    from ..images import to_pil

    gap = 4
    h = max(c.shape[-2] for c in cells)
    canvas = torch.ones(3, h, sum(c.shape[-1] for c in cells) + gap * (len(cells) - 1))
    x = 0
    for c in cells:
        canvas[:, : c.shape[-2], x: x + c.shape[-1]] = c.clamp(0, 1).cpu()
        x += c.shape[-1] + gap
    return to_pil(canvas)


# -- the task --------------------------------------------------------------------------------

def stylize(
    model: Model,
    content: Any,
    styles: Any,
    *,
    preset: str = "auto",
    config: StyleConfig | None = None,
    style_blend: Sequence[float] | None = None,
    progress: bool = False,
    callbacks: Sequence[Callable[[Step], bool | None]] = (),
    **overrides: Any,
) -> Stylization:
    """Paint the content photo in the style of one or more style images (Gatys et al. 2016).

    Args:
        model: from :func:`preimage.load_model`.
        content: path, ``sample:NAME``, Pillow image, ``H x W x 3`` numpy array or ``3 x H x W``
            tensor in [0, 1]; resized so its short side is ``image_size``.
        styles: one style image or a list of them (same kinds), each resized to ``style_size``.
        preset: ``"auto"`` (by model), ``"efficientnet"``, ``"classic"`` or ``"vgg"``.
        config: a full :class:`StyleConfig` instead of a preset (``overrides`` still apply).
        style_blend: one weight per style image (default: equal); their Gram targets are mixed in
            these proportions.
        progress: a progress bar with the content, style and TV terms.
        callbacks: passed to the engine (return True to stop).
        **overrides: any :class:`StyleConfig` field, e.g. ``style_weight=0`` (feature inversion),
            ``content_weight=0, init="noise"`` (texture synthesis), ``optimizer="lbfgs"``.

    Returns:
        :class:`Stylization`. Ctrl-C ends the run early with ``status == "interrupted"`` and the
        image as it was.
    """
    check_model(model)
    if config is None:
        name = preset_for(model.name) if preset == "auto" else preset
        if name is None:
            if not overrides.get("content_layer") or not overrides.get("style_layers"):
                raise PreimageError(f"no style preset for {model.name}: give the content and style layers "
                                    f"(presets: {', '.join(STYLE_PRESETS)})")
            name = "efficientnet"
        cfg = style_config(name, **overrides)
    else:
        cfg = with_settings(config, overrides, kind="stylize")
        _validate(cfg)
    style_list = list(styles) if isinstance(styles, (list, tuple)) else [styles]
    if not style_list:
        raise PreimageError("no style image given")
    blend = [1.0] * len(style_list) if style_blend is None else [float(b) for b in style_blend]
    if len(blend) != len(style_list):
        raise PreimageError(f"{len(style_list)} style images but {len(blend)} blend weights")
    for b in blend:
        _finite_nonneg("a style blend weight", b)
    if sum(blend) <= 0:
        raise PreimageError("the style blend weights sum to zero")

    device = model.device
    c_img, c_name, c_src = _load(content, cfg.image_size, "content")
    loaded = [_load(s, cfg.style_size, f"style{i}") for i, s in enumerate(style_list)]
    s_imgs = [t for t, _, _ in loaded]
    # a grey (1-channel) model sees grey images: there is no colour to preserve
    preserve = cfg.preserve_color and model.channels == 3
    c_img = to_channels(c_img.to(device), model.channels)
    s_imgs = [to_channels(s.to(device), model.channels) for s in s_imgs]

    if preserve:  # optimize the luminance only (as grey images), add the content's colour back
        c_y = _luminance(c_img)
        work_content = c_y.expand(-1, 3, -1, -1).contiguous()
        work_styles = [_match_luminance(_luminance(s), c_y).expand(-1, 3, -1, -1).contiguous() for s in s_imgs]
    else:
        work_content, work_styles = c_img, s_imgs

    parts = _build(cfg, model, work_content, work_styles, blend)
    objective = parts.objective()

    gen = torch.Generator().manual_seed(int(cfg.seed))
    if cfg.init == "content":
        start = work_content.clone()
    else:
        start = (0.5 + cfg.noise_scale * torch.randn(work_content.shape, generator=gen)).clamp(0, 1).to(device)
        if preserve:
            start = start.mean(1, keepdim=True).expand(-1, 3, -1, -1).contiguous()
    param = Pixels(model.normalize(start) if cfg.space == "input" else start, space=cfg.space, bounds=cfg.bounds)

    cbs = list(callbacks)
    if cfg.bounds is not None and cfg.clamp_steps is not None:
        if cfg.clamp_steps <= 1:
            param.bounds = None
        else:
            cbs.insert(0, _release_clamp(param, cfg.clamp_steps))
    schedule = None
    if cfg.lr_drop_step is not None and 0 < cfg.lr_drop_step < cfg.steps:
        at, to, reset = cfg.lr_drop_step, cfg.lr_drop_to, cfg.reset_on_drop
        schedule = lambda opt: _LrDrop(opt, at, to, reset)  # noqa: E731

    before = _evaluate(parts, model, _pixels_of(start, cfg, model))
    result = optimize(param, objective, model, steps=cfg.steps, optimizer=cfg.optimizer, lr=cfg.lr,
                      schedule=schedule, generator=gen, callbacks=cbs, progress=progress,
                      progress_desc=f"style {model.name}")
    final = result.image
    after = _evaluate(parts, model, final)
    losses: dict[str, Any] = {}
    for k in before:
        if k == "style_layers":
            losses[k] = {n: {"start": before[k][n], "end": after[k][n]} for n in before[k]}
        else:
            losses[k] = {"start": before[k], "end": after[k]}
    image = final.clamp(0, 1)
    if preserve:
        y = _luminance(image)
        image = _from_yiq(torch.cat([y, _to_yiq(c_img)[:, 1:]], 1)).clamp(0, 1)

    s_names = [n for _, n, _ in loaded]
    sources = {"content": c_src, "styles": [src for _, _, src in loaded], "style_blend": blend}
    return Stylization(
        image=image.detach().cpu(), content=c_img.cpu(), styles=[s.cpu() for s in s_imgs],
        name=output_name(c_name, s_names), sources=sources, model=model.name, config=cfg,
        result=result, losses=losses,
    )


def output_name(content_name: str, style_names: Sequence[str]) -> str:
    """``CONTENT_STYLE1+STYLE2``: the base name of the output files (short names, see ``image_name``)."""
    return f"{content_name}_{'+'.join(style_names)}"


def _pixels_of(start: torch.Tensor, cfg: StyleConfig, model: Model) -> torch.Tensor:
    """The starting image as the engine will see it (after the first clamp)."""
    if cfg.bounds is None or (cfg.clamp_steps is not None and cfg.clamp_steps <= 1):
        return start
    if cfg.space == "input":
        return model.denormalize(model.normalize(start).clamp(*cfg.bounds))
    return start.clamp(*cfg.bounds)
