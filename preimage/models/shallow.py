"""HOG and dense SIFT as zoo models: the ``hog`` / ``dsift`` names and their option specs.

A shallow model is named by a *spec*: the representation, optionally followed by ``:`` and a
comma-separated list of options. Each option is ``key=value`` or a bare flag::

    hog                               Dalal-Triggs HOG, 8 px cells, 9 bins, 2x2 blocks, L2-Hys, soft bins
    hog:uoctti                        the 31-dim Felzenszwalb/UoCTTI variant
    hog:cell=4,orientations=12        smaller cells, finer orientation bins
    hog:block=3,norm=L1-sqrt,hard     3x3 blocks, L1-sqrt normalization, hard (skimage) binning
    dsift                             dense SIFT, 8 px bins (4x4x8 = 128-dim), a descriptor every 8 px
    dsift:bin=4,step=2                4 px bins, a descriptor every 2 px
    dsift:opencv                      OpenCV's pre-smoothing (sigma = sqrt(1.6^2 - 0.5^2))

Options (long keyword names of :class:`~preimage.models.hog.HOG` and
:class:`~preimage.models.dsift.DenseSIFT` are accepted too):

========  =========================================================================================
hog       ``cell`` (cell_size), ``orientations`` (``o``), ``block`` (block_size), ``norm``
          (block_norm: L2-Hys, L2, L1, L1-sqrt), ``variant`` (dalal-triggs, uoctti), ``eps``,
          ``spatial`` (box, bilinear); flags ``uoctti``, ``dalal-triggs`` (``dt``), ``hard``,
          ``soft``, ``signed``, and a bare block norm name (``L2``, ``L1-sqrt``, ...)
dsift     ``bin`` (bin_size), ``step``, ``orientations`` (``o``), ``spatial`` (spatial_bins),
          ``window``, ``smoothing`` (``sigma``), ``clip``, ``eps``; flag ``opencv``
========  =========================================================================================

The model's input is [0, 1] RGB (no normalization), its default size 224, it has no classes and no
weights. Every child of the network is a layer (``preimage layers hog``); the final output is also
reachable by the aliases ``hog`` / ``dsift`` and ``features``, which is what an inversion uses by
default (:data:`SHALLOW_LAYER`).

Python::

    >>> model = preimage.load_model("hog:cell=4")          # or shallow_model("hog", cell_size=4)
    >>> preimage.invert(model, "sample:chelsea", layers=["hog"], preset="shallow")
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..errors import PreimageError, did_you_mean

__all__ = ["SHALLOW", "SHALLOW_LAYER", "parse_spec", "build_net", "shallow_model", "is_shallow_name"]

#: the representations this module builds
SHALLOW = ("hog", "dsift")
#: the alias every shallow model gives its final output (the representation itself)
SHALLOW_LAYER = "features"

_OPENCV_SIGMA = math.sqrt(1.6 ** 2 - 0.5 ** 2)

# key -> (constructor keyword, type)
_HOG_KEYS: dict[str, tuple[str, type]] = {
    "cell": ("cell_size", int), "cell_size": ("cell_size", int),
    "orientations": ("orientations", int), "o": ("orientations", int), "bins": ("orientations", int),
    "block": ("block_size", int), "block_size": ("block_size", int),
    "norm": ("block_norm", str), "block_norm": ("block_norm", str),
    "variant": ("variant", str), "soft": ("soft", bool), "signed": ("signed", bool),
    "eps": ("eps", float), "spatial": ("spatial", str),
}
_HOG_FLAGS: dict[str, dict[str, Any]] = {
    "uoctti": {"variant": "uoctti"}, "felzenszwalb": {"variant": "uoctti"}, "dpm": {"variant": "uoctti"},
    "dalal-triggs": {"variant": "dalal-triggs"}, "dt": {"variant": "dalal-triggs"},
    "hard": {"soft": False}, "soft": {"soft": True}, "signed": {"signed": True},
    "l2-hys": {"block_norm": "L2-Hys"}, "l2": {"block_norm": "L2"}, "l1": {"block_norm": "L1"},
    "l1-sqrt": {"block_norm": "L1-sqrt"},
}
_DSIFT_KEYS: dict[str, tuple[str, type]] = {
    "bin": ("bin_size", int), "bin_size": ("bin_size", int), "step": ("step", int),
    "orientations": ("orientations", int), "o": ("orientations", int),
    "spatial": ("spatial_bins", int), "spatial_bins": ("spatial_bins", int),
    "window": ("window", float), "smoothing": ("smoothing", float), "sigma": ("smoothing", float),
    "clip": ("clip", float), "eps": ("eps", float),
}
_DSIFT_FLAGS: dict[str, dict[str, Any]] = {"opencv": {"smoothing": _OPENCV_SIGMA}}
_NORMS = {"l2-hys": "L2-Hys", "l2": "L2", "l1": "L1", "l1-sqrt": "L1-sqrt"}
#: the values a hog text option takes (constructor keyword -> choices)
_HOG_CHOICES = {"block_norm": tuple(_NORMS.values()), "variant": ("dalal-triggs", "uoctti"),
                "spatial": ("box", "bilinear")}


def is_shallow_name(name: str) -> bool:
    """Whether ``name`` is a shallow model spec (``hog``, ``dsift``, ``hog:...``)."""
    return name.split(":", 1)[0].strip().lower() in SHALLOW


def _convert(kind: str, key: str, text: str, typ: type) -> Any:
    if typ is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise PreimageError(f"{kind} option {key}={text!r}: expected true or false")
    try:
        value = typ(text)
    except ValueError:
        raise PreimageError(f"{kind} option {key}={text!r}: expected {'an integer' if typ is int else 'a number'}") from None
    if typ in (int, float) and not (value == value and abs(value) != float("inf")):
        raise PreimageError(f"{kind} option {key}={text!r} must be finite")
    return value


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"hog:uoctti,cell=4"`` -> ``("hog", {"variant": "uoctti", "cell_size": 4})``.

    Raises:
        PreimageError: unknown representation, unknown option (with suggestions), bad value.
    """
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in SHALLOW:
        raise PreimageError(f"not a shallow model: {spec!r}" + did_you_mean(kind, SHALLOW))
    keys, flags = (_HOG_KEYS, _HOG_FLAGS) if kind == "hog" else (_DSIFT_KEYS, _DSIFT_FLAGS)
    options: dict[str, Any] = {}
    for part in rest.split(",") if rest.strip() else []:
        part = part.strip()
        if not part:
            raise PreimageError(f"empty option in model spec {spec!r}")
        key, eq, value = part.partition("=")
        key = key.strip().lower().replace("_", "-") if not eq else key.strip().lower()
        if not eq:
            if key not in flags:
                raise PreimageError(f"unknown {kind} option {part!r}" + did_you_mean(key, [*flags, *keys])
                                    + f"; see `preimage models` (e.g. {kind}:{next(iter(flags))})")
            options.update(flags[key])
            continue
        key = key.replace("-", "_")
        if key not in keys:
            raise PreimageError(f"unknown {kind} option {key!r}" + did_you_mean(key, keys)
                                + f"; options: {', '.join(sorted({k for k in keys if len(k) > 1}))}")
        kwarg, typ = keys[key]
        options[kwarg] = _convert(kind, key, value.strip(), typ)
        if kwarg == "block_norm":
            options[kwarg] = _NORMS.get(options[kwarg].lower(), options[kwarg])
        _check_value(kind, key, kwarg, options[kwarg])  # named as typed (cell, not cell_size)
    return kind, options


