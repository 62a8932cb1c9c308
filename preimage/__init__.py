"""preimage: see what a vision network has learned by optimizing images through it.

>>> import preimage
>>> model = preimage.load_model("efficientnet_lite0")          # embedded ImageNet weights, offline
>>> result = preimage.invert(model, "sample:chelsea", layers=["blocks.3"])
>>> result.save("out/")                                       # reconstruction, side-by-side, manifest

The public names are imported on first use (PEP 562 module ``__getattr__``), so ``import preimage``
and the command line's ``--help`` and argument errors do not wait for torch to load.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

from .errors import PreimageError  # noqa: E402  (light: no torch)

#: public name -> the module that defines it (imported on first access)
_LAZY = {
    "load_image": "images", "load_tensor": "images", "save_image": "images", "to_pil": "images",
    "to_tensor": "images",
    "FeatureExtractor": "layers", "list_layers": "layers", "resolve_layer": "layers",
    "Model": "models", "list_models": "models", "load_model": "models",
    "Objective": "objectives",
    "Result": "optimize", "optimize": "optimize",
    "write_report": "report",
    "run_sweep": "sweep",
    "classify": "tasks.classify",
    "visualize_class": "tasks.classviz",
    "deep_dream": "tasks.deepdream",
    "channel_atlas": "tasks.atlas",
    "visualize_objective": "tasks.featviz",
    "fool": "tasks.fool",
    "InvertConfig": "tasks.invert", "invert": "tasks.invert",
    "saliency": "tasks.saliency",
    "stylize": "tasks.style",
}

__all__ = [
    "__version__", "PreimageError", "load_model", "list_models", "Model", "load_image", "load_tensor",
    "save_image", "to_pil", "to_tensor", "FeatureExtractor", "list_layers", "resolve_layer",
    "Objective", "optimize", "Result", "classify", "invert", "InvertConfig", "stylize",
    "saliency", "fool", "visualize_class", "visualize_objective", "deep_dream", "channel_atlas", "run_sweep",
    "write_report",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'preimage' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """Keeps ``preimage.optimize`` the function: importing the submodule ``preimage.optimize``
    would otherwise bind the module over the public name (as the eager imports never did)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType) and _LAZY[name] == name:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
