"""Feature inversion: reconstruct an image from what a network keeps of it at one or more layers.

Mahendran & Vedaldi, "Understanding Deep Image Representations by Inverting Them" (CVPR 2015) and
"Visualizing Deep Convolutional Neural Networks Using Natural Pre-images" (IJCV 2016).

    x̂ = argmin_x  Σ_l w_l ||Φ_l(x) - Φ_l(x0)||² / ||Φ_l(x0)||²  +  λ_α R_α(x)  +  λ_TV R_TV(x)

Presets (``INVERT_PRESETS``; every field can be overridden):

- ``original``: the one-file script this project began with, exactly: x in normalized input space,
  x0 = 1e-3·randn, R_α = Σ|x|^6, R_TV = Σ(dx² + dy²)^(β/2) with zero-border forward differences,
  λ_α = λ_TV = 1e-5, SGD lr 100 momentum 0.9, StepLR(200, 0.1), 200 steps, AlexNet at 227 px.
- ``natural``: the IJCV 2016 formulation: x in mean-free [0, 255] pixel units kept in the valid range,
  R_α = Σ_v ||x(v)||^α / (H W B^α) and R_TV = Σ (dx² + dy²)^(β/2) / (H W V^β) with B = 128·√3 (the
  largest pixel norm), V = B / 6.5, a loss weight C on the reconstruction term, and SGD with momentum
  in two phases: jitter for the first three quarters, then no jitter and a 10× lower learning rate.
- ``default``: the natural pre-image objective, tuned on the embedded model (docs/inversion.md):
  Adam (lr 0.05·(16/s')² with s' = s clamped to [16, 32], ×0.1 at step 480 of 600) on [0, 1]
  pixels kept in the box, C = 1, λ_α = 0.01, λ_TV = 0.4·min(1, s/32) and jitter of min(4, s/8)
  pixels for the first 40% of the steps, where s is the stride of the target layer: shallow layers
  pin the image down and need less TV and jitter; deep layers settle better with smaller steps.
  From stride 32 on (``deep_stride``) the image is a Laplacian pyramid of free levels
  (:class:`~preimage.params.Pyramid`, ``x = Σ_k up_k(L_k)``, six octaves) with λ_TV = 0.2
  (``DEEP_RECIPE``): deep features leave layout, colour and contrast loosely pinned, and free pixels
  turn into a grey haze with rainbow texture there; the pyramid moves coarse structure as fast as
  detail and keeps the photo's layout and colours better.
- ``pixels``: the default preset without its deep-layer recipe (free pixels at every depth): the
  grey, hazy pre-images of deep layers that the default had before.
- ``recognisable``: the default, with its deep-layer recipe tuned for recognition by another network
  (``RECOGNISABLE_RECIPE``): jitter for all of the pyramid's 600 steps, then 100 steps of Adam that
  move no pixel more than 4 8-bit levels, with the priors at a tenth of their weight. At conv_head
  another network recognises its pre-images more often than the default's, at a similar feature
  error, with more fine texture and less of the photo's colour (docs/inversion.md).
- ``fast``: the default objective without jitter, Adam at lr 0.02 (×0.1 at step 150), 200 steps:
  a quick look, and the fastest way to a low feature error (it can leave more noise at deep layers).
- ``shallow``: HOG and dense SIFT (``--model hog`` / ``dsift``), after the CVPR 2015 paper: 800
  steps in four learning-rate stages (x0.1 at steps 200, 400, 600), no jitter, the normalized
  reconstruction loss + alpha-norm + TV; Adam, reconstruction weight C = 2 (see docs/shallow.md).

Python:

    >>> model = preimage.load_model()                         # efficientnet_lite0, offline
    >>> res = preimage.invert(model, "sample:chelsea", layers=["blocks.3"])
    >>> res.metrics[0]["feature_error"]["blocks.3"], res.save("out/chelsea")
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .. import metrics as M
from ..config import from_preset, with_settings
from ..errors import PreimageError, did_you_mean
from ..images import conversion_notes, load_batch, load_tensor, to_pil
from ..io import all_or_nothing, check_outputs, versions, write_json
from ..layers import FeatureExtractor, batchnorm_inputs, parse_layer_spec, resolve_layer
from ..models import Model, check_model
from ..objectives import Objective, agreement, alpha_norm, bn_stats, coarse_colour, feature_loss, saturation, total_variation
from ..optimize import Result, moved_milestones, optimize, step_schedule
from ..params import DeepPrior, Fourier, Near, Pixels, Pyramid, Upsampled
from ..perturb import ResidualPerturbation
from ..recipes import ORIGINAL_SEED
from ..starts import is_map_file
from ..transforms import Transform, compose, ensemble, jitter, random_affine
from ..validate import check_config, check_number
from .classify import predict

__all__ = ["InvertConfig", "INVERT_PRESETS", "DEEP_RECIPE", "RECOGNISABLE_RECIPE", "recipe_for", "color_prior", "invert",
           "Inversion", "config_for", "output_paths", "evaluate"]


@dataclass
class InvertConfig:
    """Every setting of an inversion. The defaults are the ``default`` preset; other presets change
    some of them; users override any field."""

    steps: int = 600                 # optimization steps
    optimizer: str = "adam"          # sgd | adam | lbfgs
    lr: float = 0.05                 # learning rate (units of the optimized space: [0, 1] pixels here) ...
    lr_stride: float | None = 16.0   # ... times (lr_stride / s')^lr_stride_power, s' = the stride s of the
    lr_stride_power: float = 2.0     # shallowest target layer clamped to [lr_stride, lr_stride_max]
    lr_stride_max: float = 32.0      # (deep layers settle better with smaller steps; lr_stride 0: no scaling)
    momentum: float = 0.9            # SGD momentum
    decay_factor: float = 0.1        # multiply the lr by this ...
    decay_steps: tuple[int, ...] = (480,)  # ... at these steps
    space: str = "pixel"             # "input": normalized net input (original); "pixel": [0, 1] RGB
    bounds: tuple[float, float] | None = (0.0, 1.0)  # hard box on the optimized values (None: free)
    alpha: float = 6.0               # exponent of the alpha-norm prior
    beta: float = 2.0                # exponent of the TV prior
    lambda_alpha: float = 0.01       # weight of the alpha-norm prior (the box already bounds the range)
    lambda_tv: float = 0.4           # weight of the TV prior (at stride >= tv_stride, see below)
    reg_space: str = "pixel255"      # space the priors read: input | pixel | pixel255 (mean-free 0..255)
    bound: float | None = 128 * 3 ** 0.5   # B: R_alpha = Σ ||x(v)||^α / (H W B^α) (None: plain sum)
    tv_scale: float | None = 128 * 3 ** 0.5 / 6.5   # V = B / 6.5: R_TV divided by H W V^β (None: plain sum)
    rec_weight: float = 1.0          # C: weight of the reconstruction term
    tv_stride: float | None = 32.0   # scale λ_TV by min(1, s / tv_stride), s = stride of the shallowest
                                     # target layer (shallow layers pin the image down and need less TV)
    tv_stride_power: float = 1.0     # ... raised to this power
    jitter: int = 4                  # random roll in pixels during the jitter phase (0: off)
    jitter_until: float = 0.4        # fraction of the steps that use jitter
    jitter_stride: float | None = 8.0  # cap the jitter at s / jitter_stride pixels (s: layer stride);
                                     # a shift finer than the layer's grid only blurs shallow layers
    scale_jitter: float = 0.0        # during the jitter phase, also zoom by up to ×(1 ± this) ...
    rotate: float = 0.0              # ... and rotate by up to ± this many degrees (transforms.random_affine)
    copies: int = 1                  # augmentation ensembling during the jitter phase (Ghiasi et al.
                                     # 2022): copies of each image per step, each jittered on its own
    color_shift: float = 0.0         # ... and colour-shifted per copy: x*exp(U(-s, s)) + U(-s, s) (0: off)
    noise: float = 0.0               # ... and given Gaussian noise of this std, input units (0: off)
    finish_steps: int = 0            # the last steps of the run, without jitter, by a second optimizer ...
    finish_optimizer: str = "lbfgs"  # ... this one ...
    finish_lr: float = 1.0           # ... at this learning rate (a two-phase schedule) ...
    finish_budget: float = 0.0       # ... moving each pixel at most this many 8-bit levels from where the
                                     # first phase left it (an L∞ ball around that image; 0: no limit) ...
    finish_priors: float = 1.0       # ... with the priors of the first phase scaled by this (1 or True: as
                                     # they were; 0 or False: the reconstruction only)
    param: str = "pixels"            # pixels: one free value per pixel | fourier: decorrelated-colour
                                     # Fourier spectrum through a sigmoid (params.Fourier) | pyramid: a
                                     # Laplacian pyramid of free levels (params.Pyramid) | deep_prior:
                                     # an untrained encoder-decoder's weights (params.DeepPrior)
    prior_width: int = 32            # deep_prior: channels of the encoder-decoder
    pyramid_levels: int = 6          # pyramid: number of levels (the coarsest 2^(levels-1) times coarser)
    decorrelate: bool = False        # pyramid: levels in ImageNet's decorrelated colour basis
    fourier_decay: float = 1.0       # fourier: the spectrum is scaled by 1 / f^decay
    tv_chroma: float = 1.0           # weight of colour-opponent TV relative to luminance TV (1: plain RGB TV)
    saturation: float = 0.0          # λ_s of the saturation prior (objectives.saturation: the mean squared
                                     # distance of each pixel from its grey; 0: off)
    anchor: float = 0.0              # with init "learned": weight of a pull of the image's coarse colours
                                     # towards the learned start all along (objectives.coarse_colour; 0: off)
    bn_weight: float = 0.0           # λ_bn of the batch-norm statistics prior (objectives.bn_stats: the
                                     # activations' channel statistics at every batch norm up to the target
                                     # layer pulled towards the network's running statistics; 0: off)
    agree: float = 0.0               # weight of the agreement prior (objectives.agreement: another
                                     # classifier's prediction on the image pulled towards the inverted
                                     # network's prediction for the photo; 0: off) ...
    agree_model: str = "efficientnet_lite1"  # ... with this classifier (a load_model name)
    erosion: float = 0.0             # skip erosion (ghost networks): each residual block's shortcut scaled by
                                     # U(1 - r, 1 + r), drawn per block and step (perturb.py; 0: off) ...
    skip_grad: float = 1.0           # ... and the residual branches' gradient scaled by this (SGM; 1: off) ...
    perturb_until: float = 0.4       # ... for this fraction of the steps
    tv_end: float = 1.0              # λ_TV schedule: the weight goes linearly from λ_TV to tv_end·λ_TV
                                     # over the run (1: constant)
    color_weight: float = 0.0        # λ_c of the colour-statistics prior (0: off): it pulls each channel's
    color_mean: tuple[float, ...] = (0.485, 0.456, 0.406)  # mean and std over the image towards these
    color_std: tuple[float, ...] = (0.229, 0.224, 0.225)   # (ImageNet's pixel statistics)
    coarse: int = 1                  # coarse-to-fine: first optimize an image `coarse` times coarser
    coarse_until: float = 0.0        # ... (bilinearly upsampled) for this fraction of the steps
    deep_stride: float | None = None  # at target layers of stride >= deep_stride ...
    deep: dict[str, Any] = field(default_factory=dict)  # ... these fields replace the ones above
                                     # (a depth-aware recipe; fields the user sets win)
    init: str = "noise"              # noise | zeros | learned | a colour-map FILE.pt | an image path /
                                     # sample:NAME (fourier: noise or learned; deep_prior: noise)
    init_scale: float = 0.05         # std of the starting noise (in the optimized space)
    seed: int = 0                    # random seed (noise and jitter)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_ORIGINAL = InvertConfig(
    steps=200, optimizer="sgd", lr=100.0, momentum=0.9, decay_factor=0.1, decay_steps=(200,),
    space="input", bounds=None, alpha=6.0, beta=2.0, lambda_alpha=1e-5, lambda_tv=1e-5,
    reg_space="input", bound=None, tv_scale=None, rec_weight=1.0, tv_stride=None, jitter=0, jitter_until=0.0,
    jitter_stride=None, lr_stride=None, init="noise", init_scale=1e-3, seed=ORIGINAL_SEED,
)
_NATURAL = InvertConfig(
    steps=300, optimizer="sgd", lr=0.05, momentum=0.9, decay_factor=0.1, decay_steps=(225,),
    space="pixel", bounds=(0.0, 1.0), lambda_alpha=1.0, lambda_tv=1.0, reg_space="pixel255",
    rec_weight=100.0, tv_stride=None, jitter=4, jitter_until=0.75, jitter_stride=None, lr_stride=None,
    init="noise", init_scale=0.05, seed=0,
)
#: the deep-layer part of the default preset (stride >= 32: blocks.5, blocks.6 and conv_head of the
#: EfficientNet-Lites): the image is a Laplacian pyramid of six levels (params.Pyramid), so layout and
#: colour move as fast as detail, with half the TV weight (λ_TV 0.2); it starts from the colours the
#: shipped colour map predicts from the target features (preimage.starts; models and layers without a
#: map start from noise); everything else (Adam at the stride-ruled lr, jitter, steps) as at shallower
#: layers (benchmarks/invert_deep.py, benchmarks/colour_start.py, docs/deep_layers.md)
DEEP_RECIPE: dict[str, Any] = {"param": "pyramid", "lambda_tv": 0.2, "init": "learned"}
_DEFAULT = InvertConfig(deep_stride=32.0, deep=dict(DEEP_RECIPE))
_SHALLOW = InvertConfig(
    steps=800, optimizer="adam", lr=0.05, decay_factor=0.1, decay_steps=(200, 400, 600),
    space="pixel", bounds=(0.0, 1.0), alpha=6.0, beta=2.0, lambda_alpha=1.0, lambda_tv=1.0,
    reg_space="pixel255", rec_weight=2.0, tv_stride=None, jitter=0, jitter_until=0.0, jitter_stride=None,
    lr_stride=None, init="noise", init_scale=0.05, seed=0,
)

#: the default, with deep layers (stride >= 32) optimized for recognition by other networks: jitter for
#: all 600 steps of the pyramid, then 100 steps of Adam (lr 0.0015) that move no pixel more than 4
#: 8-bit levels, with the priors at a tenth of their weight (docs/deep_layers.md, "Jitter to the end,
#: then a small finish"); shallower layers as in the default
RECOGNISABLE_RECIPE: dict[str, Any] = {**DEEP_RECIPE, "jitter_until": 1.0, "steps": 700, "finish_steps": 100,
                                       "finish_optimizer": "adam", "finish_lr": 0.0015, "finish_budget": 4.0,
                                       "finish_priors": 0.1}
_RECOGNISABLE = InvertConfig(deep_stride=32.0, deep=dict(RECOGNISABLE_RECIPE))
_FAST = InvertConfig(steps=200, lr=0.02, decay_steps=(150,), jitter=0, lr_stride=None)
#: the default objective on free pixels at every depth (the default preset before its deep-layer recipe)
_PIXELS = InvertConfig()

INVERT_PRESETS: dict[str, InvertConfig] = {"fast": _FAST, "default": _DEFAULT, "natural": _NATURAL, "original": _ORIGINAL,
                                           "shallow": _SHALLOW, "pixels": _PIXELS, "recognisable": _RECOGNISABLE}


def config_for(preset: str = "default", **overrides: Any) -> InvertConfig:
    """The preset's config with ``overrides`` (None values are ignored), validated."""
    cfg = from_preset(INVERT_PRESETS, preset, overrides, kind="invert", tuple_fields=("decay_steps",))
    cfg.deep = _user_wins(cfg.deep, overrides)
    _keep_drops(cfg, INVERT_PRESETS[preset], overrides)
    _validate(cfg)
    return cfg


