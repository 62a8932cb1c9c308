"""Sweep axes: names, typed values, the Cartesian product of runs, axes files and named recipes.

See :mod:`preimage.sweep` for the whole picture; this module turns what a user writes (``--layers
blocks.1,blocks.3``, a TOML file, ``--recipe depth``) into a :class:`Sweep` of :class:`Run` objects.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PreimageError, did_you_mean
from ..recipes import RECIPES
from ..tasks.invert import INVERT_PRESETS, InvertConfig, config_for
from ..validate import DEFAULT_MODEL
from .store import RunSpec, _plain

__all__ = ["AXES", "ALIASES", "RECIPES", "Run", "Sweep", "build_sweep", "normalize_axes", "canonical_axis", "coerce",
           "read_axes_file", "recipe_axes"]

#: axes that are not InvertConfig fields
RUN_AXES = ("image", "model", "weights", "layer", "preset", "input_size")
CONFIG_FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(InvertConfig)}
#: every axis name a sweep accepts (plural spellings are accepted too, see ALIASES)
AXES = RUN_AXES + tuple(CONFIG_FIELDS)
ALIASES = {
    "images": "image", "models": "model", "layers": "layer", "presets": "preset", "seeds": "seed",
    "optimizers": "optimizer", "lrs": "lr", "learning_rate": "lr", "iterations": "steps",
    "input_sizes": "input_size", "tv": "lambda_tv", "alpha_norm": "lambda_alpha",
}

# ---------------------------------------------------------------------------------------------
# values


def _field_kind(name: str) -> str:
    """The type annotation of an InvertConfig field, as text (``"int"``, ``"float | None"``, ...)."""
    t = CONFIG_FIELDS[name].type
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def coerce(axis: str, value: Any) -> Any:
    """Turn a value from a file or the command line into the axis's type; raise PreimageError."""
    if isinstance(value, str):
        value = value.strip()
    optional = False
    if axis in ("image", "model", "weights", "layer", "preset"):
        if not isinstance(value, str) or not value:
            raise PreimageError(f"{axis} must be a non-empty string, not {value!r}")
        if axis == "layer":
            from ..layers import parse_layer_spec

            parse_layer_spec(value)  # raises on a malformed spec
            return "+".join(p.strip() for p in value.split("+"))
        if axis == "preset" and value not in INVERT_PRESETS:
            raise PreimageError(f"unknown preset {value!r}" + did_you_mean(value, INVERT_PRESETS)
                                + f"; presets: {', '.join(INVERT_PRESETS)}")
        return value
    kind = "int | None" if axis == "input_size" else _field_kind(axis)
    optional = kind.endswith("| None")
    base = kind.replace("| None", "").strip()
    if optional and (value is None or (isinstance(value, str) and value.lower() in ("none", "null", ""))):
        return None
    try:
        if base.startswith("tuple"):
            items = value
            if isinstance(value, str):
                items = [v for v in re.split(r"[/;\s]+", value) if v]
            elem = int if "int" in base else float
            return tuple(elem(_number(v)) for v in items)
        if base == "int":
            v = _number(value)
            if isinstance(v, bool) or float(v) != int(float(v)):
                raise ValueError
            return int(float(v))
        if base == "float":
            v = float(_number(value))
            if v != v or v in (float("inf"), float("-inf")):
                raise ValueError
            return v
        if base == "str":
            if not isinstance(value, str) or not value:
                raise ValueError
            return value
    except (TypeError, ValueError):
        pass
    else:
        return value
    raise PreimageError(f"bad value {value!r} for {axis} (expected {kind})")


