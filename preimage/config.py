"""Presets: a named dataclass config plus the user's overrides."""
from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any, TypeVar

from .errors import PreimageError, did_you_mean

__all__ = ["from_preset"]

C = TypeVar("C")


def from_preset(presets: Mapping[str, C], preset: str, overrides: Mapping[str, Any], *, kind: str,
                tuple_fields: Collection[str] = (), preset_word: str = "preset") -> C:
    """A copy of ``presets[preset]`` with ``overrides`` applied (None values are ignored).

    An unknown preset is a PreimageError with suggestions; an unknown field a TypeError (a bug in the
    caller, not user input). Fields in ``tuple_fields`` are stored as tuples."""
    if preset not in presets:
        raise PreimageError(f"unknown {preset_word} {preset!r}" + did_you_mean(preset, presets)
                            + f"; presets: {', '.join(presets)}")
    cfg = dataclasses.replace(presets[preset])  # type: ignore[type-var]
    fields = {f.name for f in dataclasses.fields(cfg)}  # type: ignore[arg-type]
    for k, v in overrides.items():
        if k not in fields:
            raise TypeError(f"unknown {kind} setting {k!r}")
        if v is not None:
            setattr(cfg, k, tuple(v) if k in tuple_fields else v)
    return cfg