def _keep_drops(cfg: InvertConfig, base: InvertConfig, overrides: dict[str, Any]) -> None:
    """When the user sets ``steps`` but not ``decay_steps``, the preset's learning-rate drops keep their
    place in the steps before the finish (a drop at 480 of 600 steps happens at 240 of 300), at every
    depth: a deep-layer recipe with steps and a finish of its own gets drops of its own."""
    steps = overrides.get("steps")
    if not (isinstance(steps, int) and steps > 0) or overrides.get("decay_steps") is not None:
        return
    cfg.decay_steps = moved_milestones(base.decay_steps, _main(base), _main(cfg))
    if cfg.deep and "decay_steps" not in cfg.deep:
        before, after = recipe_for(base, float("inf")), recipe_for(cfg, float("inf"))
        drops = moved_milestones(before.decay_steps, _main(before), _main(after))
        if drops != cfg.decay_steps:
            cfg.deep = {**cfg.deep, "decay_steps": drops}


def _main(cfg: InvertConfig) -> int:
    """The number of steps before the finish."""
    return cfg.steps - (cfg.finish_steps or 0)


def _user_wins(deep: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The depth-aware overrides ``deep`` without the fields the user set (a copy: presets stay intact).
    A recipe that changes the parameterization is dropped whole when the user sets ``space`` or
    ``param``, and a Fourier or deep-prior one also when the user starts from an image or zeros (they
    start from noise, a Fourier image also from a learned colour start); a pyramid starts from any image.
    When the user sets ``steps`` and the recipe has its own steps and a finish, the finish keeps its share."""
    init = overrides.get("init")
    from_noise_only = deep.get("param") == "deep_prior" or (deep.get("param") == "fourier" and not _learned(init))
    if "param" in deep and (overrides.get("space") is not None or overrides.get("param") is not None
                            or (from_noise_only and init not in (None, "noise"))):
        return {}
    kept = {k: v for k, v in deep.items() if overrides.get(k) is None}
    steps = overrides.get("steps")
    if isinstance(steps, int) and steps > 0 and deep.get("steps") and "finish_steps" in kept:
        kept["finish_steps"] = min(round(kept["finish_steps"] * steps / deep["steps"]), steps - 1)
        if not kept["finish_steps"]:  # too few steps for a finish: none, and none of its settings
            kept = {k: v for k, v in kept.items() if not k.startswith("finish_")}
    return kept


def _learned(init: Any) -> bool:
    """Whether ``init`` asks for a learned colour start: the shipped maps or a file of them."""
    return init == "learned" or (init is not None and is_map_file(init))


def recipe_for(cfg: InvertConfig, stride: float | None) -> InvertConfig:
    """The config a target layer of stride ``stride`` runs with: ``cfg`` with the fields of ``cfg.deep``
    replaced when ``stride >= cfg.deep_stride`` (the depth-aware part of a preset), else ``cfg``."""
    if cfg.deep and cfg.deep_stride and stride is not None and stride >= cfg.deep_stride:
        deep = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.deep.items()}
        return dataclasses.replace(cfg, **deep, deep={}, deep_stride=None)
    return cfg


def _validate(cfg: InvertConfig) -> None:
    """The one validation of an inversion's settings: the CLI and the Python API both end here."""
    check_config(cfg, positive_int=("steps",), positive=("lr", "decay_factor", "alpha", "beta", "finish_lr"),
                 nonneg=("lambda_alpha", "lambda_tv", "rec_weight", "init_scale", "momentum", "jitter_until",
                         "finish_budget"),
                 nonneg_int=("jitter", "finish_steps"),
                 finite=("lr_stride", "lr_stride_power", "lr_stride_max", "bound", "tv_scale", "tv_stride",
                         "tv_stride_power", "jitter_stride"))
    for opt in (cfg.optimizer, cfg.finish_optimizer):
        if opt not in ("sgd", "adam", "lbfgs"):
            raise PreimageError(f"unknown optimizer {opt!r}" + did_you_mean(str(opt), ("sgd", "adam", "lbfgs"))
                                + " (sgd, adam, lbfgs)")
    check_config(cfg, positive_int=("copies",), nonneg=("color_shift", "noise"))
    if not isinstance(cfg.finish_priors, bool):  # True and False stand for 1 and 0
        check_number("finish_priors", cfg.finish_priors, minimum=0)
    if cfg.space not in ("pixel", "input"):
        raise PreimageError(f"space must be pixel or input, not {cfg.space!r}")
    if cfg.finish_budget and not cfg.finish_steps:
        raise PreimageError("finish_budget limits the finish: give finish_steps too (--finish-steps)")
    if cfg.finish_budget and cfg.space != "pixel":
        raise PreimageError("finish_budget is in 8-bit levels of pixels: it needs space 'pixel'")
    params = ("pixels", "fourier", "pyramid", "deep_prior")
    if cfg.param not in params:
        raise PreimageError(f"unknown parameterization {cfg.param!r}" + did_you_mean(str(cfg.param), params)
                            + f" ({', '.join(params)})")
    if cfg.param == "deep_prior" and (cfg.space != "pixel" or cfg.prior_width < 1 or cfg.init != "noise"):
        raise PreimageError("the deep_prior parameterization works in pixel space, starts from its own network's "
                            "output (init noise) and needs prior_width >= 1")
    if cfg.param == "pyramid" and (cfg.space != "pixel" or cfg.pyramid_levels < 1):
        raise PreimageError("the pyramid parameterization works in pixel space with pyramid_levels >= 1")
    if cfg.scale_jitter < 0 or cfg.rotate < 0:
        raise PreimageError("scale_jitter and rotate must be >= 0")
    if cfg.param == "fourier" and (cfg.space != "pixel" or not (cfg.init == "noise" or _learned(cfg.init))):
        raise PreimageError("the fourier parameterization works in pixel space and starts from noise or a learned "
                            "colour start")
    if cfg.coarse < 1 or not 0 <= cfg.coarse_until <= 1 or (cfg.coarse > 1 and cfg.space != "pixel"):
        raise PreimageError("coarse must be >= 1 (in pixel space) and coarse_until in [0, 1]")
    if cfg.color_weight < 0 or cfg.tv_end < 0 or cfg.tv_chroma < 0 or cfg.saturation < 0 or cfg.bn_weight < 0 \
            or cfg.anchor < 0 or cfg.agree < 0:
        raise PreimageError("color_weight, saturation, bn_weight, anchor, agree, tv_chroma and tv_end must be >= 0")
    if not 0 <= cfg.erosion < 1 or not 0 <= cfg.skip_grad <= 1 or not 0 <= cfg.perturb_until <= 1:
        raise PreimageError("erosion must be in [0, 1), skip_grad and perturb_until in [0, 1]")
    if cfg.deep:
        fields = {f.name for f in dataclasses.fields(cfg)} - {"deep", "deep_stride"}
        unknown = sorted(set(cfg.deep) - fields)
        if unknown:
            raise PreimageError(f"unknown setting(s) in the deep-layer recipe: {', '.join(unknown)}")
        _validate(recipe_for(cfg, float("inf")) if cfg.deep_stride else dataclasses.replace(cfg, deep={}))
    for s in cfg.decay_steps:
        check_number("decay step", s, minimum=0, integer=True)


@dataclass
class Inversion:
    """The result of :func:`invert`: reconstructions, references, metrics, history and settings."""

    image: torch.Tensor           # B x C x H x W reconstructions in [0, 1] (clamped; C = model.channels)
    reference: torch.Tensor       # B x C x H x W preprocessed originals
    names: list[str]              # one short name per image
    layers: list[tuple[str, float]]
    model: str
    config: InvertConfig
    result: Result
    metrics: list[dict[str, Any]]  # one dict per image
    sources: list[str] = field(default_factory=list)
    effective: dict[str, Any] = field(default_factory=dict)  # lr, λ_TV, jitter after the stride rules

    @property
    def status(self) -> str:
        return self.result.status

    @property
    def history(self) -> list[dict[str, float]]:
        return self.result.history

    def manifest(self) -> dict[str, Any]:
        return {
            "task": "invert",
            "model": self.model,
            "layers": [{"name": n, "weight": w} for n, w in self.layers],
            "images": self.sources,
            "image_notes": conversion_notes(self.sources),  # first frame of an animation, alpha flattened
            "config": self.config.as_dict(),
            "effective": self.effective,
            "status": self.result.status,
            "message": self.result.message,
            "steps_run": self.result.steps,
            "seconds": round(self.result.seconds, 3),
            "metrics": {n: m for n, m in zip(self.names, self.metrics)},
            "final_terms": self.result.history[-1] if self.result.history else {},
            "versions": versions(),
        }

    def output_paths(self, out: str | os.PathLike, gif: bool = False) -> list[Path]:
        return output_paths(out, self.names, gif)

    @all_or_nothing()
    def save(self, out: str | os.PathLike, *, force: bool = False, gif: bool = False) -> list[Path]:
        """Write ``NAME.png`` (reconstruction), ``NAME_compare.png`` (original | reconstruction),
        optional ``NAME.gif`` (the optimization), ``manifest.json`` and ``history.json``; atomically."""
        from ..images import save_image
        from ..io import atomic_write

        paths = self.output_paths(out, gif)
        check_outputs(paths, force)
        out = Path(out)
        written = []
        for i, n in enumerate(self.names):
            written.append(save_image(self.image[i], out / f"{n}.png"))
            written.append(save_image(_side_by_side(self.reference[i], self.image[i]), out / f"{n}_compare.png"))
            if gif:
                written.append(atomic_write(out / f"{n}.gif", _gif([f[i] for f in self.result.frames] or [self.image[i]])))
        written.append(write_json(out / "history.json", {"history": self.result.history}))
        written.append(write_json(out / "manifest.json", self.manifest()))
        return written


def output_paths(out: str | os.PathLike, names: Sequence[str], gif: bool = False) -> list[Path]:
    """The files :meth:`Inversion.save` writes for images called ``names``."""
    out = Path(out)
    paths = [out / "manifest.json", out / "history.json"]
    for n in names:
        paths += [out / f"{n}.png", out / f"{n}_compare.png"]
        if gif:
            paths.append(out / f"{n}.gif")
    return paths


def _side_by_side(a: torch.Tensor, b: torch.Tensor, gap: int = 4) -> torch.Tensor:
    h = max(a.shape[-2], b.shape[-2])
    canvas = torch.ones(3, h, a.shape[-1] + gap + b.shape[-1])
    canvas[:, : a.shape[-2], : a.shape[-1]] = a.clamp(0, 1).cpu()
    canvas[:, : b.shape[-2], a.shape[-1] + gap:] = b.clamp(0, 1).cpu()
    return canvas


def _gif(frames: Sequence[torch.Tensor]) -> bytes:
    import io

    pils = [to_pil(f) for f in frames]
    buf = io.BytesIO()
    pils[0].save(buf, format="GIF", save_all=True, append_images=pils[1:], duration=80, loop=0)
    return buf.getvalue()


def _init(cfg: InvertConfig, model: Model, ref: torch.Tensor, gen: torch.Generator,
          learned: torch.Tensor | None = None) -> torch.Tensor:
    """Starting point in the optimized space (``learned``: the learned colour start, where there is one;
    without it ``init="learned"`` starts from noise)."""
    if learned is not None:
        start = F.interpolate(learned, size=tuple(ref.shape[-2:]), mode="bilinear", align_corners=False)
        return model.normalize(start) if cfg.space == "input" else start
    if cfg.init in ("noise", "learned"):
        noise = torch.randn(ref.shape, generator=gen) * cfg.init_scale
        start = noise if cfg.space == "input" else 0.5 + noise
    elif cfg.init == "zeros":
        start = torch.zeros(ref.shape) if cfg.space == "input" else torch.full(ref.shape, 0.5)
    else:
        other = load_tensor(cfg.init, model.input_size, channels=model.channels).expand(ref.shape[0], -1, -1, -1)
        start = model.normalize(other) if cfg.space == "input" else other.clone()
    return start.to(ref.device)


def _learned_start(model: Model, layers: Sequence[str], targets: dict[str, torch.Tensor], required: bool,
                   maps: str | None = None) -> torch.Tensor | None:
    """The coarse colours predicted by the colour map (:mod:`preimage.starts`) of the first target layer
    that has one: the shipped maps, or those in the file ``maps`` (written by ``save_starts``); None
    when none has (an error when the user asked for it: ``required``)."""
    from ..starts import load_starts, shipped_start

    found = load_starts(maps) if maps else None
    for name in layers:
        path = resolve_layer(model, name)
        if found is None:
            start = shipped_start(model.name, path)
        else:
            start = next((s for s in found if s.model == model.name and s.layer == path), None)
        if start is not None and model.channels == 3:
            return start.coarse(targets[name])
    if required and maps:
        raise PreimageError(f"{maps} has no colour start for {model.name} at {', '.join(layers)} (it has: "
                            + ", ".join(f"{s.model}:{s.layer}" for s in found or []) + ")")
    if required:
        raise PreimageError(f"no learned colour start for {model.name} at {', '.join(layers)}: the package ships "
                            "them for efficientnet_lite0 at blocks.5, blocks.6 and conv_head (use --init noise, "
                            "or fit one with preimage.starts.fit_colour_start and pass its file as the init)")
    return None


def _parse_layers(model: Model, layers: Sequence[str | tuple[str, float]] | str) -> list[tuple[str, float]]:
    if not isinstance(layers, (list, tuple)):
        layers = [layers]
    out: list[tuple[str, float]] = []
    for item in layers:
        if isinstance(item, tuple):
            w = float(item[1])
            if not (w >= 0 and w < float("inf")):
                raise PreimageError(f"layer weight {item[1]!r} of {item[0]!r} must be a finite number >= 0")
            out.append((item[0], w))
        else:
            out.extend(parse_layer_spec(item))
    if not out:
        raise PreimageError("no layer given")
    if not any(w > 0 for _, w in out):
        raise PreimageError("every layer weight is 0, so there is nothing to reconstruct; give at least one "
                            "layer a weight above 0")
    for name, _ in out:
        resolve_layer(model, name)  # raises with did-you-mean
    return out


def layer_stride(model: Model, layers: Sequence[str]) -> float:
    """Input pixels per output position of the shallowest of ``layers`` (the input size for layers
    without a spatial map, such as fully connected ones)."""
    from ..layers import list_layers

    shapes = {i.name: i.shape for i in list_layers(model)}
    strides = []
    for name in layers:
        shape = shapes.get(resolve_layer(model, name), ())
        strides.append(model.input_size / shape[-2] if len(shape) == 3 else float(model.input_size))
    return min(strides)


def effective(cfg: InvertConfig, stride: float | None) -> dict[str, Any]:
    """The settings a run actually uses once the stride rules are applied: learning rate, λ_TV and
    jitter (pixels) for a target layer of stride ``s`` (input pixels per output position)."""
    lr, lam, shift = cfg.lr, cfg.lambda_tv, cfg.jitter
    if stride:
        if cfg.lr_stride:
            clamped = min(max(stride, cfg.lr_stride), max(cfg.lr_stride, cfg.lr_stride_max))
            lr *= (cfg.lr_stride / clamped) ** cfg.lr_stride_power
        if cfg.tv_stride:
            lam *= min(1.0, stride / cfg.tv_stride) ** cfg.tv_stride_power
        if cfg.jitter_stride:
            shift = min(shift, int(stride // cfg.jitter_stride))
    return {"stride": stride, "lr": lr, "lambda_tv": lam, "jitter": shift,
            "jitter_steps": min(int(round(cfg.jitter_until * cfg.steps)), cfg.steps - min(cfg.finish_steps, cfg.steps))
            if shift else 0}  # the finish runs without jitter


def color_prior(mean: Sequence[float], std: Sequence[float], *, name: str = "color") -> Objective:
    """Colour-statistics prior on [0, 1] pixels, per image:

        R_c(x) = Σ_c [(μ_c(x) − μ*_c)² + (σ_c(x) − σ*_c)²] / σ*_c²

    where ``μ_c(x)``, ``σ_c(x)`` are the mean and standard deviation of channel c over the image and
    ``μ*``, ``σ*`` a natural image's (ImageNet's pixel statistics by default). Deep features hardly
    constrain global colour and contrast; this pulls a washed-out grey image up and a saturated one
    down towards natural statistics (a moment-matching prior, as in colour transfer)."""

    def fn(s) -> torch.Tensor:
        x = s.image.flatten(2)
        m, sd = x.new_tensor(tuple(mean)), x.new_tensor(tuple(std))
        return (((x.mean(2) - m) / sd).pow(2) + ((x.std(dim=2) - sd) / sd).pow(2)).sum(1)

    return Objective(fn, name)


def build_objective(cfg: InvertConfig, layers: list[tuple[str, float]], targets: dict[str, torch.Tensor],
                    stride: float | None = None, clock: list[int] | None = None,
                    bn: Sequence[tuple[str, torch.Tensor, torch.Tensor]] = ()) -> Objective:
    """``C Σ w_l rec_l + λ_α R_α + λ_TV(t) R_TV + λ_c R_colour + λ_s R_sat + λ_bn R_bn`` with the
    config's normalizations (``bn``: the batch norms :func:`objectives.bn_stats` reads);
    ``λ_TV(t) = λ_TV (1 + (tv_end − 1) (t − 1) / (T − 1))`` at step t of T, where ``t`` is the loop's
    step plus ``clock[0]`` (the steps of earlier phases of the same run)."""
    obj = None
    for name, w in layers:
        term = (cfg.rec_weight * w) * feature_loss(name, targets[name], name=f"rec[{name}]")
        obj = term if obj is None else obj + term
    assert obj is not None
    if cfg.lambda_alpha:
        obj = obj + cfg.lambda_alpha * alpha_norm(cfg.alpha, space=cfg.reg_space, bound=cfg.bound)
    if cfg.lambda_tv:
        lam = effective(cfg, stride)["lambda_tv"]
        tv = total_variation(cfg.beta, space=cfg.reg_space, scale=cfg.tv_scale, chroma=cfg.tv_chroma)
        if cfg.tv_end != 1.0 and cfg.steps > 1:
            clock = clock if clock is not None else [0]
            span, end = cfg.steps - 1, cfg.tv_end

            def ramped(s, tv=tv) -> torch.Tensor:
                t = min(1.0, max(0.0, (s.step + clock[0] - 1) / span))
                return (1.0 + (end - 1.0) * t) * tv(s)

            tv = Objective(ramped, "tv")
        obj = obj + lam * tv
    if cfg.color_weight:
        obj = obj + cfg.color_weight * color_prior(cfg.color_mean, cfg.color_std)
    if cfg.saturation:
        obj = obj + cfg.saturation * saturation()
    if cfg.bn_weight and bn:
        obj = obj + cfg.bn_weight * bn_stats(bn)
    return obj


def invert(
    model: Model,
    images: Any,
    *,
    layers: Sequence[str | tuple[str, float]] | str,
    preset: str = "default",
    config: InvertConfig | None = None,
    progress: bool = False,
    frame_every: int = 0,
    callbacks: Sequence[Any] = (),
    judge: Model | None = None,
    partner: Model | None = None,
    **overrides: Any,
) -> Inversion:
    """Reconstruct ``images`` from their activations at ``layers``.

    Args:
        model: from :func:`preimage.load_model`.
        images: ``"sample:chelsea"``, a path, a list of them (one batched run), a ``B x 3 x H x W``
            tensor in [0, 1], a Pillow image or an ``H x W x 3`` numpy array (uint8, or floats in [0, 1]).
        layers: layer names (``"blocks.3"``, ``"conv3"``), ``(name, weight)`` pairs, or specs such as
            ``"conv3_1+fc6:0.1"``.
        preset: ``"default"``, ``"pixels"``, ``"recognisable"``, ``"fast"``, ``"natural"``, ``"original"`` or
            ``"shallow"``
            (the keys of ``INVERT_PRESETS``; see the module docstring).
        config: a full :class:`InvertConfig` (instead of a preset).
        progress: show a progress bar with each loss term.
        frame_every: keep a frame every N steps (for a GIF of the optimization).
        callbacks: passed to :func:`preimage.optimize.optimize` (called after each step).
        judge: another classifier (e.g. ``load_model("efficientnet_lite2")``); adds its cross-model
            recognition of each reconstruction to the metrics (:func:`preimage.metrics.judge_recognition`).
        partner: with ``agree > 0``, the second classifier of the agreement prior (default:
            ``load_model(agree_model)``; :func:`preimage.objectives.agreement`).
        **overrides: any :class:`InvertConfig` field, e.g. ``steps=500, lr=0.1, optimizer="lbfgs"``.

    Returns:
        :class:`Inversion` with the reconstruction, metrics per image and the full history. A run that
        diverges returns ``status == "diverged"`` with the last finite image.
    """
    check_model(model)
    cfg = config if config is not None else config_for(preset, **overrides)
    if config is not None and overrides:
        cfg = with_settings(config, overrides, kind="invert")
        cfg.deep = _user_wins(cfg.deep, overrides)
    _validate(cfg)
    layer_list = _parse_layers(model, layers)
    ref, names, sources = load_batch(images, model.input_size, channels=model.channels)
    from ..memory import check_fits

    check_fits(model, batch=ref.shape[0], size=max(ref.shape[-2:]), what=f"inverting {ref.shape[0]} image(s) "
               f"at {max(ref.shape[-2:])} px", hint="use fewer images or a smaller input size")
    device = model.device
    ref = ref.to(device)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    names_only = [n for n, _ in layer_list]
    extractor = FeatureExtractor(model, names_only)
    with torch.no_grad():
        targets = extractor(model.normalize(ref))
    needs_stride = cfg.tv_stride or cfg.jitter_stride or cfg.lr_stride or (cfg.deep and cfg.deep_stride)
    stride = layer_stride(model, names_only) if needs_stride else None
    user_cfg, cfg = cfg, recipe_for(cfg, stride)
    eff = {**effective(cfg, stride), "deep_recipe": cfg is not user_cfg}
    clock = [0]  # steps run in earlier phases (read by the λ_TV schedule)
    maps = cfg.init if is_map_file(cfg.init) else None
    mapped = _learned(cfg.init)
    learned = _learned_start(model, names_only, targets, required=user_cfg.init == cfg.init,
                             maps=maps) if mapped else None
    eff["init"] = "learned" if learned is not None else ("noise" if mapped else cfg.init)
    bn = batchnorm_inputs(model, names_only) if cfg.bn_weight else []
    if cfg.bn_weight and not bn:
        raise PreimageError(f"bn_weight needs batch norms after convolutions before the target layer; "
                            f"{model.name} has none there")
    agreeing = _agreement(model, ref, partner, cfg.agree_model) if cfg.agree else None

    def objective_at(scale: float) -> Any:  # the objective with the priors' weights scaled
        c = cfg if scale == 1 else dataclasses.replace(
            cfg, **{k: scale * getattr(cfg, k) for k in ("lambda_alpha", "lambda_tv", "color_weight", "saturation",
                                                          "bn_weight", "anchor", "agree")})
        obj = build_objective(c, layer_list, targets, stride, clock, bn)
        if c.anchor and learned is not None:
            obj = obj + c.anchor * coarse_colour(learned)
        if c.agree and agreeing is not None:
            obj = obj + c.agree * agreeing
        return obj

    objective = objective_at(1.0)
    jitter_steps = eff["jitter_steps"]
    transforms = [_phase(jitter(eff["jitter"]), jitter_steps)] if jitter_steps else []
    if cfg.copies > 1 or cfg.color_shift or cfg.noise:  # augmentation ensembling, in the same phase
        aug = ensemble(cfg.copies, jitter_pixels=eff["jitter"], shift=cfg.color_shift, noise=cfg.noise)
        transforms = [_phase(compose(aug), int(round(cfg.jitter_until * cfg.steps)))]
    if cfg.scale_jitter or cfg.rotate:  # transformation robustness, in the same phase
        transforms.append(_phase(random_affine(cfg.scale_jitter, cfg.rotate), int(round(cfg.jitter_until * cfg.steps))))
    finish = min(max(0, cfg.finish_steps), cfg.steps)
    main = cfg.steps - finish
    perturbed = cfg.erosion > 0 or cfg.skip_grad != 1.0
    ghost = ResidualPerturbation(model, erosion=cfg.erosion, skip_grad=cfg.skip_grad,
                                 until=int(round(cfg.perturb_until * cfg.steps))) if perturbed else None
    if ghost is not None:  # draws the next pass's perturbation at every step (the input stays as it is)
        transforms = [ghost.transform, *transforms]
    coarse = int(round(cfg.coarse_until * main)) if cfg.coarse > 1 and cfg.param == "pixels" else 0
    eff["coarse_steps"] = coarse
    if cfg.param == "fourier":
        param: Any = Fourier(tuple(ref.shape), sd=cfg.init_scale, decay=cfg.fourier_decay, generator=gen,
                             device=ref.device)
        if learned is not None:
            param.set_(_init(cfg, model, ref, gen, learned))
    elif cfg.param == "deep_prior":
        param = DeepPrior(tuple(ref.shape), width=cfg.prior_width, generator=gen, device=ref.device)
    elif cfg.param == "pyramid":
        param = Pyramid(_init(cfg, model, ref, gen, learned), levels=cfg.pyramid_levels, bounds=cfg.bounds,
                        decorrelate=cfg.decorrelate)
    elif coarse:
        param = Upsampled(_init(cfg, model, ref, gen, learned), factor=cfg.coarse, bounds=cfg.bounds)
    else:
        param = Pixels(_init(cfg, model, ref, gen, learned), space=cfg.space, bounds=cfg.bounds)
    desc = f"invert {model.name}:{'+'.join(names_only)}"

    def phase(p: Any, steps: int, offset: int, **kw: Any) -> Result:
        clock[0] = offset
        milestones = [s - offset for s in cfg.decay_steps if s > offset]
        return optimize(
            p, objective, model, steps=steps, optimizer=cfg.optimizer, lr=eff["lr"], momentum=cfg.momentum,
            schedule=step_schedule(milestones, cfg.decay_factor) if milestones else None, transforms=transforms,
            generator=gen, progress=progress, progress_desc=desc + kw.get("suffix", ""),
            frame_every=frame_every, callbacks=[_shift_steps(cb, offset) for cb in callbacks] if offset else list(callbacks),
        )

    with ghost if ghost is not None else contextlib.nullcontext():
        result = phase(param, coarse or main, 0, suffix=f" (1/{cfg.coarse} size)" if coarse else "")
        if coarse and result.status == "done":  # coarse to fine: the same run goes on at full resolution
            param = Pixels(result.image.detach().clone(), space="pixel", bounds=cfg.bounds)
            result = _concat(result, phase(param, main - coarse, coarse))
    if finish and result.status == "done":  # second phase: same loop, no jitter, another optimizer
        if cfg.finish_budget:  # ... and only small changes to the image the first phase made
            param = Near(result.image.detach(), cfg.finish_budget / 255, bounds=cfg.bounds)
        if float(cfg.finish_priors) != 1:  # the priors weighed less (0: the reconstruction terms alone)
            objective = objective_at(float(cfg.finish_priors))
        offset = result.steps
        clock[0] = offset
        shifted = [_shift_steps(cb, offset) for cb in callbacks]
        second = optimize(
            param, objective, model, steps=finish, optimizer=cfg.finish_optimizer, lr=cfg.finish_lr,
            momentum=cfg.momentum, generator=gen, progress=progress, progress_desc=desc + " (finish)",
            frame_every=frame_every, callbacks=shifted,
        )
        result = _concat(result, second)
    image = result.image.clamp(0, 1)
    mets = evaluate(model, image, ref, targets, extractor, judge=judge)
    return Inversion(image=image.cpu(), reference=ref.cpu(), names=names, layers=layer_list, model=model.name,
                     config=user_cfg, result=result, metrics=mets, sources=sources, effective=eff)


def _agreement(model: Model, ref: torch.Tensor, partner: Model | None, name: str) -> Objective:
    """The agreement prior: ``partner`` (default: ``load_model(name)``) should give the image the class
    distribution ``model`` gives the photo."""
    if model.classes is None:
        raise PreimageError(f"agree needs a classifier to invert; {model.name} has no classes")
    if partner is None:
        from ..models import load_model

        partner = load_model(name, device=model.device)
    if partner.classes is None or len(partner.classes) != len(model.classes):
        raise PreimageError(f"agree needs a partner with {model.name}'s {len(model.classes)} classes; "
                            f"{partner.name} has {len(partner.classes or [])}")
    with torch.no_grad():
        target = model(ref).float().softmax(-1)
    return agreement(partner, target, size=partner.input_size)


def _shift_steps(cb: Any, offset: int) -> Any:
    return lambda step: cb(dataclasses.replace(step, step=step.step + offset))


def _concat(a: Result, b: Result) -> Result:
    """One result for two consecutive phases of the same run."""
    history = a.history + [{**h, "step": h["step"] + a.steps} for h in b.history]
    steps = a.steps + b.steps
    message = f"interrupted after {steps} steps" if b.status == "interrupted" else b.message
    return Result(image=b.image, history=history, steps=steps, status=b.status,
                  message=message, seconds=a.seconds + b.seconds, frames=a.frames + b.frames,
                  per_image_loss=b.per_image_loss or a.per_image_loss, diverged_term=b.diverged_term)


class _phase:
    """A transform during the first ``until`` steps only. It counts its own calls, so the count goes
    on across the phases of one run (coarse, then full size), where the loop's step count restarts."""

    def __init__(self, inner: Transform, until: int):
        self.inner, self.until, self.calls = inner, until, 0

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        self.calls += 1
        return self.inner(x, g) if self.calls <= self.until else x


@torch.no_grad()
def evaluate(model: Model, image: torch.Tensor, ref: torch.Tensor, targets: dict[str, torch.Tensor],
             extractor: FeatureExtractor, *, judge: Model | None = None) -> list[dict[str, Any]]:
    """Metrics of reconstructions ``image`` against originals ``ref`` (both [0, 1], B x 3 x H x W).

    With a ``judge`` (another classifier), ``m["judge"]`` holds its cross-model recognition
    (:func:`preimage.metrics.judge_recognition`): the judge's class for the original and for the
    reconstruction, whether they agree, the rank and probability of the original's class.

    ``m["feature_error_moved"]`` is the feature error of the reconstruction moved one pixel right and
    down (:func:`preimage.metrics.shift`), ``m["photo_error_moved"]`` that of the original moved so:
    the error a one-pixel shift alone causes, against which a fit that holds for one alignment of the
    pixel grid only stands out."""
    image = image.to(ref.device)
    feats = extractor(model.normalize(image))
    errors = {n: M.feature_error(feats[n], targets[n]) for n in targets}
    moved = extractor(model.normalize(M.shift(image)))
    moved_errors = {n: M.feature_error(moved[n], targets[n]) for n in targets}
    moved = extractor(model.normalize(M.shift(ref.to(image.dtype))))
    photo_moved = {n: M.feature_error(moved[n], targets[n]) for n in targets}
    psnr, ssim, tvr = M.psnr(image, ref), M.ssim(image, ref), M.tv_ratio(image, ref)
    agree = None
    if model.classes is not None:
        p_img, p_ref = predict(model, image), predict(model, ref)
        agree = (p_img.argmax(-1), p_ref.argmax(-1), p_img)
    judged = M.judge_recognition(judge, image, ref) if judge is not None else None
    out = []
    for i in range(image.shape[0]):
        m: dict[str, Any] = {
            "feature_error": {n: float(e[i]) for n, e in errors.items()},
            "feature_error_moved": {n: float(e[i]) for n, e in moved_errors.items()},
            "photo_error_moved": {n: float(e[i]) for n, e in photo_moved.items()},
            "psnr": float(psnr[i]), "ssim": float(ssim[i]), "tv_ratio": float(tvr[i]),
        }
        if agree is not None:
            top_img, top_ref, p_img = agree
            m["top1_original"] = model.classes[int(top_ref[i])]
            m["top1_reconstruction"] = model.classes[int(top_img[i])]
            m["top1_agrees"] = bool(top_img[i] == top_ref[i])
            m["p_original_class"] = float(p_img[i, top_ref[i]])
        if judged is not None:
            names = judge.classes  # type: ignore[union-attr]
            c0, c = int(judged["original_class"][i]), int(judged["class"][i])
            m["judge"] = {"model": judge.name, "agrees": bool(judged["agrees"][i]),  # type: ignore[union-attr]
                          "rank": int(judged["rank"][i]), "p_original_class": float(judged["p"][i]),
                          "original_class": names[c0] if names else c0, "class": names[c] if names else c}
        out.append(m)
    return out
