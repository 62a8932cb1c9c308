"""Attribution beyond input gradients: Grad-CAM, Grad-CAM++, guided backprop, guided Grad-CAM,
Integrated Gradients and occlusion. :func:`preimage.tasks.saliency.saliency` dispatches here.

For a batch of [0, 1] RGB images ``x``, the unnormalized score ``S_c`` of class ``c``, and a layer's
activations ``A`` (``K x h x w``) with gradients ``G = ∂S_c/∂A``:

- ``gradcam`` (Selvaraju et al. 2017): ``L = ReLU(Σ_k α_k A_k)`` with ``α_k = mean_ij G_kij``,
  upsampled bilinearly to the image. Any layer with a spatial map (``preimage layers MODEL`` prints
  the names and shapes); by default the last one before the pooling (``bn2`` on EfficientNet-Lite, the
  last block's ``norm1`` on a Vision Transformer, whose last patch tokens get no gradient).
- ``gradcam++`` (Chattopadhay et al. 2018): ``α_k = Σ_ij a_kij ReLU(G_kij)`` with
  ``a_kij = G² / (2 G² + Σ_ab A_kab · G³)`` (the closed form for an exponential score, as in the paper),
  ``0`` where ``G = 0``.
- ``guided-backprop`` (Springenberg et al. 2015): the input gradient with every ReLU's backward pass
  replaced by ``ReLU(g) · 1[x > 0]`` — only positive gradient flows back through active units. ReLU6
  (used by the embedded EfficientNet-Lite, which has no SiLU/GELU) is treated the same way with its
  own gate ``1[0 < x < 6]``; Captum's ``GuidedBackprop`` hooks ``nn.ReLU`` only, so on EfficientNet-Lite
  it returns the plain gradient (see ``tests/test_attribution.py``). Models without ReLU/ReLU6 modules
  are refused. The hooks live for one call and are removed in a ``finally`` block.
- ``guided-gradcam`` (Selvaraju et al. 2017): guided backprop times the upsampled Grad-CAM map.
- ``ig`` (Integrated Gradients, Sundararajan et al. 2017):
  ``IG(x) = (x - x') ⊙ ∫₀¹ ∂S_c/∂x(x' + α(x - x')) dα``, the integral by Gauss-Legendre quadrature
  with ``steps`` nodes (Captum's default rule) or by the right Riemann sum of the paper. Baselines
  ``x'``: ``black`` (zeros), ``blur`` (the image blurred with a Gaussian of ``blur_sigma`` pixels,
  Fong & Vedaldi 2017) or ``noise`` (uniform in [0, 1], seeded). Completeness says
  ``Σ IG = S_c(x) - S_c(x')``; the gap ``Σ IG - (S_c(x) - S_c(x'))`` is returned for every image.
- ``occlusion`` (Zeiler & Fergus 2014): a ``window x window`` square of grey (``fill``) slides with
  ``stride`` over the image (the last row and column of windows are cut at the border, so every pixel
  is covered); a pixel's attribution is the mean score drop ``S_c(x) - S_c(x_occluded)`` over the
  windows that cover it (Captum's ``Occlusion`` definition).

Maps (``B x H x W``, non-negative): the CAMs as they are; guided backprop and guided Grad-CAM
``max_k |·|`` over colour channels (like the vanilla gradient); IG ``|Σ_k IG_k|`` (like gradient × input);
occlusion its positive part (pixels whose occlusion lowers the score).
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import PreimageError
from ..layers import LOGITS, FeatureExtractor, list_layers, resolve_layer
from ..models import Model, vit

__all__ = ["ATTRIBUTION_METHODS", "BASELINES", "AttributionConfig", "check_config", "default_cam_layer",
           "cam_layer", "grad_cam", "guided_backprop", "guided_relus", "integrated_gradients", "ig_baseline",
           "occlusion", "occlusion_geometry", "attribution_maps"]

ATTRIBUTION_METHODS = ("gradcam", "gradcam++", "guided-backprop", "guided-gradcam", "ig", "occlusion")
BASELINES = ("black", "blur", "noise")
RULES = ("gausslegendre", "riemann")


@dataclass
class AttributionConfig:
    """Settings of the methods of this module (the defaults are what the CLI uses)."""

    layer: str | None = None  # Grad-CAM layer; None: the last layer with a spatial map (default_cam_layer)
    steps: int = 32  # IG quadrature nodes: 32 keeps the completeness gap of lite0 on the photos at a few %
    rule: str = "gausslegendre"  # IG quadrature: Gauss-Legendre (Captum's default) or right Riemann (the paper)
    baseline: str = "black"  # IG baseline: black, blur or noise
    blur_sigma: float = 10.0  # std of the blurred baseline, in pixels of the network input (Fong & Vedaldi: 10)
    window: int | None = None  # occlusion square side in pixels (None: 1/7 of the image side, 32 at 224)
    stride: int | None = None  # occlusion step in pixels (None: half a window, each pixel under up to 4 windows)
    fill: float = 0.5  # occlusion patch value in [0, 1] pixel units (grey, as Zeiler & Fergus)
    seed: int = 0  # the noise baseline
    batch_size: int = 32  # images (interpolation points, occluded copies) per forward pass


def check_config(cfg: AttributionConfig, methods: Sequence[str], size: int | None = None) -> None:
    """Raise PreimageError for settings no method can run with (``size``: the input side, when known)."""
    if "ig" in methods:
        if cfg.steps < 1:
            raise PreimageError(f"Integrated Gradients needs at least 1 step, not {cfg.steps}")
        if cfg.baseline not in BASELINES:
            from ..errors import did_you_mean

            raise PreimageError(f"unknown IG baseline {cfg.baseline!r}" + did_you_mean(cfg.baseline, BASELINES)
                                + f"; choose from {', '.join(BASELINES)}")
        if cfg.rule not in RULES:
            raise PreimageError(f"unknown IG rule {cfg.rule!r}; choose from {', '.join(RULES)}")
        if not cfg.blur_sigma > 0:
            raise PreimageError(f"blur sigma must be > 0, not {cfg.blur_sigma}")
    if "occlusion" in methods:
        if (cfg.window is not None and cfg.window < 1) or (cfg.stride is not None and cfg.stride < 1):
            raise PreimageError(f"occlusion window and stride must be at least 1 (window {cfg.window}, "
                                f"stride {cfg.stride})")
        if size is not None and cfg.window is not None and cfg.window > size:
            raise PreimageError(f"occlusion window {cfg.window} px is larger than the {size}x{size} image the "
                                f"network sees; use --window {size} or less")
        if size is not None or cfg.window is not None:
            window, stride = occlusion_geometry(size or 0, cfg.window, cfg.stride)
            if stride > window:
                raise PreimageError(f"occlusion stride {stride} is larger than the window {window}: "
                                    f"pixels between windows would never be occluded")
        if not 0.0 <= cfg.fill <= 1.0:
            raise PreimageError(f"occlusion fill must be in [0, 1], not {cfg.fill}")
    if cfg.batch_size < 1:
        raise PreimageError("batch size must be at least 1")


# -- Grad-CAM ------------------------------------------------------------------------------------

def default_cam_layer(model: Model) -> str:
    """The last layer with a spatial map (``C x h x w``, ``h·w > 1``, not an adaptive pooling) — before
    the global pooling: ``bn2`` on EfficientNet-Lite, ``layer4`` on a ResNet, ``features`` on a VGG.

    Vision Transformers: the last block's ``norm1`` (the final patch tokens do not reach a class-token head).
    """
    if vit.is_vit(model.net):
        blocks = [n for n, _ in model.net.named_modules() if n.startswith("blocks.") and n.endswith(".norm1")]
        if blocks:
            return blocks[-1]
    # adaptive pooling resamples to a fixed grid (VGG's avgpool turns 2x2 into 7x7): not a map of its own
    spatial = [i.name for i in list_layers(model) if len(i.shape) == 3 and i.shape[1] * i.shape[2] > 1
               and not i.kind.startswith("Adaptive")]
    if not spatial:
        raise PreimageError(f"{model.name} has no layer with a spatial map; Grad-CAM needs one")
    return spatial[-1]


def cam_layer(model: Model, layer: str | None) -> str:
    """Check that ``layer`` (``None``: the default) has a spatial map; returns the name to read."""
    name = default_cam_layer(model) if layer is None else layer
    traced = {i.name: i.shape for i in list_layers(model)}  # (cached per model)
    path = name if name in traced else resolve_layer(model, name)  # unknown names: did-you-mean
    shape = traced[path] if path in traced and not vit.is_vit(model.net) else FeatureExtractor(model, [name]).shapes[name]
    if len(shape) != 3 or shape[1] * shape[2] < 2:
        raise PreimageError(f"Grad-CAM needs a layer with a spatial map (channels x height x width); {name!r} of "
                            f"{model.name} outputs {'x'.join(map(str, shape)) or 'a scalar'}; "
                            f"`preimage layers {model.name}` lists the shapes")
    return name


def _layer_gradients(model: Model, pixels: torch.Tensor, classes: Sequence[int] | None, layer: str
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(A, ∂S_c/∂A, logits)`` of one layer for a batch, from one forward/backward pass (``classes``
    ``None``: each image's top-1 class)."""
    x = model.normalize(pixels.to(model.device).float()).requires_grad_(True)
    fx = FeatureExtractor(model, [layer, LOGITS])
    view = fx.views.get(layer)
    if view in (None, "tokens"):
        feats = fx(x)
        act = feats[layer]
    else:  # a ViT token layer read as a grid: differentiate the module's own output, then take the view
        raw = f"{fx.paths[layer]}.tokens"
        feats = FeatureExtractor(model, [raw, LOGITS])(x)
        act = feats[raw]
    logits = feats[LOGITS].reshape(act.shape[0], -1)
    idx = logits.detach().argmax(1) if classes is None else torch.as_tensor(list(classes), device=act.device)
    (grad,) = torch.autograd.grad(logits.gather(1, idx[:, None]).sum(), act)
    act, grad = act.detach(), grad.detach()
    if view not in (None, "tokens"):
        layout = vit.token_layout(model.net)
        assert layout is not None
        grid = vit.grid_size(model.net, *x.shape[-2:])
        prefix = fx._has_prefix[layer]
        act, grad = (vit.token_view(t, view, layout, grid, prefix) for t in (act, grad))
    return act, grad, logits.detach()


