"""Presets and settings: a named dataclass config plus the user's overrides."""
from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, TypeVar

from .errors import PreimageError, did_you_mean

__all__ = ["from_preset", "check_settings", "check_keywords", "with_settings"]

C = TypeVar("C")


def from_preset(presets: Mapping[str, C], preset: str, overrides: Mapping[str, Any], *, kind: str,
                tuple_fields: Collection[str] = (), preset_word: str = "preset") -> C:
    """A copy of ``presets[preset]`` with ``overrides`` applied (None values are ignored).

    An unknown preset or field is a PreimageError with suggestions (``kind`` names the entry point in
    the message). Fields in ``tuple_fields`` are stored as tuples."""
    if preset not in presets:
        raise PreimageError(f"unknown {preset_word} {preset!r}" + did_you_mean(preset, presets)
                            + f"; presets: {', '.join(presets)}")
    cfg = dataclasses.replace(presets[preset])  # type: ignore[type-var]
    check_settings(cfg, overrides, kind=kind)
    for k, v in overrides.items():
        if v is not None:
            setattr(cfg, k, tuple(v) if k in tuple_fields else v)
    return cfg


def check_settings(config: Any, overrides: Iterable[str], *, kind: str) -> None:
    """Raise a PreimageError for the first name in ``overrides`` that is not a field of the dataclass
    ``config`` (a class or an instance): ``unknown setting 'stepz' for invert (did you mean 'steps'?)``."""
    fields = [f.name for f in dataclasses.fields(config)]
    for k in overrides:
        if k not in fields:
            raise PreimageError(f"unknown setting {k!r} for {kind}" + did_you_mean(k, fields))


def check_keywords(func: Callable[..., Any], kwargs: Iterable[str], *, kind: str) -> None:
    """Raise a PreimageError for the first name in ``kwargs`` that ``func`` takes no keyword of:
    ``unknown setting 'epoch' for train_classifier (did you mean 'epochs'?)``."""
    params = inspect.signature(func).parameters
    names = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for k in kwargs:
        if k not in names:
            raise PreimageError(f"unknown setting {k!r} for {kind}" + did_you_mean(k, names))


def with_settings(config: C, overrides: Mapping[str, Any], *, kind: str) -> C:
    """A copy of the dataclass ``config`` with ``overrides`` applied (None values are ignored); an
    unknown field is a PreimageError (:func:`check_settings`)."""
    check_settings(config, overrides, kind=kind)
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[type-var]
