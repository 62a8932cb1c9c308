"""Feature visualization: an image that excites a channel, a neuron, a direction or any linear
combination of units (Olah, Mordvintsev & Schubert 2017, "Feature Visualization", Distill).

``x* = argmax_x Σ_i w_i a_i(T(x))`` by Adam on the Fourier parameterization of class visualization
(:class:`~preimage.params.Fourier`: scaled spectrum, decorrelated colour, sigmoid), where ``a_i`` are
the units of the objective (:mod:`preimage.expr`: ``"blocks.5:12 - 0.5*blocks.5:40"``) and ``T`` is a
random transform drawn at every step (the field's robustness recipe: constant padding, jitter, random
scale, random rotation; the defaults are the ones the benchmark measured best, see
``docs/visualization.md``).

A batch of ``B`` images of one objective differs only by its starting noise; with ``diversity = λ``
the loss of image ``i`` adds ``λ · |L̄| · mean_{j≠i} cos(G_i, G_j)`` (Gram matrices of a layer's
activations, :func:`preimage.objectives.diversity`; ``|L̄|`` the batch's mean objective, held constant,
so ``λ`` does not depend on the layer's scale), and the images show different facets of the unit.

The result is judged on the saved 8-bit PNG: the objective's value (the weighted activation, without
transforms, at the size it was optimized at) is recomputed on the decoded PNG. Example::

    preimage dream --objective "blocks.5:12" --batch 4 --diversity 1 --out out/facets
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..config import with_settings
from ..errors import Diverged, PreimageError
from ..io import all_or_nothing
from ..models import Model, check_model
from ..objectives import Objective, State, diversity
from ..optimize import Step, optimize
from ..params import Fourier
from ..transforms import Transform, jitter, pad, random_rotate, random_scale
from .dreamfiles import dream_paths, save_dream

__all__ = ["FeatVizConfig", "FeatVizResult", "make_config", "visualize_objective", "objective_values",
           "direction_from_images", "load_direction", "output_paths", "file_stems", "robust_transforms"]


@dataclass(frozen=True)
class FeatVizConfig:
    steps: int = 256  # Adam steps (as the class visualization's fourier preset)
    lr: float = 0.05  # Adam step size on the Fourier spectrum (Lucid's)
    init_std: float = 0.01  # std of the starting spectrum
    decay: float = 1.0  # spectrum scale 1/f^decay (1: Lucid's)
    # the transforms measured best (benchmarks/featviz.py --parts sweep: robust activation ratio)
    pad: int = 0  # constant grey border added each step, pixels (0: off; 16 measured worse)
    jitter: int = 16  # random roll of up to ±jitter pixels each step (0: off)
    scales: tuple[float, ...] = (0.9, 0.95, 1.0, 1.05, 1.1)  # random rescaling factors (empty: off)
    rotate: float = 5.0  # random rotation in ±degrees each step (0: off)
    polish: float = 0.05  # the last fraction of the steps without any transform (benchmarks/featviz.py: +24 %
    # activation on the saved picture for -3 % of its robust activation, the pictures unchanged to the eye)
    diversity: float = 0.0  # weight of the diversity term across the batch (0: off)
    diversity_layer: str | None = None  # its layer (None: the objective's first layer)


def make_config(**overrides: object) -> FeatVizConfig:
    """The default recipe with some fields replaced (``None`` values are ignored); checks the values."""
    cfg = with_settings(FeatVizConfig(), overrides, kind="visualize_objective")
    if cfg.steps < 1:
        raise PreimageError("steps must be at least 1")
    if not cfg.lr > 0:
        raise PreimageError("lr must be > 0")
    if cfg.init_std < 0 or cfg.decay < 0 or cfg.pad < 0 or cfg.jitter < 0 or cfg.rotate < 0 or cfg.diversity < 0:
        raise PreimageError("init-std, decay, pad, jitter, rotate and diversity must be >= 0")
    if not 0 <= cfg.polish < 1:
        raise PreimageError(f"polish must be a fraction of the steps in [0, 1), not {cfg.polish:g}")
    if cfg.rotate > 180:
        raise PreimageError(f"rotate {cfg.rotate:g} is more than 180 degrees")
    if any(not s > 0 for s in cfg.scales):
        raise PreimageError("scales must be > 0")
    return cfg


def robust_transforms(model: Model, cfg: FeatVizConfig) -> list[Transform]:
    """The per-step transforms of ``cfg`` in the order of Lucid's recipe: pad (grey), jitter, random
    scale, random rotation (corners grey); they act on the normalized input."""
    grey = model.normalize(torch.full((1, model.channels, 1, 1), 0.5, device=model.device)).reshape(-1).tolist()
    out: list[Transform] = []
    if cfg.pad:
        out.append(pad(cfg.pad, fill=grey))
    if cfg.jitter:
        out.append(jitter(cfg.jitter))
    if cfg.scales and any(s != 1 for s in cfg.scales):
        out.append(random_scale(cfg.scales))
    if cfg.rotate:
        out.append(random_rotate(cfg.rotate, fill=grey))
    return out


def transform_steps(cfg: FeatVizConfig) -> int:
    """The number of steps that see the transforms: all but the last ``polish`` fraction."""
    return cfg.steps - round(cfg.polish * cfg.steps)


@dataclass
class FeatVizResult:
    image: torch.Tensor  # B x 3 x H x W in [0, 1]
    labels: list[str]  # what each image shows (the objective's text)
    values: list[float]  # the objective's value (weighted activation) on each saved 8-bit PNG
    terms: list[dict[str, float]]  # each unit's activation on each saved PNG
    config: FeatVizConfig
    seed: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    status: str = "done"
    model: str = ""
    size: int = 0

    @property
    def stems(self) -> list[str]:
        return file_stems(self.labels)

    @all_or_nothing()
    def save(self, out_dir: str | os.PathLike, *, force: bool = False) -> list[Path]:
        """``STEM.png`` per image, ``dream_grid.png`` (labelled with the values) and ``dream.json``."""
        stems = self.stems
        manifest = {
            "task": "dream", "model": self.model, "seed": self.seed, "size": self.size,
            "config": asdict(self.config), "seconds": self.seconds, "status": self.status,
            "value": "the objective (weighted sum of unit activations) on the saved 8-bit PNG, no transforms",
            "images": [{"file": f"{n}.png", "objective": lab, "value": v, "units": t}
                       for n, lab, v, t in zip(stems, self.labels, self.values, self.terms)],
        }
        shown = [f"{lab} = {v:.3g}" for lab, v in zip(self.labels, self.values)]
        return save_dream(out_dir, stems, self.image, shown, 8, manifest, force=force)


def file_stems(labels: Sequence[str]) -> list[str]:
    """File names for labels: ``blocks.5:12@3,4`` -> ``blocks.5_12_at3_4``; repeats get ``_0``, ``_1`` ..."""
    base = []
    for lab in labels:
        s = lab.replace("@", "_at").replace("*", "x").replace(" - ", "_minus_").replace(" + ", "_plus_")
        s = re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_.") or "objective"
        base.append(s[:80])
    counts = {b: base.count(b) for b in base}
    seen: dict[str, int] = {}
    out = []
    for b in base:
        if counts[b] > 1:
            k = seen.get(b, 0)
            seen[b] = k + 1
            b = f"{b}_{k}"
        out.append(b)
    return out


def output_paths(out_dir: str | os.PathLike, labels: Sequence[str]) -> list[Path]:
    return dream_paths(out_dir, file_stems(labels))


def load_direction(path: str | os.PathLike) -> torch.Tensor:
    """A direction vector from a ``.npy`` or ``.pt``/``.pth`` file (any shape with one non-unit axis)."""
    p = Path(path)
    if not p.is_file():
        raise PreimageError(f"direction file {path} not found")
    try:
        if p.suffix.lower() == ".npy":
            import numpy as np

            v = torch.as_tensor(np.load(p, allow_pickle=False))
        elif p.suffix.lower() in (".pt", ".pth"):
            v = torch.load(p, map_location="cpu", weights_only=True)
            if not isinstance(v, torch.Tensor):
                raise ValueError(f"holds a {type(v).__name__}, not a tensor")
        else:
            raise PreimageError(f"direction file {path}: use a .npy or .pt file")
    except PreimageError:
        raise
    except Exception as exc:  # a damaged or foreign file: one line
        raise PreimageError(f"cannot read direction file {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    v = v.detach().float().squeeze()
    if v.dim() != 1:
        raise PreimageError(f"direction file {path} holds shape {tuple(v.shape)}; expected a vector (C,)")
    if not torch.isfinite(v).all() or not float(v.norm()) > 0:
        raise PreimageError(f"direction file {path}: the vector must be finite and non-zero")
    return v


def direction_from_images(model: Model, layer: str, source: str | torch.Tensor, target: str | torch.Tensor,
                          *, size: int | None = None) -> torch.Tensor:
    """``mean_{y,x} Φ(target) - mean_{y,x} Φ(source)`` at ``layer``: the direction in channel space
    that leads from one image's activations to the other's (images resized to ``size``, default the
    model's input size)."""
    from ..images import load_tensor
    from ..layers import FeatureExtractor
    from ..objectives import _channel_maps

    size = int(size or model.input_size)
    fx = FeatureExtractor(model, [layer])
    means = []
    for img in (source, target):
        x = load_tensor(img, size, channels=model.channels) if isinstance(img, str) else img
        with torch.no_grad():
            f = fx(model.normalize(x.to(model.device)))[layer]
        means.append(_channel_maps(f).mean((0, 2, 3)).cpu())
    v = means[1] - means[0]
    if not float(v.norm()) > 0:
        raise PreimageError(f"the two images have the same mean activation at {layer}; no direction between them")
    return v


def objective_values(model: Model, objective: Objective, images: torch.Tensor) -> tuple[torch.Tensor, list[dict[str, float]]]:
    """The objective's value ``-loss`` per image (without transforms) and each term's unweighted
    activation ``-term / weight``."""
    from ..layers import FeatureExtractor

    with torch.no_grad():
        x = model.normalize(images.to(model.device))
        feats = FeatureExtractor(model, objective.layers)(x) if objective.layers else {}
        terms = objective.terms(State(image=images.to(model.device), input=x, features=feats))
    weights = objective.weights()
    total = -torch.stack(list(terms.values())).sum(0).cpu()
    per = [{k.split("#")[0]: float(-v[i] / weights.get(k.split("#")[0], 1.0)) for k, v in terms.items()}
           for i in range(images.shape[0])]
    return total, per


def scaled_diversity(objective: Objective, layer: str) -> Objective:
    """:func:`preimage.objectives.diversity` at ``layer`` times ``|mean_i objective_i|`` (held constant,
    not differentiated): the diversity weight is relative to the size of the objective, so weight 1
    trades one percent of Gram similarity for one percent of activation, whatever the layer's scale."""
    div = diversity(layer)

    def fn(s: State) -> torch.Tensor:
        with torch.no_grad():
            scale = objective(s).abs().mean().clamp_min(1e-6)
        return scale * div(s)

    return Objective(fn, "diversity", [layer, *objective.layers])


def visualize_objective(
    model: Model,
    objective: str | Objective,
    *,
    batch: int = 1,
    size: int | None = None,
    seed: int = 0,
    labels: Sequence[str] | None = None,
    progress: bool = False,
    callbacks: Sequence[Callable[[Step], bool | None]] = (),
    **overrides: object,
) -> FeatVizResult:
    """Images that maximize ``objective`` (a batch of ``batch`` images).

    Args:
        objective: an expression (``"blocks.5:12"``, ``"blocks.5:12@3,4"``, ``"logits:130"``; see
            :mod:`preimage.expr`), checked against the model at ``size`` before any step, or an
            :class:`~preimage.objectives.Objective` built with :func:`~preimage.objectives.channel`,
            :func:`~preimage.objectives.direction`, ... (per-image channel lists visualize many
            channels in one batch; the objective is *minimized*, so units enter negated).
        batch: the number of images.
        size: image side in pixels (default: the model's input size).
        seed: the starting image and the random transforms; the same seed gives the same images.
        labels: one text per image for file names and the grid (default: what each image shows in the
            syntax of :mod:`preimage.expr`, e.g. ``blocks.5:3`` for ``channel("blocks.5", [3, 7, 9])``).
        progress: show a progress bar with each loss term.
        callbacks: passed to the engine (return True to stop; the result then has ``status == "stopped"``).
        keyword ``overrides``: fields of :class:`FeatVizConfig` (``steps=512``, ``rotate=0``,
            ``diversity=1.0``, ...).
    """
    check_model(model)
    cfg = make_config(**overrides)
    if batch < 1:
        raise PreimageError("batch must be at least 1")
    size = int(size or model.input_size)
    if size < 16:
        raise PreimageError(f"size {size} is too small (at least 16 pixels)")
    if isinstance(objective, str):
        from ..expr import check, describe, objective_of, parse_terms

        parsed = parse_terms(objective)
        text = describe(parsed)
        terms, shapes = check(parsed, model, size)
        objective = objective_of(terms, shapes)
        shown = [text] * batch
    else:  # what each image shows (blocks.5:3, ...), else the objective's terms
        shown = objective.labels(batch) or [repr(objective)] * batch
    labels = list(labels) if labels is not None else shown
    if len(labels) != batch:
        raise PreimageError(f"{len(labels)} labels for a batch of {batch}")
    from ..memory import check_fits

    check_fits(model, batch=batch, size=size + 2 * cfg.pad, what=f"feature visualization of {batch} image(s) at "
               f"{size} px", hint="use a smaller size or batch")
    loss = objective
    if cfg.diversity and batch > 1:
        if not (cfg.diversity_layer or objective.layers):
            raise PreimageError("diversity needs a layer: the objective reads none; give diversity_layer")
        layer = cfg.diversity_layer or objective.layers[0]
        from ..layers import resolve_layer

        resolve_layer(model, layer)
        loss = objective + cfg.diversity * scaled_diversity(objective, layer)
    g = torch.Generator().manual_seed(seed)
    param = Fourier((batch, model.channels, size, size), sd=cfg.init_std, decay=cfg.decay, generator=g,
                    device=model.device)
    result = optimize(param, loss, model, steps=cfg.steps, optimizer="adam", lr=cfg.lr,
                      transforms=robust_transforms(model, cfg), transform_steps=transform_steps(cfg), generator=g,
                      callbacks=list(callbacks), progress=progress, progress_desc="dream")
    if result.status == "diverged":
        raise Diverged(f"feature visualization diverged: {result.message}; try a smaller --lr")
    image = result.image.clamp(0, 1)
    from .fool import png_roundtrip

    values, per = objective_values(model, objective, png_roundtrip(image))
    return FeatVizResult(
        image=image.cpu(), labels=labels, values=[float(v) for v in values], terms=per, config=cfg, seed=seed,
        history=result.history, seconds=result.seconds, status=result.status, model=model.name, size=size,
    )
