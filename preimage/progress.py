"""Progress on stderr: a tqdm bar on a terminal, plain lines in a log.

A bar redrawn at every step is right on a terminal and wrong in a log file or a job scheduler's
output (a 9-minute run wrote 400 KB of carriage returns). :func:`progress_bar` returns a tqdm bar
when stderr is a terminal and otherwise a :class:`PlainProgress` with the same small interface
(``update``, ``set_postfix``, ``set_postfix_str``, ``close``) that prints one line at every tenth
of the work (and at most one a second), e.g. ``invert efficientnet_lite0:blocks.3: 60/600 steps
(10%) 12.3 s  rec[blocks.3]=0.41 tv=0.02``. ``PREIMAGE_PROGRESS=bar`` or ``=plain`` overrides the
choice. Every loop with a bar (optimization, sweeps, training) uses this one function.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

__all__ = ["progress_bar", "PlainProgress"]

ENV = "PREIMAGE_PROGRESS"


class PlainProgress:
    """tqdm's interface, printing a plain line every ``every`` fraction of ``total`` (and the last)."""

    def __init__(self, total: int | None, desc: str = "", unit: str = "it", *, every: float = 0.1,
                 min_seconds: float = 1.0, file: TextIO | None = None):
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0
        self.file = file if file is not None else sys.stderr
        self._stride = max(1, int((total or 0) * every)) if total else 1
        self._next = self._stride
        self._min_seconds = min_seconds
        self._start = self._last = time.perf_counter()
        self._postfix = ""
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        final = self.total is not None and self.n >= self.total
        if final or (self.n >= self._next and now - self._last >= self._min_seconds):
            self._print(now)
            while self._next <= self.n:
                self._next += self._stride

    def set_postfix(self, values: dict[str, Any] | None = None, refresh: bool = True, **kw: Any) -> None:
        items = {**(values or {}), **kw}
        self._postfix = "  ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self._postfix = text

    def _print(self, now: float) -> None:
        if self._closed:
            return
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        head = f"{self.desc}: " if self.desc else ""
        tail = f"  {self._postfix}" if self._postfix else ""
        print(f"{head}{done} {self.unit}s{pct} {now - self._start:.1f} s{tail}", file=self.file, flush=True)
        self._last = now

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def progress_bar(total: int | None, desc: str = "", unit: str = "it", **tqdm_kwargs: Any):
    """A tqdm bar on a terminal, a :class:`PlainProgress` otherwise (see the module docstring)."""
    mode = os.environ.get(ENV, "").strip().lower()
    if mode == "plain" or (mode != "bar" and not _is_terminal(sys.stderr)):
        return PlainProgress(total, desc, unit)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, **tqdm_kwargs)
