"""Checks that run before any model or data loads, shared by the Python API and the command line.

Everything here is light to import (no torch, numpy or model zoo at module level), so the CLI can
answer a misspelt model name, a number out of range or an unreadable image in a fraction of a
second. The same functions validate the API's keyword arguments and the dataclass configs, so
``invert(..., steps=0)`` and ``preimage invert --steps 0`` are refused with the same words.
"""
from __future__ import annotations

import functools
import math
import re
from typing import Any

from .errors import PreimageError, did_you_mean

__all__ = ["check_number", "check_config", "check_model_name", "DEFAULT_MODEL", "EMBEDDED_MODELS",
           "parse_channels", "check_channels"]

#: the model used when none is named (kept in step with preimage.models.DEFAULT_MODEL; tested)
DEFAULT_MODEL = "efficientnet_lite0"
#: the models whose weights ship with the package (kept in step with efficientnet_lite.VARIANTS; tested)
EMBEDDED_MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
SHALLOW_MODELS = ("hog", "dsift")


def check_number(name: str, value: Any, *, minimum: float | None = None, above: float | None = None,
                 maximum: float | None = None, integer: bool = False) -> Any:
    """Return ``value`` if it is a finite number in range, else raise :class:`PreimageError`.

    ``minimum``: value >= minimum; ``above``: value > above; ``maximum``: value <= maximum;
    ``integer``: a whole number (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise PreimageError(f"{name} must be a number, not {value!r}")
    if integer and not (isinstance(value, int) or float(value).is_integer()):
        raise PreimageError(f"{name} must be a whole number, not {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise PreimageError(f"{name} must be finite, not {value!r}")
    if above is not None and not v > above:
        raise PreimageError(f"{name} must be > {above:g}, not {value!r}")
    if minimum is not None and v < minimum:
        raise PreimageError(f"{name} must be >= {minimum:g}, not {value!r}")
    if maximum is not None and v > maximum:
        raise PreimageError(f"{name} must be <= {maximum:g}, not {value!r}")
    return int(value) if integer else value


def check_config(cfg: Any, *, positive: tuple[str, ...] = (), nonneg: tuple[str, ...] = (),
                 positive_int: tuple[str, ...] = (), nonneg_int: tuple[str, ...] = (),
                 finite: tuple[str, ...] = (), labels: dict[str, str] | None = None) -> None:
    """Range checks on a dataclass config's fields (None values, meaning "off", are skipped);
    ``labels`` gives a field a readable name in the message (``{"lr": "learning rate"}``)."""
    labels = {"lr": "learning rate", **(labels or {})}
    for kind, names in (("positive", positive), ("nonneg", nonneg), ("positive_int", positive_int),
                        ("nonneg_int", nonneg_int), ("finite", finite)):
        for n in names:
            v = getattr(cfg, n)
            if v is None:
                continue
            n = labels.get(n, n)
            if kind == "positive":
                check_number(n, v, above=0)
            elif kind == "nonneg":
                check_number(n, v, minimum=0)
            elif kind == "positive_int":
                check_number(n, v, minimum=1, integer=True)
            elif kind == "nonneg_int":
                check_number(n, v, minimum=0, integer=True)
            else:
                check_number(n, v)


def check_model_name(name: str) -> str:
    """Refuse an unknown model name (with a did-you-mean) before anything is loaded.

    Names the zoo always knows (embedded, shallow with options) pass at once, without torch. Names
    with a scheme (``timm:NAME``, ``onnx:...``, ``gan:...``) or an ONNX path are left to
    :func:`preimage.models.load_model`, except ``timm:NAME``, checked against timm's list (read from
    its sources, :func:`timm_names_unimported`, or from timm itself when they cannot be read). A folder,
    or a file that is not ONNX, is said to be one. A plain name must be one of
    :func:`preimage.models.model_names`, whose torchvision part is read from torchvision's sources
    (:func:`torchvision_names_unimported`; importing torchvision takes seconds), or, when they cannot
    be read, from torchvision itself."""
    if not isinstance(name, str) or not name.strip():
        raise PreimageError("no model name given (`preimage models` lists them)")
    name = name.strip()
    base = name.split(":", 1)[0].lower()
    if name in EMBEDDED_MODELS or base in SHALLOW_MODELS:
        return name
    if base == "timm":
        arch, _ = parse_timm_spec(name.split(":", 1)[1])
        known, old = timm_names_unimported(), timm_deprecated_unimported() or ()
        if known is None:  # sources this reader does not know: ask timm (seconds to import)
            import timm
            import timm.models._registry as registry

            known, old = tuple(timm.list_models()), tuple(getattr(registry, "_deprecated_models", {}))
        if arch not in known and arch.split(".")[0] not in known and arch not in old:  # old: timm maps it
            raise PreimageError(f"unknown timm model {arch!r}" + did_you_mean(arch, known))
        return name
    if name.lower().endswith(".onnx") and not name.lower().startswith(("gan:", "timm:")):
        _check_onnx_path(name)  # before onnx and onnx2torch load (seconds)
    if ":" not in name and not name.isidentifier():  # a path (a zoo name is an identifier): say what it is
        _check_not_path(name)
    if ":" in name or name.lower().endswith(".onnx"):
        return name  # a scheme or an ONNX file: the loader that owns it checks it
    listed = torchvision_names_unimported()
    if listed is not None:  # read from torchvision's sources: no import (seconds) to refuse a misspelt name
        names = [*EMBEDDED_MODELS, *SHALLOW_MODELS, *listed]
    else:
        from .models import model_names

        names = model_names()
    if name not in names:
        _check_not_path(name)  # a folder named like a model (e.g. an --out folder): said as a folder
        raise PreimageError(f"unknown model {name!r}" + did_you_mean(name, names)
                            + "; `preimage models` lists them, timm models are timm:NAME")
    return name


def _check_not_path(name: str) -> None:
    """A folder or a file that is not an ONNX file, given as a model: said as such (not as an unknown
    name, and before torchvision loads)."""
    import os

    path = os.path.expanduser(name)
    if os.path.isdir(path):
        raise PreimageError(f"model {name!r} is a folder, not a model file or name (`preimage models` lists the "
                            "names; a model file is an ONNX file PATH.onnx; a `preimage gan train` run is gan:DIR)")
    if os.path.isfile(path) and not name.lower().endswith(".onnx"):
        raise PreimageError(f"model {name!r} is a file but not an ONNX file (PATH.onnx); `preimage models` "
                            "lists the names")
    if "/" in name or os.sep in name:  # a path to nothing: a misspelt file name (a zoo name has no slash)
        if not os.path.exists(path):
            raise PreimageError(f"no such model file: {name}" + did_you_mean(name, _onnx_files_beside(name))
                                + "; a model file is an ONNX file PATH.onnx")


def _onnx_files_beside(name: str) -> list[str]:
    """The ONNX files in the folder ``name`` points into, spelled as ``name`` spells its folder."""
    import os

    head = os.path.dirname(name)
    folder = os.path.expanduser(head) or "."
    try:
        return [os.path.join(head, f) for f in os.listdir(folder) if f.lower().endswith(".onnx")]
    except OSError:
        return []


#: a registered model builder in torchvision's sources: ``@register_model()`` (or with ``name=``), then
#: any other decorators, then ``def NAME(``
_REGISTERED = re.compile(r"^@register_model\((?:name\s*=\s*)?(?:[\"']([\w.]+)[\"'])?\s*\)\s*\n"
                         r"(?:@.*\n|\s*\n)*def\s+(\w+)\s*\(", re.M)


def _model_sources(package: str) -> list[str] | None:
    """The text of every ``PACKAGE/models/*.py`` of an installed package, read without importing it;
    None when it is not installed or cannot be read."""
    import importlib.util
    from pathlib import Path

    try:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            return None
        folder = Path(next(iter(spec.submodule_search_locations))) / "models"
        return [f.read_text(encoding="utf-8", errors="replace") for f in sorted(folder.glob("*.py"))]
    except (OSError, ValueError, ImportError, StopIteration):
        return None


@functools.lru_cache(maxsize=1)
def torchvision_names_unimported() -> tuple[str, ...] | None:
    """The names ``torchvision.models.list_models(module=torchvision.models)`` gives (the classification
    models: builders registered in a module directly under ``torchvision/models``), read from
    torchvision's source files without importing it (which takes seconds). None when the sources
    cannot be read or look unlike what this reader expects (the caller then imports torchvision)."""
    texts = _model_sources("torchvision")
    if texts is None:
        return None
    names = {given or fn for text in texts for given, fn in _REGISTERED.findall(text)}
    if len(names) < 20 or "resnet50" not in names:  # not the layout this reader knows
        return None
    return tuple(sorted(names))


_TIMM_REGISTERED = re.compile(r"^@register_model\s*\n(?:@.*\n|\s*\n)*def\s+(\w+)\s*\(", re.M)
_TIMM_DEPRECATIONS = re.compile(r"^register_model_deprecations\(__name__,\s*\{(.*?)\}\)", re.M | re.S)
_TIMM_OLD_NAME = re.compile(r"[\"']([\w.]+)[\"']\s*:")


@functools.lru_cache(maxsize=1)
def _timm_sources() -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """(architectures, deprecated names) read from ``timm/models/*.py``; None when unreadable."""
    texts = _model_sources("timm")
    if texts is None:
        return None
    names = {fn for text in texts for fn in _TIMM_REGISTERED.findall(text)}
    old = {n for text in texts for block in _TIMM_DEPRECATIONS.findall(text) for n in _TIMM_OLD_NAME.findall(block)}
    if len(names) < 100 or "resnet50" not in names:  # not the layout this reader knows
        return None
    return tuple(sorted(names)), tuple(sorted(old))


def timm_names_unimported() -> tuple[str, ...] | None:
    """The architectures ``timm.list_models()`` gives (the functions decorated ``@register_model`` in
    ``timm/models/*.py``), read from timm's sources without importing it (which takes seconds). None
    when timm is not installed, or its sources cannot be read or look unlike what this reader expects."""
    found = _timm_sources()
    return None if found is None else found[0]


def timm_deprecated_unimported() -> tuple[str, ...] | None:
    """The old names timm still accepts and maps to current ones (``register_model_deprecations``),
    read from its sources the same way."""
    found = _timm_sources()
    return None if found is None else found[1]


def parse_timm_spec(spec: str) -> tuple[str, dict[str, object]]:
    """``"vit_tiny_patch16_224,img_size=28,depth=4"`` -> ``("vit_tiny_patch16_224", {"img_size": 28,
    "depth": 4})``: keyword arguments for ``timm.create_model`` (ints, floats, true/false, or text)."""
    arch, *options = [part.strip() for part in spec.split(",")]
    kwargs: dict[str, object] = {}
    for opt in options:
        key, sep, text = opt.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise PreimageError(f"timm option {opt!r} in {spec!r} is not KEY=VALUE")
        value: object = text.strip()
        lowered = text.strip().lower()
        if lowered in ("true", "false"):
            value = lowered == "true"
        else:
            for kind in (int, float):
                try:
                    value = kind(text)
                    break
                except ValueError:
                    pass
        kwargs[key] = value
    return arch, kwargs


def _check_onnx_path(name: str) -> None:
    import os

    path = os.path.expanduser(name)
    if not os.path.exists(path):
        raise PreimageError(f"no such ONNX file: {name}")
    if os.path.isdir(path):
        raise PreimageError(f"{name} is a directory, not an ONNX file")


def parse_channels(spec: str) -> list[int]:
    """``"0:32"`` (a half-open range: 0..31), ``"3,7,9"`` or a mix (``"0:4,10"``) -> channel indices
    in the order given, without repeats. A malformed part raises :class:`PreimageError` naming it."""
    if not isinstance(spec, str) or not spec.strip():
        raise PreimageError("no channels given (e.g. 0:32 or 3,7,9)")
    out: list[int] = []
    for part in spec.split(","):
        item = part.strip()
        lo, sep, hi = item.partition(":")
        try:
            numbers = [int(lo), int(hi)] if sep else [int(item)]
        except ValueError:
            raise PreimageError(f"malformed channel list {spec!r}: {item!r} is not a channel (N) or a range "
                                "(START:STOP); e.g. 0:32 or 3,7,9") from None
        if sep:
            a, b = numbers
            if a < 0 or b <= a:
                raise PreimageError(f"channel range {item!r} in {spec!r} must be START:STOP with "
                                    "0 <= START < STOP (STOP excluded)")
            out.extend(range(a, b))
        elif numbers[0] < 0:
            raise PreimageError(f"channel {item!r} in {spec!r} must be >= 0")
        else:
            out.append(numbers[0])
    return list(dict.fromkeys(out))


def check_channels(channels: list[int], count: int, layer: str) -> None:
    """Every channel must exist in a layer of ``count`` channels."""
    bad = [c for c in channels if c >= count]
    if bad:
        raise PreimageError(f"channel {bad[0]} is out of range: {layer} has {count} channels (0..{count - 1})")
