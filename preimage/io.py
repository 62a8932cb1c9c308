"""Output files: atomic writes, overwrite protection, JSON manifests.

Nothing is ever half-written: each file goes to a temporary name in its own folder and is renamed
into place. Outputs that already exist are refused unless ``force`` is given, and the check happens
before any work starts (:func:`check_outputs`).
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import PreimageError

__all__ = ["atomic_write", "write_json", "check_outputs", "write_failure", "versions"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file next to ``path``, then rename it into place. The file gets
    the permissions of any newly created file (0666 minus the umask), not mkstemp's private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def _jsonable(value: Any) -> Any:
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):
        try:
            return _jsonable(value.item())
        except (ValueError, RuntimeError):
            pass
    return value


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    text = json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n"
    return atomic_write(path, text.encode())


def check_outputs(paths: Iterable[str | os.PathLike], force: bool = False) -> None:
    """Refuse to start when an output exists (unless ``force``) or its folder cannot be written."""
    for p in paths:
        p = Path(p)
        if p.exists() and not force:
            raise PreimageError(f"{p} exists; use --force to overwrite or choose another --out")
        if p.is_dir():
            raise PreimageError(f"{p} is a directory")
        parent = p.parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise PreimageError(f"cannot write to {p.parent}: {parent} is a file, not a folder")
        if not os.access(parent, os.W_OK):
            raise PreimageError(f"cannot write to {p.parent}")


@contextmanager
def write_failure(path: str | os.PathLike) -> Iterator[None]:
    """A write that fails (a read-only or special file system, a full disk, a name too long) ends in
    one line: ``cannot write PATH: reason``."""
    try:
        yield
    except OSError as exc:
        raise PreimageError(f"cannot write {path}: {exc.strerror or exc}") from None


def versions() -> dict[str, str]:
    import numpy
    import torch
    import torchvision

    from . import __version__

    return {
        "preimage": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
        "numpy": numpy.__version__, "python": platform.python_version(),
    }
