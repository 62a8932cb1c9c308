"""Saliency maps: which pixels the class score is most sensitive to.

One forward and one backward pass through the engine (``forward_state`` on a :class:`Pixels`
parameter, the ``class_score`` objective), batched over images; there is no optimization loop.

Methods, for an image ``x`` in [0, 1] RGB and the unnormalized score ``S_c`` of class ``c``:

- ``vanilla`` (Simonyan, Vedaldi & Zisserman 2014): ``M(i, j) = max_k |∂S_c/∂x(k, i, j)|``.
- ``smoothgrad`` (Smilkov et al. 2017): the vanilla map averaged over ``n`` noisy copies
  ``x + ε_t``, ``ε_t ~ N(0, σ²)`` with ``σ`` in pixel units (0.15 = 15% of the [0, 1] range):
  ``M = (1/n) Σ_t max_k |∂S_c/∂x (x + ε_t)|``. The same noise draws (from ``seed``) are used for every
  image, so a map does not depend on which other images share the batch.
- ``gradxinput`` (Shrikumar et al. 2016): ``M(i, j) = |Σ_k x(k, i, j) · ∂S_c/∂x(k, i, j)|`` — the
  first-order contribution of each pixel relative to a black image.
- ``rollout`` (Abnar & Zuidema 2020; Vision Transformers only): attention rollout, the product over
  blocks of the head-averaged attention with the residual added, ``Â_l = 0.5 A_l + 0.5 I``; the class
  token's row over the patch grid, upsampled bilinearly to the image (:mod:`preimage.models.vit`).
  It does not use gradients and does not depend on the class; the pictures show it with its minimum
  subtracted (every patch keeps a floor of flow through the residual).
- ``gradcam``, ``gradcam++``, ``guided-backprop``, ``guided-gradcam``, ``ig`` (Integrated Gradients) and
  ``occlusion``: see :mod:`preimage.tasks.attribution`, where they live.

``all`` means every method the model can run (:func:`methods_for`). The default class is the one the
network predicts. Example::

    preimage saliency sample:chelsea sample:coffee --method all --out out/saliency
    preimage saliency sample:chelsea --method gradcam,ig --baseline blur --steps 32
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import PreimageError
from ..images import conversion_notes, load_batch, save_image, unique_names
from ..io import all_or_nothing
from ..layers import LOGITS, FeatureExtractor
from ..models import Model, check_model
from ..objectives import class_score
from ..optimize import forward_state
from ..params import Pixels
from .attribution import ATTRIBUTION_METHODS, ONE_PASS, AttributionConfig, attribution_maps, check_config

__all__ = ["METHODS", "GRADIENT_METHODS", "saliency", "gradients", "SaliencyResult", "output_paths", "parse_methods",
           "methods_for",
           "unique_names", "pixels_size"]

METHODS = ("vanilla", "smoothgrad", "gradxinput", *ATTRIBUTION_METHODS, "rollout")
GRADIENT_METHODS = ("vanilla", "smoothgrad", "gradxinput")

def gradients(model: Model, pixels: torch.Tensor, classes: Sequence[int] | int | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """``(∂S_c/∂x, logits, classes)`` for a batch of [0, 1] images in one forward/backward pass.

    ``classes``: one index for all images, one per image, or ``None`` for each image's top-1 class.
    """
    param = Pixels(pixels.to(model.device).float())
    state = forward_state(param, model, FeatureExtractor(model, [LOGITS]))
    logits = state.features[LOGITS]
    if classes is None:
        chosen = logits.detach().argmax(1).tolist()
    elif isinstance(classes, int):
        chosen = [int(classes)] * pixels.shape[0]
    else:
        chosen = [int(c) for c in classes]
    # class_score is -S_c (an objective to minimize); its gradient is -∂S_c/∂x.
    class_score(chosen).terms(state)["score"].sum().backward()
    return -param.x.grad.detach(), logits.detach(), chosen


@dataclass
class SaliencyResult:
    """Maps (``B x H x W``, non-negative, unscaled) per method, with the class each one explains."""

    images: torch.Tensor
    maps: dict[str, torch.Tensor]
    classes: list[int]
    class_names: list[str]
    probs: list[float]  # softmax probability of the explained class
    predicted: list[int]
    names: list[str]
    settings: dict[str, object] = field(default_factory=dict)
    # Integrated Gradients, per image: {"sum", "delta" = S_c(x) - S_c(x'), "gap" = sum - delta, "relative_gap"}
    completeness: list[dict[str, float]] | None = None
    sources: list[str] = field(default_factory=list)  # the images as given (paths: conversion notes)

    @all_or_nothing()
    def save(self, out_dir: str | os.PathLike, *, force: bool = False, cmap: str = "inferno",
             percentile: float = 99.0) -> list[Path]:
        """Write ``NAME_METHOD.png`` (heatmap), ``NAME_METHOD_overlay.png``, ``saliency_grid.png``
        and ``saliency.json``; refuses to overwrite without ``force``."""
        from ..io import check_outputs, versions, write_json
        from ..viz import grid, heatmap, normalize_map, overlay

        out = Path(out_dir)
        paths = self.output_paths(out)
        check_outputs(paths, force)
        written: list[Path] = []
        cells: list[torch.Tensor] = []
        labels: list[str] = []
        methods = list(self.maps)
        for i, name in enumerate(self.names):
            cells.append(self.images[i])
            labels.append(f"{self.class_names[i]} {self.probs[i]:.0%}")
            shown = "smoothgrad" if "smoothgrad" in methods else methods[0]
            shown_overlay = None
            for method in methods:
                raw = self.maps[method][i].cpu()
                if method == "rollout":  # every patch keeps a floor of flow (the residual): show what is above it
                    raw = raw - raw.min()
                m = normalize_map(raw, percentile=percentile)
                written.append(save_image(heatmap(m, cmap=cmap), out / f"{name}_{method}.png"))
                ov = overlay(self.images[i].cpu(), m, cmap=cmap)
                written.append(save_image(ov, out / f"{name}_{method}_overlay.png"))
                cells.append(heatmap(m, cmap=cmap))
                labels.append(method)
                shown_overlay = ov if method == shown else shown_overlay
            cells.append(shown_overlay)
            labels.append(f"overlay ({shown})")
        sheet = grid(cells, ncols=len(methods) + 2, labels=labels)
        written.append(save_image(sheet, out / "saliency_grid.png"))
        manifest = {
            "task": "saliency", **self.settings,
            "images": [
                {"name": n, "class": c, "class_name": cn, "prob": p, "predicted": pr,
                 "files": [f"{n}_{m}.png" for m in methods] + [f"{n}_{m}_overlay.png" for m in methods],
                 **({"ig_completeness": self.completeness[i]} if self.completeness else {})}
                for i, (n, c, cn, p, pr) in enumerate(zip(self.names, self.classes, self.class_names, self.probs,
                                                          self.predicted))
            ],
            "grid": "saliency_grid.png",
            "image_notes": conversion_notes(self.sources),  # first frame of an animation, alpha flattened
            "versions": versions(),
        }
        written.append(write_json(out / "saliency.json", manifest))
        return written

    def output_paths(self, out_dir: str | os.PathLike) -> list[Path]:
        return output_paths(out_dir, self.names, list(self.maps))


def output_paths(out_dir: str | os.PathLike, names: Sequence[str], methods: Sequence[str]) -> list[Path]:
    """The files :meth:`SaliencyResult.save` writes (to check them before any work starts)."""
    out = Path(out_dir)
    paths = [out / f"{n}_{m}{s}.png" for n in names for m in methods for s in ("", "_overlay")]
    return paths + [out / "saliency_grid.png", out / "saliency.json"]


def parse_methods(method: str | Sequence[str]) -> list[str]:
    """One name, a comma-separated string (``"gradcam,ig"``, as ``--method`` takes) or a list -> the
    list of methods (unknown names raise PreimageError). ``"all"`` gives every method;
    :func:`methods_for` narrows it to those a model can run."""
    from ..errors import did_you_mean

    if isinstance(method, str):
        method = method.strip()
        method = method if method == "all" else [m.strip() for m in method.split(",") if m.strip()]
    methods = list(METHODS) if method == "all" else list(method)
    for m in methods:
        if m not in METHODS:
            raise PreimageError(f"unknown saliency method {m!r}" + did_you_mean(m, METHODS)
                                + f"; choose from {', '.join(METHODS)} or all (every method the model can run)")
    if not methods:
        raise PreimageError("no saliency method given")
    return list(dict.fromkeys(methods))


def methods_for(model: Model, method: str | Sequence[str], layer: str | None = None) -> list[str]:
    """The methods to run: ``"all"`` is every method ``model`` can run (rollout on Vision Transformers
    only, the guided methods on networks with ReLU/ReLU6 modules, the CAMs where a layer has a spatial
    map); a name or a list is taken as given (a method the model cannot run fails later, in one line)."""
    if method != "all":
        return parse_methods(method)
    from ..models import vit
    from .attribution import _is_relu, cam_layer

    try:
        cam_layer(model, layer)
        cams = True
    except PreimageError:
        cams = False
    relus = any(_is_relu(m) for m in model.net.modules())
    skip = set()
    if vit.token_layout(model.net) is None:
        skip.add("rollout")
    if not cams:
        skip |= {"gradcam", "gradcam++", "guided-gradcam"}
    if not relus:
        skip |= {"guided-backprop", "guided-gradcam"}
    return [m for m in METHODS if m not in skip]


def saliency(
    model: Model,
    images: torch.Tensor | str | os.PathLike | Sequence[str | os.PathLike],
    *,
    target: int | str | Sequence[int | str] | None = None,
    method: str | Sequence[str] = "vanilla",
    samples: int = 25,
    noise: float = 0.15,
    seed: int = 0,
    batch_size: int = 32,
    names: Sequence[str] | None = None,
    layer: str | None = None,
    steps: int = 32,
    baseline: str = "black",
    rule: str = "gausslegendre",
    blur_sigma: float = 10.0,
    window: int | None = None,
    stride: int | None = None,
    fill: float = 0.5,
) -> SaliencyResult:
    """Saliency maps of ``images`` (a ``B x 3 x H x W`` [0, 1] tensor, a Pillow
    image, an ``H x W x 3`` numpy array, or paths / ``sample:NAME``).

    Args:
        target: the class to explain — an index or (fuzzy) name for all images, one per image, or
            ``None`` for each image's predicted class.
        method: ``"vanilla"``, ``"smoothgrad"``, ``"gradxinput"``, ``"gradcam"``, ``"gradcam++"``,
            ``"guided-backprop"``, ``"guided-gradcam"``, ``"ig"``, ``"occlusion"``, ``"rollout"`` (ViTs),
            a list of them (or a comma-separated string, ``"gradcam,ig"``, as ``--method`` takes), or
            ``"all"`` (every method the model can run, see :func:`methods_for`).
        samples, noise: SmoothGrad's number of noisy copies and their standard deviation (pixel units).
        seed: the SmoothGrad noise and IG's noise baseline.
        batch_size: at most this many images (noisy copies, IG points, occluded copies included) per
            forward/backward pass; the maps do not depend on it.
        names: output file stems (default: from the sources).
        layer: the Grad-CAM layer (default: the last layer with a spatial map).
        steps, baseline, rule, blur_sigma: Integrated Gradients' quadrature nodes, baseline (``"black"``,
            ``"blur"``, ``"noise"``), rule (``"gausslegendre"`` or ``"riemann"``) and blur std in pixels.
        window, stride, fill: occlusion's square side and step in pixels (default: 1/7 of the image side,
            32 at 224, and half the window), and its grey level in [0, 1].
    """
    check_model(model)
    if model.classes is None:
        raise PreimageError(f"{model.name} is not a classifier; saliency needs class scores")
    methods = methods_for(model, method, layer)
    if samples < 1:
        raise PreimageError("samples must be at least 1")
    if noise < 0:
        raise PreimageError("noise must be >= 0")
    if batch_size < 1:
        raise PreimageError("batch size must be at least 1")
    cfg = AttributionConfig(layer=layer, steps=steps, rule=rule, baseline=baseline, blur_sigma=blur_sigma,
                            window=window, stride=stride, fill=fill, seed=seed, batch_size=batch_size)
    size = pixels_size(images) or model.input_size
    check_config(cfg, methods, size=size)
    if "rollout" in methods:
        from ..models import vit

        if vit.token_layout(model.net) is None:
            raise PreimageError(f"attention rollout needs a Vision Transformer (timm vit_*, deit_*); "
                                f"{model.name} is not one")
    if any(m in methods for m in ("gradcam", "gradcam++", "guided-gradcam")):
        from .attribution import cam_layer

        cam_layer(model, layer)  # a layer without a spatial map fails before any work
    if any(m in methods for m in ("guided-backprop", "guided-gradcam")):
        from .attribution import guided_relus

        with guided_relus(model.net):  # so does a network without ReLUs
            pass
    pixels, default_names, sources = load_batch(images, model.input_size, channels=model.channels)
    b = pixels.shape[0]
    names = unique_names(list(names) if names is not None else default_names)
    if len(names) != b:
        raise PreimageError(f"{len(names)} names for {b} images")
    if target is None:
        wanted: list[int] | None = None
    elif isinstance(target, (int, str)):
        wanted = [model.class_index(target)] * b
    else:
        wanted = [model.class_index(t) for t in target]
        if len(wanted) != b:
            raise PreimageError(f"{len(wanted)} classes for {b} images")

    # clean pass, chunked: logits, (when not given) the predicted classes, and the input gradient when
    # vanilla or gradxinput needs it (a forward pass alone otherwise)
    need_grad = "vanilla" in methods or "gradxinput" in methods
    one_pass = set(methods) <= set(ONE_PASS)  # those passes give the logits: no clean pass
    grads, logits, classes = [], [], []
    for s in range(0, b if not one_pass else 0, batch_size):
        if need_grad:
            g, lg, cl = gradients(model, pixels[s:s + batch_size],
                                  None if wanted is None else wanted[s:s + batch_size])
            grads.append(g.cpu())
        else:
            with torch.no_grad():
                lg = model(pixels[s:s + batch_size].to(model.device).float())
            cl = lg.argmax(1).tolist() if wanted is None else wanted[s:s + batch_size]
        logits.append(lg.detach().cpu())
        classes += cl
    grad = torch.cat(grads) if need_grad else torch.empty(0)
    maps: dict[str, torch.Tensor] = {}
    extra: dict[str, object] = {}
    more: dict[str, torch.Tensor] = {}
    new = [m for m in methods if m in ATTRIBUTION_METHODS]
    if new:
        more, extra = attribution_maps(model, pixels, wanted if one_pass else classes, new, cfg)
        classes = list(extra["classes"])  # type: ignore[call-overload]
    logit = torch.cat(logits) if logits else extra["logits"]  # type: ignore[assignment]
    for m in methods:
        if m in ATTRIBUTION_METHODS:
            maps[m] = more[m]
        elif m == "vanilla":
            maps[m] = grad.abs().amax(1)
        elif m == "gradxinput":
            maps[m] = (grad * pixels).sum(1).abs()
        elif m == "rollout":
            from ..models.vit import rollout_map

            maps[m] = torch.cat([rollout_map(model, pixels[s:s + batch_size].to(model.device)).cpu()
                                 for s in range(0, b, batch_size)])
        else:
            maps[m] = _smoothgrad(model, pixels, classes, samples=samples, noise=noise, seed=seed,
                                  batch_size=batch_size)
    probs = logit.float().softmax(1)
    settings: dict[str, object] = {
        "model": model.name, "methods": methods, "samples": samples, "noise": noise, "seed": seed,
        "input_size": int(pixels.shape[-1]), "target": "predicted" if wanted is None else "given"}
    if "layer" in extra:
        settings["gradcam_layer"] = extra["layer"]
    if "ig" in methods:
        settings["ig"] = {"steps": steps, "baseline": baseline, "rule": rule,
                          **({"blur_sigma": blur_sigma} if baseline == "blur" else {})}
    if "occlusion" in methods:
        from .attribution import occlusion_geometry

        w_, s_ = occlusion_geometry(int(min(pixels.shape[-2:])), window, stride)
        settings["occlusion"] = {"window": w_, "stride": s_, "fill": fill}
    return SaliencyResult(
        images=pixels, maps=maps, classes=classes,
        class_names=[model.classes[c] for c in classes],
        probs=[float(probs[i, c]) for i, c in enumerate(classes)],
        predicted=logit.argmax(1).tolist(), names=names, settings=settings,
        completeness=extra.get("ig"),  # type: ignore[arg-type]
        sources=sources,
    )


def pixels_size(images: object) -> int | None:
    """The smaller side of a tensor of images (``None`` for paths: they are resized to the model's size)."""
    return int(min(images.shape[-2:])) if isinstance(images, torch.Tensor) else None


def _smoothgrad(model: Model, pixels: torch.Tensor, classes: list[int], *, samples: int, noise: float,
                seed: int, batch_size: int, reduce=lambda g: g.abs().amax(1)) -> torch.Tensor:
    """The mean of ``reduce(∂S_c/∂x)`` over the noisy copies (``reduce``: the vanilla map by default)."""
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn((samples, *pixels.shape[1:]), generator=g) * noise  # shared by every image
    rows = [(i, t) for i in range(pixels.shape[0]) for t in range(samples)]
    total: torch.Tensor | None = None
    for s in range(0, len(rows), batch_size):
        chunk = rows[s:s + batch_size]
        idx = torch.tensor([i for i, _ in chunk])
        x = pixels[idx] + eps[torch.tensor([t for _, t in chunk])]
        grad, _, _ = gradients(model, x, [classes[i] for i, _ in chunk])
        r = reduce(grad.cpu())
        total = torch.zeros(pixels.shape[0], *r.shape[1:]) if total is None else total
        total.index_add_(0, idx, r)
    assert total is not None
    return total / samples