def _number(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError
    if isinstance(v, str):
        return float(v) if any(c in v for c in ".eE") or v.lower() in ("inf", "nan") else int(v)
    return v


def canonical_axis(name: str) -> str:
    """``"lambda-tv"``, ``"layers"`` -> ``"lambda_tv"``, ``"layer"``; composite ``"model+layer"``."""
    parts = [p.strip().replace("-", "_") for p in name.split("+")]
    out = []
    for p in parts:
        p = ALIASES.get(p, p)
        if p not in AXES:
            raise PreimageError(f"unknown sweep axis {p!r}" + did_you_mean(p, [*AXES, *ALIASES])
                                + "; axes: image, model, weights, layer, preset, input_size and any "
                                "inversion setting (steps, optimizer, lr, lambda_tv, lambda_alpha, seed, ...)")
        out.append(p)
    if len(set(out)) != len(out):
        raise PreimageError(f"axis {name!r} names a setting twice")
    return "+".join(out)


def normalize_axes(axes: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Canonical axis names, values as typed lists (a scalar is a one-value axis), duplicates dropped.

    A composite axis ``"a+b"`` varies several settings together: its values are sequences with
    one item per part, e.g. ``{"model+layer": [["resnet18", "layer1"], ["vgg16", "conv3_1"]]}``."""
    out: dict[str, list[Any]] = {}
    for raw, values in axes.items():
        name = canonical_axis(str(raw))
        parts = name.split("+")
        if any(p in out or any(p in k.split("+") for k in out) for p in parts):
            raise PreimageError(f"axis {name!r} is given twice")
        tuple_typed = len(parts) == 1 and name in CONFIG_FIELDS and "tuple" in _field_kind(name)
        if tuple_typed and isinstance(values, (list, tuple)) and values and all(isinstance(v, str) for v in values):
            pass  # each text is one value: --set decay_steps=150/225,300 gives (150, 225) and (300,)
        elif tuple_typed and (values is None or (isinstance(values, (list, tuple))
                                                 and not any(isinstance(v, (list, tuple)) for v in values))):
            values = [values]  # a flat list is one value of a tuple setting: decay_steps = [150, 225]
        elif not isinstance(values, (list, tuple)):
            values = [values]
        if len(parts) > 1:
            vals = []
            for v in values:
                if isinstance(v, str):
                    v = [x for x in re.split(r"[@|]", v)]
                if not isinstance(v, (list, tuple)) or len(v) != len(parts):
                    raise PreimageError(f"each value of axis {name!r} needs {len(parts)} items "
                                        f"({', '.join(parts)}), not {v!r}")
                vals.append(tuple(coerce(p, x) for p, x in zip(parts, v)))
        else:
            if not tuple_typed and any(isinstance(v, (list, tuple)) for v in values):
                raise PreimageError(f"axis {name!r} takes single values, not lists")
            vals = [coerce(name, v) for v in values]
        uniq: list[Any] = []
        for v in vals:
            if v not in uniq:
                uniq.append(v)
        if not uniq:
            raise PreimageError(f"axis {name!r} has no values")
        out[name] = uniq
    return out

# ---------------------------------------------------------------------------------------------
# the sweep


@dataclass
class Run:
    spec: RunSpec
    labels: dict[str, Any]  # swept axis -> this run's value

    @property
    def key(self) -> str:
        return self.spec.key


@dataclass
class Sweep:
    """Axes (name -> values, in order) and the runs of their Cartesian product."""

    axes: dict[str, list[Any]]
    runs: list[Run]
    recipe: str | None = None
    display: dict[str, dict[str, str]] = field(default_factory=dict)  # axis -> value -> nicer label
    title: str = ""

    @property
    def swept(self) -> list[str]:
        """Axes with more than one value (the ones a report lays out)."""
        return [a for a, v in self.axes.items() if len(v) > 1]

    def as_dict(self, out: Path, runs_dir: Path) -> dict[str, Any]:
        from .. import __version__

        def where(run: Run) -> str:
            p = runs_dir / run.spec.dirname
            try:
                return str(p.relative_to(out))
            except ValueError:
                return str(p.resolve())

        return {
            "preimage": __version__, "task": "invert", "recipe": self.recipe, "title": self.title,
            "axes": {k: [_label(v) for v in vals] if "+" in k else [_plain(v) for v in vals]
                     for k, vals in self.axes.items()},
            "swept": self.swept, "display": self.display,
            "runs": [{"key": r.key, "dir": where(r), "labels": {k: _label(v) for k, v in r.labels.items()},
                      "spec": r.spec.as_dict()} for r in self.runs],
        }


def _label(v: Any) -> Any:
    if isinstance(v, tuple):
        return " · ".join(str(x) for x in v)
    return v


def build_sweep(axes: Mapping[str, Any], *, recipe: str | None = None,
                display: Mapping[str, Mapping[str, str]] | None = None, title: str = "") -> Sweep:
    """The runs of the Cartesian product of ``axes`` (see :func:`normalize_axes`). ``image`` and
    ``layer`` are required; ``model`` defaults to the embedded efficientnet_lite0.

    When ``steps`` is set but ``decay_steps`` is not, the preset's lr drops are moved in proportion
    (a drop at 225 of 300 steps happens at 750 of 1000; :func:`preimage.tasks.invert.config_for`), so
    every step count keeps its last phase."""
    ax = normalize_axes(axes)
    flat = {p for k in ax for p in k.split("+")}
    if "image" not in flat:
        raise PreimageError("no image: give IMAGE (a file or sample:NAME, e.g. sample:chelsea)")
    if "layer" not in flat:
        raise PreimageError("no layer: give a layer axis (--layers, e.g. blocks.3 or conv3_1+fc6) or a recipe "
                            "(--recipe)")
    if "model" not in flat:
        ax["model"] = [DEFAULT_MODEL]
    names = list(ax)
    runs: list[Run] = []
    seen: set[str] = set()
    for combo in itertools.product(*(ax[n] for n in names)):
        values: dict[str, Any] = {}
        for n, v in zip(names, combo):
            if "+" in n:
                values.update(zip(n.split("+"), v))
            else:
                values[n] = v
        overrides = {k: v for k, v in values.items() if k in CONFIG_FIELDS}
        preset = values.get("preset", "default")
        spec = RunSpec(image=values["image"], model=values.get("model", DEFAULT_MODEL), layer=values["layer"],
                       weights=values.get("weights", "default"), preset=preset,
                       input_size=values.get("input_size"), overrides=tuple(sorted(overrides.items())))
        spec.config()  # raises PreimageError on an invalid combination
        if spec.key in seen:
            continue
        seen.add(spec.key)
        labels = {n: v for n, v in zip(names, combo) if len(ax[n]) > 1}
        runs.append(Run(spec, labels))
    return Sweep(ax, runs, recipe=recipe, display={k: dict(v) for k, v in (display or {}).items()}, title=title)


def read_axes_file(path: str | os.PathLike) -> dict[str, Any]:
    """Axes from a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file: a table of axis = value(s).

    ``recipe = "depth"`` may appear too (the recipe's axes, then the file's on top)::

        image = ["sample:chelsea", "sample:coffee"]
        layer = ["blocks.1", "blocks.3", "blocks.3+conv_head"]
        lr = [0.01, 0.05]
        steps = 200
    """
    p = Path(path)
    if not p.is_file():
        raise PreimageError(f"sweep file not found: {path}")
    text = p.read_bytes()
    try:
        if p.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text.decode())
        elif p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise PreimageError(f"{path}: unknown sweep file type (use .toml, .yaml or .yml)")
    except PreimageError:
        raise
    except Exception as exc:  # tomllib.TOMLDecodeError, yaml.YAMLError, UnicodeDecodeError
        first = str(exc).strip().splitlines()
        raise PreimageError(f"cannot parse {path}: {first[0] if first else type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise PreimageError(f"{path}: expected a table of axis = values, not {type(data).__name__}")
    if "sweep" in data and isinstance(data["sweep"], dict) and len(data) == 1:
        data = data["sweep"]
    return dict(data)

# ---------------------------------------------------------------------------------------------
# recipes


def _depth_layers(model: str) -> list[tuple[str, str]]:
    """(layer spec, description) for shallow / middle / deep / combination, per model family."""
    if model.startswith("efficientnet_lite"):
        return [("blocks.1", "shallow"), ("blocks.3", "middle"), ("conv_head", "deep"),
                ("blocks.3+conv_head", "middle+deep")]
    if model.startswith("vgg"):
        return [("conv1_1", "shallow"), ("conv3_1", "middle"), ("fc6", "deep"), ("conv3_1+fc6", "middle+deep")]
    if model == "alexnet":
        return [("conv1", "shallow"), ("conv3", "middle"), ("fc6", "deep"), ("conv3+fc6", "middle+deep")]
    if model.startswith(("resnet", "resnext", "wide_resnet")):
        return [("layer1", "shallow"), ("layer3", "middle"), ("layer4", "deep"), ("layer3+layer4", "middle+deep")]
    if model in ("hog", "dsift"):
        raise PreimageError(f"the depth recipe needs a deep network; {model} has one stage")
    from ..layers import list_layers
    from ..models import load_model

    from ..models import vit

    # only the layer structure is needed: random weights, except for ONNX files, which carry their own
    net = load_model(model, weights="default" if model.lower().endswith(".onnx") else "none")
    if vit.token_layout(net.net) is not None:  # a Vision Transformer: an early, a middle and the last block
        n = len(net.net.blocks)
        pick = [f"blocks.{round(f * (n - 1))}" for f in (0.15, 0.5, 1.0)]
        return [(pick[0], "shallow"), (pick[1], "middle"), (pick[2], "deep"), (f"{pick[1]}+{pick[2]}", "middle+deep")]
    infos = [i for i in list_layers(net) if len(i.shape) == 3 and i.name.count(".") <= 1]
    if len(infos) < 3:
        raise PreimageError(f"cannot pick shallow/middle/deep layers of {model}; give the layers (--layers)")
    pick = [infos[round(f * (len(infos) - 1))].name for f in (0.15, 0.5, 0.95)]
    return [(pick[0], "shallow"), (pick[1], "middle"), (pick[2], "deep"), (f"{pick[1]}+{pick[2]}", "middle+deep")]


def _middle_layer(model: str) -> str:
    return {"hog": "features", "dsift": "features"}.get(model) or _depth_layers(model)[1][0]


def _models_default(weights: str) -> list[tuple[str, str]]:
    """Offline: the three embedded EfficientNet-Lite models and HOG / dense SIFT; torchvision's
    ResNet-18 (layer1 and layer3) and VGG16 (conv3_1) when their weights are in the local cache."""
    from ..models import _torchvision_cached

    pairs = [(m, "blocks.3") for m in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")]
    if weights == "default":
        if _torchvision_cached("resnet18"):
            pairs += [("resnet18", "layer1"), ("resnet18", "layer3")]
        if _torchvision_cached("vgg16"):
            pairs.append(("vgg16", "conv3_1"))
    pairs += [("hog", "features"), ("dsift", "features")]
    return pairs




def recipe_axes(name: str, *, model: str | Sequence[str] | None = None, weights: str = "default",
                preset: str | None = None) -> tuple[dict[str, Any], dict[str, dict[str, str]], str]:
    """``(axes, display names, title)`` of a named recipe for ``model`` (default: the embedded model).

    Images are not part of a recipe (give them separately). Step counts keep each recipe within a
    few minutes on two CPU cores at the model's input size: the preset's own for depth, tv and
    models, 1000 for lr.
    """
    if name not in RECIPES:
        raise PreimageError(f"unknown recipe {name!r}" + did_you_mean(name, RECIPES) + f"; recipes: {', '.join(RECIPES)}")
    models = [model] if isinstance(model, str) else list(model or [])
    if name != "models" and len(models) > 1:
        raise PreimageError(f"the {name} recipe takes one model, not {len(models)}")
    m = models[0] if models else DEFAULT_MODEL
    display: dict[str, dict[str, str]] = {}
    if name == "depth":
        layers = _depth_layers(m)
        axes: dict[str, Any] = {"model": m, "layer": [spec for spec, _ in layers]}
        display["layer"] = {spec: f"{spec} ({what.replace('middle+', 'mid+')})" for spec, what in layers}
        title = f"What each layer of {m} remembers"
    elif name == "tv":
        base = config_for(preset or "default").lambda_tv or 1.0
        axes = {"model": m, "layer": _middle_layer(m),
                "lambda_tv": [0.0, base, 10 * base]}
        display["lambda_tv"] = {str(0.0): "TV off", str(base): f"TV {base:g} (default)",
                                str(10 * base): f"TV {10 * base:g} (10x)"}
        title = f"The TV prior's weight ({m})"
    elif name == "lr":
        axes = {"model": m, "layer": _middle_layer(m),
                "preset": "original", "optimizer": "adam", "lr": [0.001, 0.01], "steps": 1000,
                "decay_steps": ()}
        title = f"Adam's learning rate in the normalized input space ({m})"
        return axes, display, title
    else:  # models: HOG and dense SIFT with their own preset (see tasks/invert.py), the rest with `preset`
        pairs = [(mm, _middle_layer(mm)) for mm in models] if models else _models_default(weights)
        shallow = "shallow" if "shallow" in INVERT_PRESETS else "default"
        axes = {"model+layer+preset": [[mm, layer, shallow if mm in ("hog", "dsift") else (preset or "default")]
                                       for mm, layer in pairs]}
        display["model+layer+preset"] = {" · ".join(v): f"{v[0]} {v[1]}" for v in axes["model+layer+preset"]}
        return axes, display, "The same photo through several models"
    if preset:
        axes["preset"] = preset
    return axes, display, title
