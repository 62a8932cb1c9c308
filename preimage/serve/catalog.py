"""What the page offers: the zoo's models, a model's layers with output shapes, its stages, samples.

Everything comes from the library (:func:`preimage.models.list_models`, :func:`preimage.layers.list_layers`,
:data:`preimage.images.SAMPLES`), so models and layers added there appear in the page.
"""
from __future__ import annotations

import functools
import re
import threading
from typing import Any

from ..errors import PreimageError, did_you_mean

__all__ = ["models", "check_model", "check_weights", "Layers", "stages"]

_TIMM = re.compile(r"^timm:[A-Za-z0-9_.\-]{1,80}$")


@functools.lru_cache(maxsize=1)
def models() -> list[dict[str, Any]]:
    """The zoo as the page lists it (computed once per server)."""
    from ..models import list_models

    return [{"name": m.name, "source": m.source, "input_size": m.input_size, "offline": m.offline, "note": m.note}
            for m in list_models()]


def check_model(name: str) -> str:
    """``name`` if the zoo lists it (or it is ``timm:NAME``); a PreimageError with suggestions otherwise.
    Only names: a client never passes a path (weights files, checkpoints) to the server."""
    names = [m["name"] for m in models()]
    if name in names or _TIMM.match(name):
        return name
    raise PreimageError(f"unknown model {name!r}" + did_you_mean(name, names) + "; the page lists the zoo")


def check_weights(name: str, weights: str) -> None:
    """Refuse weights that would have to be downloaded: the server writes nowhere but its own folder
    (a download would go to torchvision's or timm's cache). ``none`` (random init) always works."""
    from ..models import list_models

    if weights == "none":
        return
    if weights != "default":
        raise PreimageError("weights must be 'default' or 'none' (files are not taken from the page)")
    if not any(m.name == name and m.offline for m in list_models()):  # looked up afresh: a CLI run may fetch them
        raise PreimageError(
            f"the pretrained weights of {name} are not on this machine, and the server does not download "
            f"(it writes only under its output folder): choose weights none (random init), or fetch them "
            f"once with `preimage classify sample:chelsea --model {name}`")


def stages(model: Any) -> list[str]:
    """The stages of a network, shallow to deep, for a depth strip (at most 8).

    The children of its longest top-level sequence of spatial blocks that are not a normalization,
    activation or pooling (``blocks.0``..``blocks.6``; AlexNet's five convolutions), or else its top-level children with a spatial output that are not a
    normalization, activation or pooling (ResNet: ``conv1``, ``layer1`` .. ``layer4``); more than 8
    are thinned evenly, keeping the shallowest and the deepest.
    """
    from ..layers import list_layers
    from ..models.shallow import is_shallow_name

    if is_shallow_name(model.name):
        return []  # HOG and dense SIFT are one stage
    skip = ("BatchNorm", "ReLU", "Pool", "Identity", "Dropout", "SiLU", "GELU", "Hardswish", "ReLU6")
    spatial = [i.name for i in list_layers(model) if len(i.shape) == 3]
    kinds = {i.name: i.kind for i in list_layers(model)}
    top = [n for n in spatial if "." not in n and not any(k in kinds[n] for k in skip)]
    groups: dict[str, list[str]] = {}
    for n in spatial:
        parts = n.split(".")
        if len(parts) == 2 and parts[1].isdigit() and not any(k in kinds[n] for k in skip):
            groups.setdefault(parts[0], []).append(n)
    longest = max(groups.values(), key=len, default=[])
    picked = longest if len(longest) >= 3 else top
    if len(picked) > 8:
        picked = [picked[round(i * (len(picked) - 1) / 7)] for i in range(8)]
    return list(dict.fromkeys(picked))


class Layers:
    """Layer lists per (model, input size), from an architecture-only copy (random init) of each model,
    loaded on first request and kept (a few at a time)."""

    def __init__(self, size: int = 4):
        from .jobs import ModelCache

        self._cache = ModelCache("cpu", size)
        self._lock = threading.Lock()

    def describe(self, name: str, input_size: int | None = None) -> dict[str, Any]:
        from ..layers import list_layers

        check_model(name)
        with self._lock:  # one trace at a time: a model's hooks belong to one forward pass
            try:
                model = self._cache.get(name, "none", input_size)
                infos = list_layers(model)
                picked = stages(model)
            except PreimageError:
                raise
            except Exception as exc:  # e.g. a transformer that takes one input size only
                text = str(exc).strip().splitlines()
                size = f"an input of {input_size} pixels" if input_size else "its input size"
                raise PreimageError(f"{name} does not run at {size}: {type(exc).__name__}: "
                                    f"{text[0] if text else ''}") from None
        layers = [{"name": i.name, "kind": i.kind, "shape": list(i.shape), "aliases": list(i.aliases)}
                  for i in infos]
        default = _default_layer(name, picked, infos)
        return {"model": name, "input_size": model.input_size, "layers": layers, "stages": picked,
                "default_layer": default, "classes": list(model.classes) if model.classes else None}


def _default_layer(name: str, picked: list[str], infos: list[Any]) -> str:
    from ..recipes import DEFAULT_LAYERS

    if name in DEFAULT_LAYERS:
        return DEFAULT_LAYERS[name]
    if picked:
        return picked[len(picked) // 2]
    return infos[len(infos) // 2].name if infos else ""
