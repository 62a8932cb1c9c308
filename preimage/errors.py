"""User-facing errors.

Every failure a user can cause (a bad path, an unknown model or layer, a setting out of range)
raises :class:`PreimageError` with a message that fits on one line. The CLI prints it and exits
with code 2; library users catch it like any ``ValueError``.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["PreimageError", "WriteError", "Diverged", "Terminated", "PreimageWarning", "ImageConversionWarning", "did_you_mean"]


class PreimageError(ValueError):
    """A problem with the user's input, reported in one line."""

    exit_code = 2


class WriteError(PreimageError, OSError):
    """A result that could not be written (a full disk, a read-only folder, a folder where a file goes):
    ``cannot write PATH: reason``. It is an :class:`OSError` too, with the original ``errno``,
    ``strerror`` and the path as ``filename``."""

    def __init__(self, path: object, exc: OSError) -> None:
        reason = exc.strerror or str(exc)
        super().__init__(f"cannot write {path}: {reason}")
        self.errno, self.strerror, self.filename = exc.errno, reason, str(path)

    def __str__(self) -> str:
        return str(self.args[0])


class Diverged(PreimageError):
    """The optimization produced a non-finite value (raised only when asked to)."""

    exit_code = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a job scheduler), raised where Ctrl-C would be: every path that
    saves partial results on ``KeyboardInterrupt`` saves them on SIGTERM too. The CLI exits 143."""

    exit_code = 143  # 128 + SIGTERM


class PreimageWarning(UserWarning):
    """Something the user should know that does not stop the run (the CLI prints one ``warning:`` line)."""


class ImageConversionWarning(PreimageWarning):
    """An input image was converted in a way that changes it: first frame of an animation, transparency
    flattened onto white."""


def did_you_mean(word: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ``" (did you mean 'a', 'b'?)"`` for the closest choices, or ``""``."""
    choices = list(dict.fromkeys(choices))
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=n, cutoff=0.6)
    if not close:
        # substring matches help with prefixes such as "conv" -> conv1..conv5
        close = [c for c in lowered if word.lower() in c][:n]
    if not close:
        return ""
    return " (did you mean " + ", ".join(repr(lowered[c]) for c in close) + "?)"
