"""Layer addressing and feature extraction.

A layer is named by its dotted module path (``features.10``, ``layer2.1.relu``, ``blocks.3``), by the
underscore form of the original script (``features_10``) where that is unambiguous, or by a paper
alias the model declares (``conv3``, ``fc6``, ``conv3_1``, ``res4``).

:class:`FeatureExtractor` returns the outputs of several layers from one forward pass. It stops the
network right after the last requested layer has produced its output (the rest of the network is
never run), it never computes weight gradients (models come frozen from ``load_model``), and strided
convolutions take their input gradient in a faster, equivalent form (:mod:`preimage.fastconv`); its
hooks and that patch live only for the duration of one call: they are removed in a ``finally`` block, even when the
forward raises.

A module that runs several times in one forward (torchvision's ResNet blocks call their ``relu``
twice) is read at its last call, the one that produces the block's output.

Vision Transformers (:mod:`preimage.models.vit`): a layer that outputs tokens (``blocks.5``,
``blocks.5.mlp.act``, ``norm``, ...) is read as its patch tokens on their grid, ``B x C x h x w``;
its class, distillation and register tokens are the layers ``blocks.5.cls``, ``blocks.5.dist`` and
``blocks.5.reg``, and ``blocks.5.tokens`` is the sequence as the module returns it.
"""
from __future__ import annotations

import re
import weakref
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace

import torch
from torch import nn

from .errors import PreimageError, did_you_mean
from .fastconv import fast_strided_convs
from .models import Model, check_model, vit

#: the layer name of a network's final output (class scores for a classifier)
LOGITS = "logits"

__all__ = ["LOGITS", "LayerInfo", "list_layers", "resolve_layer", "FeatureExtractor", "parse_layer_spec",
           "batchnorm_inputs"]


@dataclass(frozen=True)
class LayerInfo:
    name: str  # dotted module path
    kind: str  # module class name
    shape: tuple[int, ...]  # output shape for one image at the model's input size (no batch dim)
    order: int  # execution order of the (last) call
    calls: int  # how many times the module runs per forward
    aliases: tuple[str, ...] = ()
    tokens: str = ""  # ViT token layers: "prefix" (prefix tokens then patches), "patches" (patches only),
                      # "nhwc" (patches as B x h x w x C)


class _Stop(Exception):
    """Raised from a hook to end the forward pass early."""


def _trace(model: Model, size: int | None = None) -> list[LayerInfo]:
    size = size or model.input_size
    x = torch.zeros(1, model.channels, size, size, device=model.device)
    calls: dict[str, int] = {}
    last: dict[str, tuple[int, tuple[int, ...]]] = {}
    counter = [0]
    handles = []
    modules = dict(model.net.named_modules())

    def hook(name: str):
        def fn(_m, _inp, out):
            if isinstance(out, (tuple, list)):
                out = out[0]
            if not isinstance(out, torch.Tensor):
                return
            calls[name] = calls.get(name, 0) + 1
            last[name] = (counter[0], tuple(out.shape[1:]))
            counter[0] += 1
        return fn

    try:
        for name, module in modules.items():
            if name:
                handles.append(module.register_forward_hook(hook(name)))
        with torch.no_grad():
            model.net(model.net_input(model.normalize(x)))
    finally:
        for h in handles:
            h.remove()
    by_target: dict[str, list[str]] = {}
    for alias, target in model.aliases.items():
        by_target.setdefault(target, []).append(alias)
    infos = [
        LayerInfo(name, type(modules[name]).__name__, shape, order, calls[name], tuple(by_target.get(name, ())))
        for name, (order, shape) in last.items()
    ]
    infos = sorted(infos, key=lambda i: i.order)
    layout = vit.token_layout(model.net)
    return _token_infos(infos, layout, vit.grid_size(model.net, size, size)) if layout is not None else infos


#: ViT layers listed with their prefix tokens as separate rows (any token layer can be read that way)
_VIEW_ROWS = re.compile(r"^(blocks\.\d+|norm)$")
_VIEW_KIND = {"cls": "ClassToken", "dist": "DistillationToken", "reg": "RegisterTokens"}