def _check_value(kind: str, name: str, kwarg: str, value: Any) -> None:
    """Refuse a bad option value, naming the option ``name`` (as the user spelt it); ``kwarg`` is
    the constructor keyword it sets."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if kwarg in ("smoothing", "eps") and value < 0:
            raise PreimageError(f"{kind} option {name} must be >= 0, not {value}")
        if value <= 0 and kwarg not in ("smoothing", "eps"):
            raise PreimageError(f"{kind} option {name} must be > 0, not {value}")
    choices = _HOG_CHOICES.get(kwarg) if kind == "hog" else None
    if choices and value not in choices:
        raise PreimageError(f"{kind} option {name} must be one of {', '.join(choices)}, not {value!r}")


def build_net(kind: str, **options: Any) -> nn.Module:
    """The :class:`HOG` or :class:`DenseSIFT` network; bad option values raise PreimageError."""
    if kind == "hog":
        from .hog import HOG as cls
    elif kind == "dsift":
        from .dsift import DenseSIFT as cls
    else:
        raise PreimageError(f"not a shallow model: {kind!r}" + did_you_mean(kind, SHALLOW))
    for k, v in options.items():  # keyword options: named by their constructor keyword
        _check_value(kind, k, k, v)
    try:
        net = cls(**options)
    except (TypeError, ValueError) as exc:
        raise PreimageError(f"bad {kind} options: {exc}") from None
    # HOG and DSIFT have no parameters; this empty buffer lets Model.device follow .to(device)
    net.register_buffer("device_anchor", torch.zeros(0), persistent=False)
    return net


def shallow_model(spec: str = "hog", *, input_size: int = 224, **options: Any):
    """A :class:`~preimage.models.Model` for a spec (``"hog:uoctti"``) plus keyword options.

    Keyword options use the constructor names (``cell_size=4``, ``bin_size=4``) and override the
    spec's. The model's name is the spec with the keyword options appended.
    """
    from . import Model

    kind, parsed = parse_spec(spec)
    parsed.update(options)
    net = build_net(kind, **parsed)
    name = spec.strip()
    if options:
        extra = ",".join(f"{k}={v}" for k, v in options.items())
        name = f"{name},{extra}" if ":" in name else f"{name}:{extra}"
    try:  # options that leave no whole cell / descriptor in the default input are a user error
        with torch.no_grad():
            net(torch.zeros(1, 3, int(input_size), int(input_size)))
    except ValueError as exc:
        raise PreimageError(f"{name}: {exc} (input size {input_size})") from None
    aliases = {kind: "normalize", SHALLOW_LAYER: "normalize"}
    return Model(
        name=name, net=net, input_size=int(input_size), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
        classes=None, aliases=aliases, weights="none",
        normalization="none: [0, 1] RGB",
    )
