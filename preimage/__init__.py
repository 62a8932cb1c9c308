"""preimage: see what a vision network has learned by optimizing images through it.

>>> import preimage
>>> model = preimage.load_model("efficientnet_lite0")          # embedded ImageNet weights, offline
>>> result = preimage.invert(model, "sample:chelsea", layers=["blocks.3"])
>>> result.save("out/")                                       # reconstruction, side-by-side, manifest
"""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import PreimageError  # noqa: E402
from .images import load_image, load_tensor, save_image, to_pil, to_tensor  # noqa: E402
from .layers import FeatureExtractor, list_layers, resolve_layer  # noqa: E402
from .models import Model, list_models, load_model  # noqa: E402
from .objectives import Objective  # noqa: E402
from .optimize import Result, optimize  # noqa: E402
from .report import write_report  # noqa: E402
from .sweep import run_sweep  # noqa: E402
from .tasks.classify import classify  # noqa: E402
from .tasks.classviz import visualize_class  # noqa: E402
from .tasks.fool import fool  # noqa: E402
from .tasks.invert import InvertConfig, invert  # noqa: E402
from .tasks.saliency import saliency  # noqa: E402
from .tasks.style import stylize  # noqa: E402

__all__ = [
    "__version__", "PreimageError", "load_model", "list_models", "Model", "load_image", "load_tensor",
    "save_image", "to_pil", "to_tensor", "FeatureExtractor", "list_layers", "resolve_layer",
    "Objective", "optimize", "Result", "classify", "invert", "InvertConfig", "stylize",
    "saliency", "fool", "visualize_class", "run_sweep", "write_report",
]
