"""Output files: atomic writes, overwrite protection, JSON manifests.

Nothing is ever half-written: each file goes to a temporary name in its own folder and is renamed
into place, and the files of one result appear together or not at all (:func:`all_or_nothing`).
Outputs that already exist are refused unless ``force`` is given, and the check happens before any
work starts (:func:`check_outputs`).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from .errors import PreimageError, WriteError

__all__ = ["atomic_write", "all_or_nothing", "write_json", "check_outputs", "write_failure", "versions"]

#: inside :func:`all_or_nothing`: the (temporary, final) paths written so far and the folders made
_STAGED: ContextVar[tuple[list[tuple[str, Path]], list[Path]] | None] = ContextVar("preimage_staged", default=None)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file next to ``path``, then rename it into place. The file gets
    the permissions of any newly created file (0666 minus the umask), not mkstemp's private 0600."""
    path = Path(path)
    staged = _STAGED.get()
    if staged is not None:  # folders this block makes are removed again if it fails
        missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
        staged[1].extend(reversed(missing))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise WriteError(path, exc) from exc
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if staged is not None:
            staged[0].append((tmp, path))
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise WriteError(path, exc) from exc
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


@contextmanager
def all_or_nothing() -> Iterator[None]:
    """The files :func:`atomic_write` writes inside this block appear together when it ends, or not at
    all: each goes to a temporary file beside its place and all are renamed into place at the end. A
    failure inside (a failed write, a full disk, Ctrl-C) removes the temporary files and the folders the
    block made, and leaves every file that was there before as it was. Nested blocks join the outer one."""
    if _STAGED.get() is not None:
        yield
        return
    files: list[tuple[str, Path]] = []
    folders: list[Path] = []
    token = _STAGED.set((files, folders))
    try:
        yield
    except BaseException:
        _discard(files, folders)
        raise
    finally:
        _STAGED.reset(token)
    try:  # a folder made meanwhile where a file goes fails before anything is renamed
        in_the_way = next((path for _, path in files if path.is_dir()), None)
        if in_the_way is not None:
            raise WriteError(in_the_way, IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR)))
    except BaseException:
        _discard(files, folders)
        raise
    _commit(files)


def _discard(files: list[tuple[str, Path]], folders: list[Path]) -> None:
    """Remove the staged temporary files and the folders the block made."""
    _remove([tmp for tmp, _ in files])
    for folder in reversed(folders):  # deepest first; a folder someone else filled meanwhile stays
        with contextlib.suppress(OSError):
            folder.rmdir()


def _commit(files: list[tuple[str, Path]]) -> None:
    """Rename every staged file into place. Each file it replaces is kept first under a second name
    (a hard link beside it), so a rename that fails puts back the files already renamed and leaves the
    result as it was. Ctrl-C or SIGTERM while renaming does not stop it halfway (old and new files side
    by side): the renames finish, then the interrupt is raised."""
    backups = [tmp + ".old" for tmp, _ in files]
    interrupt: BaseException | None = None
    try:
        kept = [_keep(path, backup) for (_, path), backup in zip(files, backups)]
    except BaseException:
        _remove([tmp for tmp, _ in files] + backups)
        raise
    i, again = 0, False
    while i < len(files):
        tmp, path = files[i]
        try:
            try:
                os.replace(tmp, path)
            except FileNotFoundError:
                if not again or os.path.exists(tmp):
                    raise
                # the interrupt came just after this file was renamed: it is in place
            i, again = i + 1, False
        except KeyboardInterrupt as exc:
            interrupt, again = exc, True
        except BaseException as exc:
            _roll_back(files[:i], kept[:i], backups[:i])
            _remove([rest for rest, _ in files[i:]] + backups)
            if isinstance(exc, OSError) and not isinstance(exc, WriteError):
                raise WriteError(path, exc) from exc
            raise
    while True:  # the kept files are no longer needed; an interrupt here waits for the clean-up
        try:
            _remove(backups)
            break
        except KeyboardInterrupt as exc:
            interrupt = exc
    if interrupt is not None:
        raise interrupt


def _keep(path: Path, backup: str) -> bool:
    """Link the file ``path`` (if there is one) to ``backup``; False where there is nothing to keep or
    the file system has no hard links (then a failed rename cannot put that file back)."""
    try:
        os.link(path, backup, follow_symlinks=False)
    except OSError:
        return False
    return True


def _roll_back(files: list[tuple[str, Path]], kept: list[bool], backups: list[str]) -> None:
    """Undo the renames of ``files``: the old file back where there was one, the new one removed where
    there was none."""
    for (_, path), was_kept, backup in zip(files, kept, backups):
        with contextlib.suppress(OSError):
            if was_kept:
                os.replace(backup, path)
            elif not os.path.lexists(backup):
                os.unlink(path)


def _remove(names: list[str]) -> None:
    """Unlink each of ``names`` that is there."""
    for name in names:
        with contextlib.suppress(OSError):
            os.unlink(name)


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    text = json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n"
    return atomic_write(path, text.encode())


def check_outputs(paths: Iterable[str | os.PathLike], force: bool = False) -> None:
    """Refuse to start when an output exists (unless ``force``) or its folder cannot be written."""
    for p in paths:
        p = Path(p)
        if p.exists() and not force:
            raise PreimageError(f"{p} exists; use --force (save(..., force=True) in Python) to overwrite "
                                "or choose another --out")
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
    one line: ``cannot write PATH: reason`` (a :class:`~preimage.errors.WriteError`)."""
    try:
        yield
    except WriteError:
        raise
    except OSError as exc:
        raise WriteError(path, exc) from None


def versions() -> dict[str, str]:
    import numpy
    import torch
    import torchvision

    from . import __version__

    return {
        "preimage": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
        "numpy": numpy.__version__, "python": platform.python_version(),
    }