def grad_cam(model: Model, pixels: torch.Tensor, classes: Sequence[int], *, layer: str | None = None,
             plus: bool = False, upsample: bool = True, batch_size: int = 32) -> torch.Tensor:
    """Grad-CAM (or Grad-CAM++ with ``plus``) maps, ``B x H x W`` (``B x h x w`` without ``upsample``)."""
    variant = "gradcam++" if plus else "gradcam"
    maps, _ = cam_maps(model, pixels, classes, layer=layer, variants=(variant,), upsample=upsample,
                       batch_size=batch_size)
    return maps[variant]


def cam_maps(model: Model, pixels: torch.Tensor, classes: Sequence[int] | None, *, layer: str | None = None,
             variants: Sequence[str] = ("gradcam",), upsample: bool = True, batch_size: int = 32
             ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Grad-CAM and/or Grad-CAM++ maps from one forward/backward pass per batch, and the logits."""
    name = cam_layer(model, layer)
    out: dict[str, list[torch.Tensor]] = {v: [] for v in variants}
    logits = []
    for s in range(0, pixels.shape[0], batch_size):
        act, grad, lg = _layer_gradients(model, pixels[s:s + batch_size],
                                         None if classes is None else classes[s:s + batch_size], name)
        logits.append(lg.cpu())
        for v in variants:
            if v == "gradcam++":
                g2, g3 = grad.pow(2), grad.pow(3)
                denom = 2 * g2 + act.sum((2, 3), keepdim=True) * g3
                a = torch.where(grad != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)),
                                torch.zeros_like(grad))
                weights = (a * grad.clamp(min=0)).sum((2, 3), keepdim=True)
            else:
                weights = grad.mean((2, 3), keepdim=True)
            cam = (weights * act).sum(1, keepdim=True).clamp(min=0)
            if upsample:
                cam = F.interpolate(cam, size=pixels.shape[-2:], mode="bilinear", align_corners=False)
            out[v].append(cam[:, 0].cpu())
    return {v: torch.cat(c) for v, c in out.items()}, torch.cat(logits)


# -- guided backprop -----------------------------------------------------------------------------

def _is_relu(module: nn.Module) -> bool:
    return isinstance(module, (nn.ReLU, nn.ReLU6))


@contextmanager
def guided_relus(net: nn.Module) -> Iterator[int]:
    """Within the block every ``nn.ReLU``/``nn.ReLU6`` of ``net`` back-propagates guided gradients.

    The activation's own backward multiplies the output gradient ``g`` by its gate ``1[lo < x < hi]``;
    since the gate is 0 or 1, ``ReLU(g) · gate`` is that backward applied to ``ReLU(g)``. So a forward hook
    puts a gradient hook ``g -> ReLU(g)`` on each activation's output: no extra forward work and one clamp
    per activation backward. The hooks are removed on exit, also on error, so the model is unchanged
    afterwards. Yields the number of activations hooked (raises PreimageError when there are none).
    """
    handles = []

    def positive(g: torch.Tensor) -> torch.Tensor:
        return g.clamp(min=0)

    def hook(_m, _inp, out):
        if isinstance(out, torch.Tensor) and out.requires_grad:
            out.register_hook(positive)

    try:
        for m in net.modules():
            if _is_relu(m):
                handles.append(m.register_forward_hook(hook))
        if not handles:
            kinds = sorted({type(m).__name__ for m in net.modules() if "act" in type(m).__name__.lower()
                            or type(m).__name__ in ("GELU", "SiLU", "Hardswish", "Tanh", "Sigmoid")})
            raise PreimageError("guided backprop needs ReLU or ReLU6 activation modules; this network has none"
                                + (f" (it uses {', '.join(kinds)})" if kinds else ""))
        yield len(handles)
    finally:
        for h in handles:
            h.remove()


def guided_backprop(model: Model, pixels: torch.Tensor, classes: Sequence[int], *, batch_size: int = 32
                    ) -> torch.Tensor:
    """Guided-backprop gradients ``B x C x H x W`` (Springenberg et al. 2015).

    The rule is not linear in the output gradient (negative gradients are cut), so the backward pass
    starts from ``+S_c``, not from the engine's ``-S_c`` objective."""
    return _guided(model, pixels, classes, batch_size)[0]


def _guided(model: Model, pixels: torch.Tensor, classes: Sequence[int] | None, batch_size: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    out, logits = [], []
    fx = FeatureExtractor(model, [LOGITS])
    with guided_relus(model.net):
        for s in range(0, pixels.shape[0], batch_size):
            x = pixels[s:s + batch_size].to(model.device).float().requires_grad_(True)
            lg = fx(model.normalize(x))[LOGITS]
            idx = lg.detach().argmax(1) if classes is None else \
                torch.as_tensor(list(classes[s:s + batch_size]), device=lg.device)
            (g,) = torch.autograd.grad(lg.gather(1, idx[:, None]).sum(), x)
            out.append(g.cpu())
            logits.append(lg.detach().cpu())
    return torch.cat(out), torch.cat(logits)


# -- Integrated Gradients ------------------------------------------------------------------------

def ig_baseline(pixels: torch.Tensor, kind: str, *, blur_sigma: float = 10.0, seed: int = 0) -> torch.Tensor:
    """The IG reference image ``x'`` for each image: black, blurred or uniform noise (seeded)."""
    if kind == "black":
        return torch.zeros_like(pixels)
    if kind == "blur":
        from ..transforms import gaussian_blur

        return gaussian_blur(pixels, blur_sigma)
    if kind == "noise":
        g = torch.Generator().manual_seed(seed)
        return torch.rand(pixels.shape, generator=g).to(pixels)
    raise PreimageError(f"unknown IG baseline {kind!r}; choose from {', '.join(BASELINES)}")


def _nodes(steps: int, rule: str) -> tuple[list[float], list[float]]:
    """Quadrature nodes ``α`` in (0, 1] and weights for ``∫₀¹ f(α) dα``."""
    if rule == "riemann":
        return torch.linspace(1 / steps, 1, steps).tolist(), [1.0 / steps] * steps
    import numpy as np

    t, w = np.polynomial.legendre.leggauss(steps)
    return (0.5 * (t + 1)).tolist(), (0.5 * w).tolist()


def integrated_gradients(model: Model, pixels: torch.Tensor, classes: Sequence[int], *,
                         baseline: torch.Tensor | str = "black", steps: int = 32, rule: str = "gausslegendre",
                         blur_sigma: float = 10.0, seed: int = 0, batch_size: int = 32
                         ) -> tuple[torch.Tensor, list[dict[str, float]]]:
    """IG attributions ``B x C x H x W`` and, per image, ``{"sum", "delta", "gap", "relative_gap"}`` with
    ``delta = S_c(x) - S_c(x')`` and ``gap = sum - delta`` (completeness, Sundararajan et al. 2017)."""
    from .saliency import gradients

    check_config(AttributionConfig(steps=steps, rule=rule, blur_sigma=blur_sigma), ["ig"])
    base = ig_baseline(pixels, baseline, blur_sigma=blur_sigma, seed=seed) if isinstance(baseline, str) \
        else baseline.to(pixels)
    alphas, weights = _nodes(steps, rule)
    rows = [(i, k) for i in range(pixels.shape[0]) for k in range(steps)]
    total = torch.zeros(pixels.shape, dtype=torch.float32)
    for s in range(0, len(rows), batch_size):
        chunk = rows[s:s + batch_size]
        idx = torch.tensor([i for i, _ in chunk])
        a = torch.tensor([alphas[k] for _, k in chunk]).view(-1, 1, 1, 1)
        w = torch.tensor([weights[k] for _, k in chunk]).view(-1, 1, 1, 1)
        x = base[idx] + a * (pixels[idx] - base[idx])
        g, _, _ = gradients(model, x, [classes[i] for i, _ in chunk])
        total.index_add_(0, idx, g.cpu().float() * w)
    attr = (pixels.cpu().float() - base.cpu().float()) * total
    with torch.no_grad():
        idx = torch.as_tensor(list(classes))[:, None]
        s_x = torch.cat([model(pixels[s:s + batch_size].to(model.device)).cpu().float()
                         for s in range(0, pixels.shape[0], batch_size)]).gather(1, idx)[:, 0]
        s_b = torch.cat([model(base[s:s + batch_size].to(model.device)).cpu().float()
                         for s in range(0, pixels.shape[0], batch_size)]).gather(1, idx)[:, 0]
    info = []
    for i in range(pixels.shape[0]):
        total_i, delta = float(attr[i].sum()), float(s_x[i] - s_b[i])
        info.append({"sum": total_i, "delta": delta, "gap": total_i - delta,
                     "relative_gap": abs(total_i - delta) / abs(delta) if delta != 0 else math.inf})
    return attr, info


# -- occlusion -----------------------------------------------------------------------------------

def occlusion_geometry(size: int, window: int | None, stride: int | None) -> tuple[int, int]:
    """The occlusion window and stride for an image side of ``size`` pixels: as given, or by default a
    window of 1/7 of the side (32 px at 224) and half a window's stride."""
    w = window if window is not None else max(1, round(size / 7))
    return w, stride if stride is not None else max(1, w // 2)


def _offsets(size: int, window: int, stride: int) -> list[int]:
    return [k * stride for k in range(math.ceil((size - window) / stride) + 1)]


def occlusion(model: Model, pixels: torch.Tensor, classes: Sequence[int], *, window: int | None = None,
              stride: int | None = None, fill: float = 0.5, batch_size: int = 32) -> torch.Tensor:
    """Occlusion attributions ``B x H x W`` (signed: the mean score drop of the windows over each pixel);
    ``window`` and ``stride`` default to :func:`occlusion_geometry`'s."""
    b, _, h, w = pixels.shape
    check_config(AttributionConfig(window=window, stride=stride, fill=fill, batch_size=batch_size), ["occlusion"],
                 size=min(h, w))
    window, stride = occlusion_geometry(min(h, w), window, stride)
    boxes = [(y, x) for y in _offsets(h, window, stride) for x in _offsets(w, window, stride)]
    idx_all = torch.as_tensor(list(classes))
    with torch.no_grad():
        clean = torch.cat([model(pixels[s:s + batch_size].to(model.device)).cpu().float()
                           for s in range(0, b, batch_size)]).gather(1, idx_all[:, None])[:, 0]
        count = torch.zeros(h, w)
        for y, x in boxes:
            count[y:y + window, x:x + window] += 1
        total = torch.zeros(b, h, w)
        rows = [(i, k) for i in range(b) for k in range(len(boxes))]
        for s in range(0, len(rows), batch_size):
            chunk = rows[s:s + batch_size]
            batch = pixels[torch.tensor([i for i, _ in chunk])].clone()
            for r, (_, k) in enumerate(chunk):
                y, x = boxes[k]
                batch[r, :, y:y + window, x:x + window] = fill
            idx = torch.tensor([i for i, _ in chunk])
            scores = model(batch.to(model.device)).cpu().float().gather(1, idx_all[idx][:, None])[:, 0]
            drops = clean[idx] - scores
            for r, (i, k) in enumerate(chunk):
                y, x = boxes[k]
                total[i, y:y + window, x:x + window] += drops[r]
    return total / count


# -- dispatch ------------------------------------------------------------------------------------

#: methods whose own pass yields the logits (no separate clean pass needed)
ONE_PASS = ("gradcam", "gradcam++", "guided-backprop", "guided-gradcam")


def attribution_maps(model: Model, pixels: torch.Tensor, classes: Sequence[int] | None, methods: Sequence[str],
                     cfg: AttributionConfig) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """Maps (``B x H x W``, non-negative) of the methods of this module, and extra results
    (``"ig"``: the completeness of each image; ``"layer"``: the Grad-CAM layer; ``"logits"`` and
    ``"classes"``). ``classes`` may be ``None`` (each image's top-1 class) only if every method is in
    :data:`ONE_PASS`."""
    maps: dict[str, torch.Tensor] = {}
    extra: dict[str, object] = {}
    bs = cfg.batch_size
    if classes is None and not set(methods) <= set(ONE_PASS):
        raise ValueError("classes are needed for IG and occlusion")
    cams: dict[str, torch.Tensor] = {}
    wanted_cams = tuple(v for v in ("gradcam", "gradcam++") if v in methods
                        or (v == "gradcam" and "guided-gradcam" in methods))
    if wanted_cams:
        extra["layer"] = cam_layer(model, cfg.layer)
        cams, logits = cam_maps(model, pixels, classes, layer=cfg.layer, variants=wanted_cams, batch_size=bs)
        if classes is None:
            classes = logits.argmax(1).tolist()
        extra["logits"] = logits
    guided: torch.Tensor | None = None
    if "guided-backprop" in methods or "guided-gradcam" in methods:
        guided, logits = _guided(model, pixels, classes, bs)
        if classes is None:
            classes = logits.argmax(1).tolist()
        extra["logits"] = logits
    assert classes is not None
    extra["classes"] = list(classes)
    for m in methods:
        if m in ("gradcam", "gradcam++"):
            maps[m] = cams[m]
        elif m == "guided-backprop":
            assert guided is not None
            maps[m] = guided.abs().amax(1)
        elif m == "guided-gradcam":
            assert guided is not None
            maps[m] = (guided * cams["gradcam"][:, None]).abs().amax(1)
        elif m == "ig":
            attr, info = integrated_gradients(model, pixels, classes, baseline=cfg.baseline, steps=cfg.steps,
                                              rule=cfg.rule, blur_sigma=cfg.blur_sigma, seed=cfg.seed, batch_size=bs)
            maps[m] = attr.sum(1).abs()
            extra["ig"] = info
        elif m == "occlusion":
            maps[m] = occlusion(model, pixels, classes, window=cfg.window, stride=cfg.stride, fill=cfg.fill,
                                batch_size=bs).clamp(min=0)
        else:
            raise PreimageError(f"unknown attribution method {m!r}")
    return maps, extra