def _token_infos(infos: list[LayerInfo], layout: vit.TokenLayout, grid: tuple[int, int]) -> list[LayerInfo]:
    """ViT token layers (``T x C`` outputs with ``T = prefix + h·w`` or ``h·w``) as ``C x h x w`` grids,
    followed, for blocks and the final norm, by rows for their prefix tokens."""
    out: list[LayerInfo] = []
    patches = grid[0] * grid[1]
    for info in infos:
        if len(info.shape) == 3 and info.shape[:2] == grid and info.shape[2] != grid[0]:
            # patch embedding of a ViT that takes any input size: B x h x w x C
            out.append(replace(info, shape=(info.shape[2], *grid), tokens="nhwc"))
            continue
        if len(info.shape) != 2 or info.shape[0] not in (layout.prefix + patches, patches):
            out.append(info)
            continue
        kind = "prefix" if info.shape[0] == layout.prefix + patches and layout.prefix else "patches"
        c = info.shape[1]
        out.append(replace(info, shape=(c, *grid), tokens=kind))
        if kind == "prefix" and _VIEW_ROWS.match(info.name):
            for view in dict.fromkeys(layout.names):
                n = len(layout.index(view))
                out.append(LayerInfo(f"{info.name}.{view}", _VIEW_KIND[view], (c,) if view != "reg" else (n, c),
                                     info.order, info.calls))
    return out


_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict[int, list[LayerInfo]]]" = weakref.WeakKeyDictionary()


def list_layers(model: Model, size: int | None = None) -> list[LayerInfo]:
    """Every module that produces a tensor, in execution order, with its output shape for a
    ``size`` x ``size`` input (default: the model's input size)."""
    check_model(model)
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise PreimageError(f"size must be a positive number of pixels, not {size!r}")
    size = size or model.input_size
    per_net = _CACHE.setdefault(model.net, {})
    if size not in per_net:
        per_net[size] = _trace(model, size)
    return per_net[size]


def _check_name(name: object) -> None:
    if not isinstance(name, str):
        raise PreimageError(f"a layer is given by its name (e.g. 'blocks.3', as `preimage layers` lists), "
                            f"not a {type(name).__name__}")


def resolve_layer(model: Model, name: str) -> str:
    """Map a user's layer name (dotted, underscore form, or alias) to a dotted module path."""
    check_model(model)
    _check_name(name)
    modules = {n for n, _ in model.net.named_modules() if n}
    if name in modules:
        return name
    if name == LOGITS:
        return ""  # the network's own output
    if name in model.aliases:
        return model.aliases[name]
    underscored = [m for m in modules if m.replace(".", "_") == name]
    if len(underscored) == 1:
        return underscored[0]
    if len(underscored) > 1:
        raise PreimageError(f"layer name {name!r} is ambiguous in {model.name}: " + ", ".join(sorted(underscored)))
    base, view = vit.split_view(name)
    if view is not None and vit.is_vit(model.net):
        return f"{resolve_layer(model, base)}.{view}"  # a ViT layer's prefix tokens: blocks.5.cls
    choices = [*model.aliases, *sorted(modules)]
    layout = vit.token_layout(model.net)
    if layout is not None:  # the token views `preimage layers` lists: blocks.N.cls, norm.cls, ...
        choices += [f"{m}.{v}" for m in sorted(modules) if _VIEW_ROWS.match(m)
                    for v in (*dict.fromkeys(layout.names), "tokens")]
    raise PreimageError(
        f"unknown layer {name!r} for {model.name}" + did_you_mean(name, choices)
        + f"; `preimage layers {model.name}` lists them"
    )


def parse_layer_spec(spec: str) -> list[tuple[str, float]]:
    """Parse ``"conv3_1+fc6:0.1"`` into ``[("conv3_1", 1.0), ("fc6", 0.1)]``."""
    _check_name(spec)
    out = []
    for part in spec.split("+"):
        part = part.strip()
        if not part:
            raise PreimageError(f"empty layer name in {spec!r}")
        name, sep, weight = part.partition(":")
        if sep:
            try:
                w = float(weight)
            except ValueError:
                raise PreimageError(f"layer weight {weight!r} in {spec!r} is not a number") from None
            if not (w >= 0 and w < float("inf")):
                raise PreimageError(f"layer weight {weight!r} in {spec!r} must be a finite number >= 0")
        else:
            w = 1.0
        out.append((name.strip(), w))
    return out


