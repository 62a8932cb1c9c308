"""The objective expression language of ``preimage dream --objective``.

A linear combination of units of a network::

    blocks.5:12                      channel 12 of blocks.5 (spatial mean)
    blocks.5:12@3,4                  channel 12 at row 3, column 4 of its map (a neuron)
    blocks.5:12 - 0.5*blocks.5:40    weighted sums and differences; parentheses, unary minus, / NUMBER
    logits:130   logits:tarantula    a class logit, by index or (fuzzy) name ('golden retriever' quoted)

Grammar (whitespace is free)::

    expr   := sign? term (('+' | '-') term)*
    term   := factor (('*' factor) | ('/' NUMBER))*      at most one factor per product is a unit
    factor := NUMBER | unit | '(' expr ')' | '-' factor
    unit   := LAYER ':' (INT | NAME | 'quoted name') ('@' INT ',' INT)?

Everything is linear, so :func:`parse_terms` reduces an expression to ``[(weight, Unit), ...]`` without
a model (syntax errors fail before any model loads, naming the column of the offending character);
:func:`build` checks each unit against a model (known layer, channel in range, neuron inside the map
at the chosen image size: one dry forward) and returns the :class:`~preimage.objectives.Objective`
``Σ w · unit`` (minimized, so each unit is a negated activation).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .errors import PreimageError

if TYPE_CHECKING:
    from .models import Model
    from .objectives import Objective

__all__ = ["Unit", "parse_terms", "build", "describe"]

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<num>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
  | (?P<str>'[^']*'|"[^"]*")
  | (?P<op>[-+*/():@,])
""", re.VERBOSE)


@dataclass(frozen=True)
class Unit:
    """One unit of an expression: ``layer:index`` or ``layer:index@y,x``; ``column`` (1-based) is where it
    starts in the expression, for error messages."""

    layer: str
    index: int | str  # a channel index; for logits also a class name
    at: tuple[int, int] | None = None
    column: int = 1

    def __str__(self) -> str:
        idx = self.index if isinstance(self.index, int) or re.fullmatch(r"\w+", self.index) else f"'{self.index}'"
        return f"{self.layer}:{idx}" + (f"@{self.at[0]},{self.at[1]}" if self.at else "")


def _error(expr: str, pos: int, what: str) -> PreimageError:
    near = f"{expr[pos]!r}" if pos < len(expr) else "the end"
    return PreimageError(f"malformed objective {expr!r}: {what} at column {pos + 1} ({near})")


def _tokens(expr: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise _error(expr, pos, "unexpected character")
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group(), pos))  # type: ignore[arg-type]
        pos = m.end()
    out.append(("end", "", len(expr)))
    return out


Terms = list[tuple[float, Unit]]


