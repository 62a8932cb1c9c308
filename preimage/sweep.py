"""Sweeps: feature inversion over the Cartesian product of settings, cached, resumable and parallel.

A sweep names *axes* — images, models, layers (or layer combinations such as ``conv3_1+fc6``), the
inversion preset and any :class:`~preimage.tasks.invert.InvertConfig` field (optimizer, lr,
lambda_tv, lambda_alpha, steps, seed, ...) — each with one or more values, and runs
:func:`preimage.tasks.invert.invert` once for every combination. It is how the classic study of
inversion (Mahendran & Vedaldi, CVPR 2015 / IJCV 2016: what does each layer keep, how do the
regularizers and the optimizer shape the pre-image) is redone on any model in one command:

    preimage sweep sample:chelsea --layers blocks.1,blocks.3,conv_head --lambda-tv 0,1,10 --jobs 2
    preimage sweep --recipe depth sample:chelsea && preimage report out/sweep-depth

    >>> from preimage.sweep import run_sweep
    >>> res = run_sweep({"image": "sample:chelsea", "layer": ["blocks.1", "blocks.3"], "steps": 100}, "out/s")
    >>> res.computed, res.cached            # run keys computed now / found in the cache

Layout of a sweep folder::

    OUT/sweep.json              the axes and the run list (key, folder, labels, spec of every run)
    OUT/runs/<name>-<key>/      one folder per run: run.json, manifest.json, history.json,
                                NAME.png (reconstruction), NAME_compare.png, NAME_original.png

Caching: a run's key hashes everything that determines its result — model name, weights (a file's
content digest), layer spec, image source (a file's content digest), input size, the fully
resolved inversion config and the preimage version. A run folder appears only when complete (it is
written under a temporary name and renamed into place), so an interrupted sweep resumes with the
missing runs and a repeated sweep recomputes nothing.

Parallelism: ``jobs`` local processes, each with ``cores // jobs`` torch threads (never more threads
than cores in all), or Ray tasks (``ray_address``; one CPU and one torch thread each) on a local or
remote Ray cluster. Workers only compute and return the run's files; the driver writes them, so the
cache is the same whichever way a run was computed.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import PreimageError, did_you_mean
from .tasks.invert import INVERT_PRESETS, InvertConfig, config_for, invert

__all__ = [
    "RunSpec", "Sweep", "SweepResult", "build_sweep", "run_sweep", "load_sweep", "read_axes_file",
    "recipe_axes", "RECIPES", "compute_run", "AXES",
]

log = logging.getLogger(__name__)

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
RUN_FILES = ("run.json", "manifest.json", "history.json")
SWEEP_FILE = "sweep.json"
DEFAULT_MODEL = "efficientnet_lite0"


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
            from .layers import parse_layer_spec

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
        if tuple_typed and (values is None or (isinstance(values, (list, tuple))
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
# one run


@functools.lru_cache(maxsize=256)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _source_identity(src: str, kind: str) -> dict[str, Any]:
    """A source string plus, for a file, the digest of its content (so an edited file is a new run)."""
    if kind == "image" and src.startswith("sample:"):
        return {"source": src}
    if kind == "weights" and src in ("default", "none"):
        return {"source": src}
    p = Path(src).expanduser()
    if p.is_file():
        st = p.stat()
        return {"source": src, "sha256": _file_digest(str(p.resolve()), st.st_mtime_ns, st.st_size)}
    return {"source": src}


def _slug(text: str, n: int = 40) -> str:
    s = re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-.") or "x"
    return s[:n]


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one inversion of a sweep (picklable; sent to worker processes)."""

    image: str
    model: str = DEFAULT_MODEL
    layer: str = ""
    weights: str = "default"
    preset: str = "default"
    input_size: int | None = None
    overrides: tuple[tuple[str, Any], ...] = ()  # InvertConfig fields set by the sweep, sorted by name

    def config(self) -> InvertConfig:
        return config_for(self.preset, **dict(self.overrides))

    def identity(self) -> dict[str, Any]:
        """What the cache key hashes."""
        from . import __version__
        from .layers import parse_layer_spec

        return {
            "task": "invert",
            "model": self.model,
            "weights": _source_identity(self.weights, "weights"),
            "input_size": self.input_size,
            "layers": [[n, w] for n, w in parse_layer_spec(self.layer)],
            "image": _source_identity(self.image, "image"),
            "config": _plain(self.config().as_dict()),
            "preimage": __version__,
        }

    @property
    def key(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def dirname(self) -> str:
        from .images import image_name

        return f"{_slug(image_name(self.image), 24)}_{_slug(self.model, 24)}_{_slug(self.layer, 40)}_{self.key[:10]}"

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["overrides"] = {k: _plain(v) for k, v in self.overrides}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunSpec":
        ov = d.get("overrides") or {}
        return cls(image=d["image"], model=d.get("model", DEFAULT_MODEL), layer=d["layer"],
                   weights=d.get("weights", "default"), preset=d.get("preset", "default"),
                   input_size=d.get("input_size"),
                   overrides=tuple(sorted((k, coerce(k, v)) for k, v in ov.items())))


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


# one model per (name, weights, input size, device) per process: workers run many runs
_MODELS: dict[tuple, Any] = {}


def _model(spec: RunSpec, device: str):
    from .models import load_model

    import torch

    k = (spec.model, spec.weights, spec.input_size, device)
    if k not in _MODELS:
        if len(_MODELS) >= 4:
            _MODELS.pop(next(iter(_MODELS)))
        # a random-init network is drawn from a fixed seed, so every process builds the same one
        # and a cached run can be reproduced
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            _MODELS[k] = load_model(spec.model, weights=spec.weights, device=device, input_size=spec.input_size)
    return _MODELS[k]


def compute_run(spec: RunSpec, device: str = "cpu", threads: int | None = None,
                on_step: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run one inversion and return its files as bytes (``{"files": {name: bytes}, ...}``);
    ``on_step`` is called after every optimization step.

    Nothing is written to the sweep folder here, so a worker (a local process or a Ray task on
    another machine) never leaves a half-written run behind; :func:`store_run` writes them.
    A Ctrl-C inside the optimization raises KeyboardInterrupt (an interrupted run is not a result).
    """
    import torch

    from .images import save_image

    if threads:
        torch.set_num_threads(int(threads))
    t0 = time.perf_counter()
    model = _model(spec, device)
    callbacks = [lambda _step: on_step()] if on_step is not None else []
    inv = invert(model, spec.image, layers=spec.layer, config=spec.config(), callbacks=callbacks)
    if inv.status == "interrupted":
        raise KeyboardInterrupt
    with tempfile.TemporaryDirectory(prefix="preimage-run-") as tmp:
        inv.save(tmp, force=True)
        save_image(inv.reference[0], Path(tmp) / f"{inv.names[0]}_original.png")
        files = {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
    import platform

    info = {
        "key": spec.key, "spec": spec.as_dict(), "identity": spec.identity(), "name": inv.names[0],
        "status": inv.status, "seconds": round(inv.result.seconds, 3),
        "wall_seconds": round(time.perf_counter() - t0, 3), "device": device,
        "threads": torch.get_num_threads(), "host": platform.node(), "pid": os.getpid(),
    }
    info["files"] = {name: len(data) for name, data in sorted(files.items())}  # what verify_run checks
    files["run.json"] = (json.dumps(info, indent=2) + "\n").encode()
    return {"key": spec.key, "files": files, "status": inv.status, "seconds": info["seconds"]}


def store_run(runs_dir: Path, spec: RunSpec, payload: Mapping[str, Any]) -> Path:
    """Write a computed run atomically: into ``.tmp-<name>-<pid>`` first, renamed when complete."""
    final = runs_dir / spec.dirname
    tmp = runs_dir / f".tmp-{spec.dirname}-{os.getpid()}"
    runs_dir.mkdir(parents=True, exist_ok=True)
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        for name, data in payload["files"].items():
            if name != "run.json":
                (tmp / name).write_bytes(data)
        (tmp / "run.json").write_bytes(payload["files"]["run.json"])  # the completion marker, last
        if final.exists():  # a stale or concurrent copy: replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def verify_run(run_dir: Path) -> str | None:
    """None when a run folder is complete, else what is wrong with it (one phrase).

    Complete means: run.json, manifest.json and history.json parse as JSON, and every file the run
    wrote (listed with its size in run.json; for runs cached before that list existed, the three
    PNGs of the run) is there, has that size, and a PNG decodes. A folder that exists is not
    enough: a deleted or truncated file makes the run one to compute again."""
    if not run_dir.is_dir():
        return "missing"
    docs = {}
    for f in RUN_FILES:
        try:
            docs[f] = json.loads((run_dir / f).read_text())
        except FileNotFoundError:
            return f"{f} is missing"
        except (OSError, ValueError):
            return f"{f} is damaged"
        if not isinstance(docs[f], dict):
            return f"{f} is damaged"
    info = docs["run.json"]
    name = info.get("name")
    listed = info.get("files")
    if not isinstance(listed, dict):
        if not isinstance(name, str) or not name:
            return "run.json names no image"
        listed = {f"{name}{suffix}.png": None for suffix in ("", "_compare", "_original")}
    for fname, size in listed.items():
        path = run_dir / fname
        try:
            actual = path.stat().st_size
        except OSError:
            return f"{fname} is missing"
        if size is not None and actual != size:
            return f"{fname} is truncated or changed ({actual} bytes, {size} written)"
        if fname.endswith(".png"):
            from PIL import Image

            try:
                with Image.open(path) as im:
                    im.verify()
            except Exception:  # any decoder error: the file is damaged
                return f"{fname} is damaged"
    return None


def is_complete(run_dir: Path) -> bool:
    """Whether a run folder holds every file of a finished run, each readable (see :func:`verify_run`)."""
    return verify_run(run_dir) is None


def _clean_stale(runs_dir: Path) -> None:
    """Remove temporary run folders left by a process that no longer exists (e.g. kill -9)."""
    if not runs_dir.is_dir():
        return
    for p in runs_dir.glob(".tmp-*"):
        m = re.search(r"-(\d+)$", p.name)
        pid = int(m.group(1)) if m else -1
        alive = False
        if pid > 0:
            try:
                os.kill(pid, 0)
                alive = True
            except ProcessLookupError:
                alive = False
            except PermissionError:
                alive = True
        if not alive or pid == os.getpid():
            shutil.rmtree(p, ignore_errors=True)


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
        from . import __version__

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
    (a drop at 225 of 300 steps happens at 750 of 1000), so every step count keeps its last phase."""
    ax = normalize_axes(axes)
    flat = {p for k in ax for p in k.split("+")}
    if "image" not in flat:
        raise PreimageError("no image: give IMAGE (a file or sample:NAME, e.g. sample:chelsea)")
    if "layer" not in flat:
        raise PreimageError("no layer: give --layers (e.g. blocks.3 or conv3_1+fc6) or a --recipe")
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
        if "steps" in overrides and "decay_steps" not in overrides:
            base = INVERT_PRESETS[preset]
            if base.steps and base.decay_steps:
                overrides["decay_steps"] = tuple(max(1, round(s * overrides["steps"] / base.steps))
                                                 for s in base.decay_steps)
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
    from .layers import list_layers
    from .models import load_model

    from .models import vit

    net = load_model(model, weights="none")
    if vit.token_layout(net.net) is not None:  # a Vision Transformer: an early, a middle and the last block
        n = len(net.net.blocks)
        pick = [f"blocks.{round(f * (n - 1))}" for f in (0.15, 0.5, 1.0)]
        return [(pick[0], "shallow"), (pick[1], "middle"), (pick[2], "deep"), (f"{pick[1]}+{pick[2]}", "middle+deep")]
    infos = [i for i in list_layers(net) if len(i.shape) == 3 and i.name.count(".") <= 1]
    if len(infos) < 3:
        raise PreimageError(f"cannot pick shallow/middle/deep layers of {model}; give --layers")
    pick = [infos[round(f * (len(infos) - 1))].name for f in (0.15, 0.5, 0.95)]
    return [(pick[0], "shallow"), (pick[1], "middle"), (pick[2], "deep"), (f"{pick[1]}+{pick[2]}", "middle+deep")]


def _middle_layer(model: str) -> str:
    return {"hog": "features", "dsift": "features"}.get(model) or _depth_layers(model)[1][0]


def _models_default(weights: str) -> list[tuple[str, str]]:
    """Offline: the three embedded EfficientNet-Lite models and HOG / dense SIFT; torchvision's
    ResNet-18 (layer1 and layer3) and VGG16 (conv3_1) when their weights are in the local cache."""
    from .models import _torchvision_cached

    pairs = [(m, "blocks.3") for m in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")]
    if weights == "default":
        if _torchvision_cached("resnet18"):
            pairs += [("resnet18", "layer1"), ("resnet18", "layer3")]
        if _torchvision_cached("vgg16"):
            pairs.append(("vgg16", "conv3_1"))
    pairs += [("hog", "features"), ("dsift", "features")]
    return pairs


from .recipes import RECIPES  # noqa: E402  (light: preimage sweep --help reads it without torch)


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


# ---------------------------------------------------------------------------------------------
# running


@dataclass
class SweepResult:
    """What :func:`run_sweep` did. ``computed``/``cached``: run keys; ``failed``: key -> message."""

    out: Path
    sweep: Sweep
    computed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


def _init_worker(threads: int) -> None:
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C and stops the workers
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # pragma: no cover - already set
        pass


def _safe_compute(spec: RunSpec, device: str, threads: int | None,
                  on_step: Callable[[], None] | None = None) -> dict[str, Any]:
    """compute_run, with errors returned as data (one failed run does not stop the sweep)."""
    try:
        return compute_run(spec, device, threads, on_step)
    except KeyboardInterrupt:
        raise
    except PreimageError as exc:
        return {"key": spec.key, "error": str(exc)}
    except Exception as exc:  # a bug or an out-of-memory: keep the message, go on with the others
        text = str(exc).strip().splitlines()
        return {"key": spec.key, "error": f"{type(exc).__name__}: {text[0] if text else ''}"}


def _validate_inputs(sweep: Sweep, device: str) -> None:
    """Fail before any work on a missing image, an unknown model or layer (one line each)."""
    from .images import load_image
    from .layers import parse_layer_spec, resolve_layer

    for src in dict.fromkeys(r.spec.image for r in sweep.runs):
        load_image(src)
    by_model: dict[tuple, set[str]] = {}
    for r in sweep.runs:
        by_model.setdefault((r.spec.model, r.spec.weights, r.spec.input_size), set()).add(r.spec.layer)
    for (name, weights, size), layers in by_model.items():
        # loaded through the run cache: in-process runs reuse these models
        model = _model(RunSpec(image="", model=name, weights=weights, input_size=size), device)
        for spec in sorted(layers):
            for layer, _ in parse_layer_spec(spec):
                resolve_layer(model, layer)


def run_sweep(
    sweep: Sweep | Mapping[str, Any],
    out: str | os.PathLike,
    *,
    jobs: int = 1,
    threads: int | None = None,
    ray_address: str | None = None,
    device: str = "cpu",
    progress: bool = False,
    force: bool = False,
    cache: str | os.PathLike | None = None,
    validate: bool = True,
    on_result: Callable[[Run, str], None] | None = None,
) -> SweepResult:
    """Run every run of ``sweep`` (a :class:`Sweep` or an axes mapping) not yet in the cache.

    Args:
        out: the sweep folder (``sweep.json`` and, unless ``cache`` is given, ``runs/``).
        jobs: local worker processes; 1 runs in-process.
        threads: torch threads per process (default: ``cores // jobs`` for worker processes, the
            current setting in-process); ``jobs * threads`` is kept at most the number of cores.
        ray_address: run as Ray tasks instead: ``"local"`` starts a local Ray instance, ``"auto"``
            or ``"ray://host:10001"`` joins a cluster; an already initialized Ray is used as it is.
        device: where the networks run (``"cpu"``, ``"cuda"``).
        progress: a tqdm bar over all the steps of the sweep, with the time left (it moves at every
            step when runs are in-process, at every finished run with worker processes or Ray).
        force: recompute runs even when cached.
        cache: folder of run results shared between sweeps (default ``out/runs``).
        validate: check images, models and layers before starting.
        on_result: called as ``fn(run, "computed" | "cached" | "failed")`` after each run.

    Ctrl-C (KeyboardInterrupt) stops the workers and is re-raised; finished runs stay in the cache
    and no partial run folder is left.
    """
    t0 = time.perf_counter()
    if not isinstance(sweep, Sweep):
        sweep = build_sweep(sweep)
    out = Path(out)
    runs_dir = Path(cache) if cache is not None else out / "runs"
    if out.exists() and not out.is_dir():
        raise PreimageError(f"{out} exists and is not a folder")
    if validate:
        _validate_inputs(sweep, device)
    out.mkdir(parents=True, exist_ok=True)
    runs_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK) or not os.access(runs_dir, os.W_OK):
        raise PreimageError(f"cannot write to {out}")
    _clean_stale(runs_dir)
    from .io import write_json

    write_json(out / SWEEP_FILE, sweep.as_dict(out, runs_dir))
    result = SweepResult(out=out, sweep=sweep)
    todo: list[Run] = []
    for run in sweep.runs:
        if not force and is_complete(runs_dir / run.spec.dirname):
            result.cached.append(run.key)
            if on_result:
                on_result(run, "cached")
        else:
            todo.append(run)
    todo.sort(key=lambda r: (r.spec.model, r.spec.weights, str(r.spec.input_size)))  # workers reuse models
    bar = None
    if progress and todo:
        from .progress import progress_bar

        bar = progress_bar(sum(r.spec.config().steps for r in todo), "sweep", "step")
        bar.set_postfix_str(f"runs 0/{len(todo)} (+{len(result.cached)} cached)")
    done = 0
    stepped = 0  # steps of the current in-process run already shown on the bar

    def step() -> None:
        nonlocal stepped
        stepped += 1
        if bar is not None:
            bar.update(1)

    def finish(run: Run, payload: Mapping[str, Any]) -> None:
        nonlocal done, stepped
        done += 1
        if "error" in payload:
            result.failed[run.key] = payload["error"]
            log.warning("run %s failed: %s", run.spec.dirname, payload["error"])
            status = "failed"
        else:
            store_run(runs_dir, run.spec, payload)
            result.computed.append(run.key)
            status = "computed"
        if bar is not None:
            bar.update(max(0, run.spec.config().steps - stepped))
            bar.set_postfix_str(f"runs {done}/{len(todo)} (+{len(result.cached)} cached)")
        stepped = 0
        if on_result:
            on_result(run, status)

    try:
        if not todo:
            pass
        elif ray_address:
            _run_ray(todo, ray_address, device, finish)
        elif jobs > 1 and len(todo) > 1:
            _run_pool(todo, min(jobs, len(todo)), threads, device, finish)
        else:
            import torch

            before = torch.get_num_threads()
            try:
                for run in todo:
                    n_threads = min(threads, _cores()) if threads else None
                    finish(run, _safe_compute(run.spec, device, n_threads, step if bar is not None else None))
            finally:
                torch.set_num_threads(before)
    finally:
        if bar is not None:
            bar.close()
        _clean_stale(runs_dir)
    result.seconds = time.perf_counter() - t0
    return result


def _run_pool(todo: list[Run], jobs: int, threads: int | None, device: str,
              finish: Callable[[Run, Mapping[str, Any]], None]) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    cores = _cores()
    if jobs > cores:
        log.warning("%d jobs on %d cores: using %d", jobs, cores, cores)
        jobs = cores
    threads = max(1, min(threads or cores, cores // jobs))
    ex = ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                             initargs=(threads,))
    futures = {ex.submit(_safe_compute, r.spec, device, threads): r for r in todo}
    try:
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                run = futures[f]
                try:
                    payload = f.result()
                except Exception as exc:  # the worker died (killed, out of memory)
                    payload = {"key": run.key, "error": f"worker failed: {type(exc).__name__}: {exc}"}
                finish(run, payload)
    except BaseException:
        for f in futures:
            f.cancel()
        for p in list((getattr(ex, "_processes", None) or {}).values()):
            p.terminate()
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    ex.shutdown(wait=True)


def _run_ray(todo: list[Run], address: str, device: str, finish: Callable[[Run, Mapping[str, Any]], None]) -> None:
    try:
        import ray
    except ImportError:
        raise PreimageError("--ray needs Ray: pip install 'preimage[ray]'") from None
    started = False
    if not ray.is_initialized():
        try:
            if address == "local":
                ray.init(num_cpus=_cores(), include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()
            raise PreimageError(f"cannot connect to Ray at {address}: {first[0] if first else exc}") from None
        started = True
    task = ray.remote(num_cpus=1, max_retries=1)(_safe_compute)
    refs = {task.remote(r.spec, device, 1): r for r in todo}
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            run = refs[ready[0]]
            try:
                payload = ray.get(ready[0])
            except Exception as exc:  # a worker crash or a lost node
                payload = {"key": run.key, "error": f"ray task failed: {type(exc).__name__}"}
            finish(run, payload)
    except BaseException:
        for ref in pending:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # pragma: no cover - already finished
                pass
        raise
    finally:
        if started:
            ray.shutdown()


# ---------------------------------------------------------------------------------------------
# reading a sweep back


def load_sweep(out: str | os.PathLike) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(sweep.json, runs)``; each run: its sweep.json entry plus ``path``, ``complete`` and,
    when complete, ``manifest``, ``history`` and ``info`` (run.json)."""
    out = Path(out)
    f = out / SWEEP_FILE
    if not out.exists():
        raise PreimageError(f"no such folder: {out}")
    if not out.is_dir():
        raise PreimageError(f"{out} is not a folder; give the folder `preimage sweep` wrote")
    if not f.is_file():
        raise PreimageError(f"{out} is not a sweep folder (no {SWEEP_FILE}); run `preimage sweep` first")
    try:
        meta = json.loads(f.read_text())
    except (OSError, ValueError) as exc:
        raise PreimageError(f"{f} is damaged ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                            "run the sweep again to rewrite it") from None
    entries = meta.get("runs") if isinstance(meta, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("dir"), str) for e in entries):
        raise PreimageError(f"{f} is damaged (no list of runs); run the sweep again to rewrite it")
    runs = []
    for entry in entries:
        path = Path(entry["dir"])
        path = path if path.is_absolute() else out / path
        problem = verify_run(path)
        run = dict(entry, path=path, complete=problem is None, problem=problem)
        if run["complete"]:
            run["info"] = json.loads((path / "run.json").read_text())
            run["manifest"] = json.loads((path / "manifest.json").read_text())
            history = json.loads((path / "history.json").read_text()).get("history", [])
            run["history"] = history if isinstance(history, list) else []
        runs.append(run)
    return meta, runs


def iter_values(values: Iterable[Any]) -> list[str]:
    return [str(_label(v)) for v in values]
