"""Class lookup by index or by (fuzzy) name: ``76``, ``"tarantula"``, ``"Egyptian cat"``, ``"espresso"``."""
from __future__ import annotations

import difflib
from collections.abc import Sequence

from .errors import PreimageError

__all__ = ["resolve_class"]


def resolve_class(query: str | int, classes: Sequence[str] | None) -> int:
    """Return the class index for an index or a name.

    Names match case-insensitively, exactly first, then as a unique substring, then by closeness
    (difflib); an ambiguous or unknown name raises PreimageError with suggestions.
    """
    if classes is None:
        raise PreimageError("this model has no class names; give a class index")
    n = len(classes)
    text = str(query).strip()
    if text.lstrip("-").isdigit():
        idx = int(text)
        if not 0 <= idx < n:
            raise PreimageError(f"class index {idx} is out of range (0..{n - 1})")
        return idx
    lowered = [c.lower() for c in classes]
    q = text.lower()
    if q in lowered:
        return lowered.index(q)
    subs = [i for i, c in enumerate(lowered) if q in c]
    if len(subs) == 1:
        return subs[0]
    if len(subs) > 1:
        names = ", ".join(f"{classes[i]!r} ({i})" for i in subs[:5])
        raise PreimageError(f"class {text!r} is ambiguous: {names}" + (" ..." if len(subs) > 5 else ""))
    close = difflib.get_close_matches(q, lowered, n=3, cutoff=0.6)
    hint = " (did you mean " + ", ".join(f"{classes[lowered.index(c)]!r}" for c in close) + "?)" if close else ""
    raise PreimageError(f"unknown class {text!r}{hint}")