class _Parser:
    def __init__(self, expr: str):
        self.expr, self.toks, self.i = expr, _tokens(expr), 0

    def peek(self) -> tuple[str, str, int]:
        return self.toks[self.i]

    def take(self, kind: str, text: str | None = None, what: str = "") -> tuple[str, str, int]:
        tok = self.peek()
        if tok[0] != kind or (text is not None and tok[1] != text):
            raise _error(self.expr, tok[2], f"expected {what or repr(text)}")
        self.i += 1
        return tok

    def is_op(self, *ops: str) -> bool:
        kind, text, _ = self.peek()
        return kind == "op" and text in ops

    # Each production returns (number, None) or (None, terms).
    def expr_(self) -> tuple[float | None, Terms | None]:
        sign = 1.0
        if self.is_op("+", "-"):
            sign = -1.0 if self.take("op")[1] == "-" else 1.0
        value = _scale(self.term(), sign)
        while self.is_op("+", "-"):
            op, pos = self.take("op")[1:]
            rhs = _scale(self.term(), -1.0 if op == "-" else 1.0)
            if (value[0] is None) != (rhs[0] is None):
                raise _error(self.expr, pos, "cannot add a number to a unit (write a weight with '*')")
            value = (value[0] + rhs[0], None) if value[0] is not None else (None, value[1] + rhs[1])  # type: ignore[operator]
        return value

    def term(self) -> tuple[float | None, Terms | None]:
        value = self.factor()
        while self.is_op("*", "/"):
            op, pos = self.take("op")[1:]
            if op == "/":
                num_pos = self.peek()[2]
                d = self.factor()
                if d[0] is None:
                    raise _error(self.expr, num_pos, "can only divide by a number")
                if d[0] == 0:
                    raise _error(self.expr, num_pos, "division by zero")
                value = _scale(value, 1.0 / d[0])
                continue
            rhs = self.factor()
            if value[0] is None and rhs[0] is None:
                raise _error(self.expr, pos, "cannot multiply two units (the objective is linear)")
            value = _scale(rhs, value[0]) if value[0] is not None else _scale(value, rhs[0])  # type: ignore[arg-type]
        return value

    def factor(self) -> tuple[float | None, Terms | None]:
        kind, text, pos = self.peek()
        if kind == "num":
            self.i += 1
            return float(text), None
        if kind == "op" and text == "-":
            self.i += 1
            return _scale(self.factor(), -1.0)
        if kind == "op" and text == "(":
            self.i += 1
            inner = self.expr_()
            self.take("op", ")", "')'")
            return inner
        if kind == "name":
            return None, [(1.0, self.unit())]
        raise _error(self.expr, pos, "expected a unit (LAYER:CHANNEL), a number or '('")

    def unit(self) -> Unit:
        _, layer, pos = self.take("name", what="a layer name")
        self.take("op", ":", "':' and a channel index after the layer name")
        kind, text, ipos = self.peek()
        if kind == "num" and re.fullmatch(r"\d+", text):
            index: int | str = int(text)
        elif kind == "name":
            index = text
        elif kind == "str":
            index = text[1:-1]
            if not index.strip():
                raise _error(self.expr, ipos, "empty class name")
        else:
            raise _error(self.expr, ipos, "expected a channel index (an integer >= 0) or a class name")
        self.i += 1
        at = None
        if self.is_op("@"):
            self.i += 1
            y = self.take("num", what="a row index (an integer >= 0) after '@'")
            self.take("op", ",", "',' between the row and the column of the neuron")
            x = self.take("num", what="a column index (an integer >= 0)")
            for t in (y, x):
                if not re.fullmatch(r"\d+", t[1]):
                    raise _error(self.expr, t[2], "expected an integer position")
            at = (int(y[1]), int(x[1]))
        return Unit(layer, index, at, pos + 1)


def _scale(value: tuple[float | None, Terms | None], k: float) -> tuple[float | None, Terms | None]:
    if value[0] is not None:
        return value[0] * k, None
    return None, [(w * k, u) for w, u in value[1]]  # type: ignore[union-attr]


def parse_terms(expr: str) -> Terms:
    """``"blocks.5:12 - 0.5*blocks.5:40"`` -> ``[(1.0, Unit(blocks.5, 12)), (-0.5, Unit(blocks.5, 40))]``
    (the same unit twice is merged). Raises :class:`PreimageError` naming the column of a syntax error."""
    if not isinstance(expr, str) or not expr.strip():
        raise PreimageError("empty objective expression (e.g. 'blocks.5:12')")
    p = _Parser(expr)
    number, terms = p.expr_()
    end = p.peek()
    if end[0] != "end":
        raise _error(expr, end[2], "expected an operator (+ - * /) or the end")
    if terms is None:
        raise PreimageError(f"objective {expr!r} is a number ({number:g}); name a unit, e.g. 'blocks.5:12'")
    merged: dict[tuple, tuple[float, Unit]] = {}
    for w, u in terms:
        key = (u.layer, u.index, u.at)
        merged[key] = (merged[key][0] + w, merged[key][1]) if key in merged else (w, u)
    out = [(w, u) for w, u in merged.values() if w != 0]
    if not out:
        raise PreimageError(f"objective {expr!r} cancels out (every weight is zero)")
    return out