class FeatureExtractor:
    """Run a model up to its deepest requested layer and return those layers' outputs.

    >>> fx = FeatureExtractor(model, ["conv1", "fc6"])
    >>> feats = fx(model.normalize(pixels))   # {"conv1": tensor, "fc6": tensor}

    Keys are the names the caller gave. The input is the *normalized* network input.
    """

    def __init__(self, model: Model, layers: Sequence[str] | str):
        check_model(model)
        if isinstance(layers, str):
            layers = [layers]
        if not layers:
            raise PreimageError("no layer given")
        self.model = model
        self.names = list(dict.fromkeys(layers))
        resolved = {n: resolve_layer(model, n) for n in self.names}
        info = {i.name: i for i in list_layers(model)}
        info[""] = LayerInfo("", type(model.net).__name__, (), order=1 << 62, calls=1)
        self._layout = vit.token_layout(model.net)
        modules = {n for n, _ in model.net.named_modules()}  # "" is the network itself (logits)
        self.paths: dict[str, str] = {}  # name -> module path
        self.views: dict[str, str] = {}  # name -> ViT token view ("grid", "cls", "reg", "dist", "tokens")
        self._has_prefix: dict[str, bool] = {}
        for n, p in resolved.items():
            path, view = (p, None) if p in modules or self._layout is None else vit.split_view(p)
            if path not in info:
                raise PreimageError(f"layer {n!r} ({p}) does not produce a tensor output in {model.name}")
            tokens = info[path].tokens
            if view is not None and (not tokens or (view != "tokens" and view not in self._layout.names)
                                     or (tokens != "prefix" and view != "tokens")):
                what = "tokens" if not tokens else f"{view} token"
                raise PreimageError(f"layer {path!r} of {model.name} has no {what}; "
                                    f"`preimage layers {model.name}` lists what each layer holds")
            self.paths[n] = path
            if tokens:
                self.views[n] = view or ("nhwc" if tokens == "nhwc" else "grid")
                self._has_prefix[n] = tokens == "prefix"
        self._calls = {p: info[p].calls for p in self.paths.values()}
        self.last = max(self.paths.values(), key=lambda p: info[p].order)
        self.shapes = {n: self._shape(info[p], self.views.get(n)) for n, p in self.paths.items()}
        self._modules = dict(model.net.named_modules())
        self._strided = [m for m in self._modules.values() if isinstance(m, nn.Conv2d) and m.stride != (1, 1)]

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise PreimageError(f"FeatureExtractor takes a normalized B x C x H x W batch, not {got}")
        captured: dict[str, torch.Tensor] = {}
        seen: dict[str, int] = {}
        handles = []

        def hook(path: str):
            def fn(_m, _inp, out):
                if isinstance(out, (tuple, list)):
                    out = out[0]
                seen[path] = seen.get(path, 0) + 1
                if seen[path] == self._calls[path]:
                    captured[path] = out
                    if path == self.last:
                        raise _Stop
            return fn

        try:
            for path in set(self.paths.values()):
                handles.append(self._modules[path].register_forward_hook(hook(path)))
            # CPU only: that is where it was measured to help (GPU libraries have fast strided kernels)
            wanted = x.requires_grad and torch.is_grad_enabled() and x.device.type == "cpu"
            fast = fast_strided_convs(self._strided) if wanted else nullcontext()
            try:
                with fast:
                    self.model.run_net(x)
            except _Stop:
                pass
        finally:
            for h in handles:
                h.remove()
        if not self.views:
            return {n: captured[p] for n, p in self.paths.items()}
        grid = vit.grid_size(self.model.net, *x.shape[-2:])
        layout = self._layout
        assert layout is not None
        return {n: vit.token_view(captured[p], self.views[n], layout, grid, self._has_prefix[n])
                if n in self.views else captured[p] for n, p in self.paths.items()}

    def _shape(self, info: LayerInfo, view: str | None) -> tuple[int, ...]:
        if view is None or view == "grid":
            return info.shape
        layout = self._layout
        assert layout is not None
        c, h, w = info.shape
        if view == "nhwc":
            return info.shape
        if view == "tokens":
            return (h, w, c) if info.tokens == "nhwc" else (h * w + (layout.prefix if info.tokens == "prefix" else 0), c)
        return (c,) if view != "reg" else (len(layout.index("reg")), c)

    def __repr__(self) -> str:
        return f"FeatureExtractor({self.model.name}, {self.names})"


def layer_names(model: Model) -> Iterable[str]:
    return [i.name for i in list_layers(model)]


def batchnorm_inputs(model: Model, before: Sequence[str] = ()) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """``(layer, running_mean, running_var)`` of each 2-d batch norm of ``model`` whose input is the
    output of the convolution registered just before it (the conv -> batch-norm pattern of ResNets,
    VGG-BN, EfficientNets, MobileNets), in execution order; with ``before``, only the convolutions that
    run no later than the deepest of those layers. Batch norms without running statistics, or not
    preceded by a convolution of as many channels, are skipped."""
    order = {i.name: i.order for i in list_layers(model)}
    limit = max(order.get(resolve_layer(model, n), -1) for n in before) if before else None
    out: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    conv: tuple[str, nn.Conv2d] | None = None
    for name, mod in model.net.named_modules():
        if isinstance(mod, nn.Conv2d):
            conv = (name, mod)
        elif isinstance(mod, nn.BatchNorm2d):
            if (conv is not None and mod.running_mean is not None and mod.num_features == conv[1].out_channels
                    and conv[0] in order and (limit is None or order[conv[0]] <= limit)):
                out.append((conv[0], mod.running_mean, mod.running_var))
            conv = None
    return sorted(out, key=lambda t: order[t[0]])
