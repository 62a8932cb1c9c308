"""Any ``nn.Module`` as a preimage model: preprocessing, input size, channels and class names.

``preimage.load_model(net, mean=..., std=..., input_size=..., channels=..., classes=...)`` wraps a
network the zoo does not know (your own PyTorch module, or one converted from ONNX by
:mod:`preimage.models.onnx`). What is not given is filled in by one rule, stated here and in
docs/models.md:

- ``channels``: the ``in_channels`` of the first ``nn.Conv2d`` (3 when there is none). 1-channel
  models see grey images: RGB files are turned grey by BT.601 luma (``0.299 R + 0.587 G + 0.114 B``)
  and every picture they produce is grey.
- ``mean``/``std`` (per channel, in [0, 1] pixel units; the network sees ``(x - mean) / std``):
  ImageNet's for 3 channels, ``0`` and ``1`` (the network sees [0, 1] pixels) otherwise. A single
  number is used for every channel.
- ``input_size``: 224.
- ``classes``: a list of names or a text file with one name per line; by default, when the output
  is ``B x K`` (a classifier; of a module that returns a tuple or list, its first element), the
  names ``"0"`` .. ``"K-1"``; otherwise none (not a classifier: dream, saliency and fool need class
  scores).
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import PreimageError

__all__ = ["resolve_preprocessing", "wrap_module", "first_conv_channels", "read_classes"]

DEFAULT_INPUT_SIZE = 224


def first_conv_channels(net: nn.Module) -> int | None:
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
    return None


def _stats(what: str, value: float | Sequence[float], channels: int) -> tuple[float, ...]:
    values = [value] if isinstance(value, (int, float)) else list(value)
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        raise PreimageError(f"{what} must be numbers, not {value!r}") from None
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        fix = "give one value" if channels == 1 else f"give one value or {channels}"
        raise PreimageError(f"{what} has {len(values)} values for a {channels}-channel model ({fix})")
    if not all(math.isfinite(v) for v in values):
        raise PreimageError(f"{what} must be finite numbers, not {value!r}")
    if what == "std" and not all(v > 0 for v in values):
        raise PreimageError(f"std must be > 0, not {value!r}")
    return tuple(values)


def read_classes(classes: str | os.PathLike | Sequence[str], base: Path | None = None) -> tuple[str, ...]:
    """Class names from a list, or from a text file (one name per line, blank lines skipped)."""
    if isinstance(classes, (str, os.PathLike)):
        path = Path(classes).expanduser()
        if base is not None and not path.is_absolute():
            path = base / path
        if not path.is_file():
            raise PreimageError(f"class names file not found: {classes}")
        try:
            names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise PreimageError(f"cannot read class names from {classes}: {exc}") from None
        names = [n for n in names if n]
    else:
        names = [str(c) for c in classes]
    if not names:
        raise PreimageError("the class names list is empty")
    return tuple(names)


def resolve_preprocessing(
    *, channels: int | None, mean, std, input_size: int | None, default_channels: int | None,
    default_size: int | None = None,
) -> tuple[int, tuple[float, ...], tuple[float, ...], int]:
    """``(channels, mean, std, input_size)`` from what was given and the defaults of the module docstring."""
    from . import IMAGENET_MEAN, IMAGENET_STD

    c = int(channels if channels is not None else (default_channels or 3))
    if c not in (1, 3):
        raise PreimageError(f"channels must be 1 (grey) or 3 (RGB), not {c}")
    size = int(input_size if input_size is not None else (default_size or DEFAULT_INPUT_SIZE))
    if size < 16:
        raise PreimageError(f"input size {size} is too small (at least 16 pixels)")
    m = _stats("mean", mean if mean is not None else (IMAGENET_MEAN if c == 3 else 0.0), c)
    s = _stats("std", std if std is not None else (IMAGENET_STD if c == 3 else 1.0), c)
    return c, m, s, size


def _describe(mean: tuple[float, ...], std: tuple[float, ...]) -> str:
    def fmt(v: tuple[float, ...]) -> str:
        return ", ".join(f"{x:g}" for x in v)
    return f"(x - mean) / std, mean ({fmt(mean)}), std ({fmt(std)})"


@torch.no_grad()
def _output_classes(net: nn.Module, channels: int, size: int) -> int | None:
    """K when ``net`` maps one image to a ``1 x K`` output, else None."""
    try:
        out = net(torch.zeros(1, channels, size, size, device=_device(net)))
    except Exception as exc:  # a module that cannot take this input: say which
        lines = str(exc).strip().splitlines()
        raise PreimageError(
            f"the model fails on a 1 x {channels} x {size} x {size} input ({lines[0] if lines else type(exc).__name__}); "
            "give its input size and channels (input_size=, channels=; --input-size, --channels)"
        ) from None
    if isinstance(out, (tuple, list)):
        out = out[0]
    if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == 1:
        return int(out.shape[1])
    return None


def _device(net: nn.Module) -> torch.device:
    for t in [*net.parameters(), *net.buffers()]:
        return t.device
    return torch.device("cpu")


def wrap_module(
    net: nn.Module,
    *,
    name: str | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    input_size: int | None = None,
    channels: int | None = None,
    classes: str | os.PathLike | Sequence[str] | None = None,
    weights: str = "default",
    default_channels: int | None = None,
    default_size: int | None = None,
    normalization_note: str = "",
    aliases: dict[str, str] | None = None,
):
    """A :class:`~preimage.models.Model` around ``net`` (frozen, eval mode); see the module docstring."""
    from . import Model, _load_state, _weights_file

    if not isinstance(net, nn.Module):
        raise PreimageError(f"load_model takes a name, an .onnx path or an nn.Module, not {type(net).__name__}")
    label = name or type(net).__name__
    if weights not in ("default", "none"):
        _load_state(net, _weights_file(label, weights), weights, label)
    elif weights == "none":
        raise PreimageError(f"{label} is used with the weights it has; weights='none' (--weights none) applies "
                            "to zoo models")
    c, m, s, size = resolve_preprocessing(
        channels=channels, mean=mean, std=std, input_size=input_size,
        default_channels=default_channels or first_conv_channels(net), default_size=default_size)
    net.eval()
    k = _output_classes(net, c, size)
    names = None
    if classes is not None:
        names = read_classes(classes)
        if k is not None and len(names) != k:
            raise PreimageError(f"{len(names)} class names for a model with {k} outputs")
    elif k is not None:
        names = tuple(str(i) for i in range(k))
    return Model(
        name=label, net=net, input_size=size, mean=m, std=s, classes=names, aliases=dict(aliases or {}),
        weights="own" if weights == "default" else weights,
        normalization=_describe(m, s) + (f"; {normalization_note}" if normalization_note else ""), channels=c,
    )