def describe(terms: Sequence[tuple[float, Unit | str]]) -> str:
    """The canonical text of parsed terms (or of weighted unit texts): ``blocks.5:12 - 0.5*blocks.5:40``."""
    parts = []
    for i, (w, u) in enumerate(terms):
        sign = "-" if w < 0 else "+"
        mag = abs(w)
        body = str(u) if mag == 1 else f"{mag:g}*{u}"
        parts.append((f"-{body}" if sign == "-" else body) if i == 0 else f" {sign} {body}")
    return "".join(parts)


def unit_shapes(model: "Model", layers: list[str], size: int) -> dict[str, tuple[int, ...]]:
    """Each layer's activation shape for one image at ``size`` px (one dry forward, no gradient);
    unknown layers fail with a did-you-mean."""
    import torch

    from .layers import FeatureExtractor, resolve_layer

    for layer in layers:
        resolve_layer(model, layer)
    fx = FeatureExtractor(model, layers)
    with torch.no_grad():
        x = model.normalize(torch.full((1, model.channels, size, size), 0.5, device=model.device))
        feats = fx(x)
    return {k: tuple(v.shape[1:]) for k, v in feats.items()}


def _maps_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) as :func:`preimage.objectives.channel` reads it (tokens: C x 1 x N; vectors: C x 1 x 1)."""
    if len(shape) == 3:
        return shape  # type: ignore[return-value]
    if len(shape) == 2:
        return shape[1], 1, shape[0]
    n = 1
    for d in shape:
        n *= d
    return n, 1, 1


def check(terms: Terms, model: "Model", size: int) -> tuple[Terms, dict[str, tuple[int, int, int]]]:
    """Resolve class names and check every unit against ``model`` at ``size`` px; returns the terms with
    class names replaced by indices and each layer's ``(C, H, W)``."""
    from .layers import LOGITS

    shapes = {k: _maps_shape(v) for k, v in unit_shapes(model, sorted({u.layer for _, u in terms}), size).items()}
    out: Terms = []
    for w, u in terms:
        c, h, wd = shapes[u.layer]
        index = u.index
        if isinstance(index, str):
            if u.layer != LOGITS or model.classes is None:
                raise PreimageError(f"objective unit {u} (column {u.column}): a channel index must be an integer"
                                    + (" (class names are for logits:NAME)" if u.layer != LOGITS else ""))
            index = model.class_index(index)
        if not 0 <= index < c:
            raise PreimageError(f"objective unit {u} (column {u.column}): channel {index} is out of range; "
                                f"{u.layer} has {c} channels (0..{c - 1})")
        if u.at is not None:
            y, x = u.at
            if not (0 <= y < h and 0 <= x < wd):
                raise PreimageError(f"objective unit {u} (column {u.column}): position ({y}, {x}) is outside the "
                                    f"{h} x {wd} map of {u.layer} at {size} px (rows 0..{h - 1}, columns 0..{wd - 1})")
        out.append((w, Unit(u.layer, index, u.at, u.column)))
    return out, shapes


def objective_of(terms: Terms, shapes: dict[str, tuple[int, int, int]]) -> "Objective":
    """``Σ w · unit`` as an :class:`~preimage.objectives.Objective` of checked terms."""
    from .layers import LOGITS
    from .objectives import channel, class_score, neuron

    total = None
    for w, u in terms:
        if u.layer == LOGITS and u.at is None:
            obj = class_score(int(u.index), layer=LOGITS, name=str(u))
        elif u.at is not None:
            obj = neuron(u.layer, int(u.index), at=u.at, grid=shapes[u.layer][1:], name=str(u))
        else:
            obj = channel(u.layer, int(u.index), name=str(u))
        obj = obj if w == 1 else w * obj
        total = obj if total is None else total + obj
    return total  # type: ignore[return-value]


def build(expr: str, model: "Model", *, size: int | None = None) -> "Objective":
    """Parse ``expr``, check it against ``model`` at ``size`` px (default: the model's input size) and
    return the objective to minimize."""
    terms, shapes = check(parse_terms(expr), model, int(size or model.input_size))
    return objective_of(terms, shapes)
