"""Captioned scenes drawn by a program: the offline data set of ``preimage caption train --data shapes``.

No captioned photographs can be installed on an offline machine, so the built-in data set is
generated. Each **scene** is drawn on a ``size x size`` canvas (default 128) from a seed:

- background: a light grey, level uniform in [200, 245] with a random ±12 tint per channel;
- 1, 2 or 3 **objects** (equally likely), each in its own cell of a 3 x 3 grid (so every object has
  a row ``top/middle/bottom`` and a column ``left/center/right``), jittered by up to 1/12 of the
  canvas inside its cell;
- each object: a **shape** (circle, square, triangle, diamond), a **colour** (red, green, blue,
  yellow, purple, orange; each a fixed RGB with ±20 noise per channel) and a **size** (small:
  radius 8% of the canvas, large: 14%; shapes never overlap);
- captions: every true sentence the templates below can say about the scene is listed, and
  ``captions_per_image`` (default 5) distinct ones are drawn at random. The templates state the
  objects (``a large red circle``), their number (``two shapes``, ``three circles``), where a single
  object is (``on the left``, ``in the top right corner``) and how two objects are placed
  (``a red circle to the left of a blue square``, ``... above ...``), with synonyms (large/big,
  small/little). A caption has at most 15 words. Examples::

      a small blue triangle in the top left corner
      there are two shapes a red circle and a green square
      a big yellow diamond to the left of a small purple circle

Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed gives the same pixels
and the same captions. The splits (:func:`scene_splits`) use disjoint seeds.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["SHAPES", "COLOURS", "SIZES", "Object", "Scene", "make_scene", "render", "scene_captions",
           "all_captions", "scene_splits"]

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
           "yellow": (235, 210, 40), "purple": (140, 60, 180), "orange": (245, 140, 30)}
SIZES = {"small": 0.08, "large": 0.14}
_SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
_ROWS, _COLS = ("top", "middle", "bottom"), ("left", "center", "right")
_NUMBERS = {1: "one", 2: "two", 3: "three"}


@dataclass(frozen=True)
class Object:
    shape: str
    colour: str
    size: str
    row: int   # 0 top .. 2 bottom
    col: int   # 0 left .. 2 right
    x: float   # centre, in canvas fractions
    y: float
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class Scene:
    objects: tuple[Object, ...]
    background: tuple[int, int, int]
    seed: int


def make_scene(seed: int) -> Scene:
    """The scene of one seed (objects, positions, colours; see the module docstring)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 4))
    cells = rng.choice(9, size=n, replace=False)
    objects = []
    for cell in cells:
        row, col = divmod(int(cell), 3)
        colour = str(rng.choice(list(COLOURS)))
        rgb = tuple(int(np.clip(v + rng.integers(-20, 21), 0, 255)) for v in COLOURS[colour])
        objects.append(Object(
            shape=str(rng.choice(SHAPES)), colour=colour, size=str(rng.choice(list(SIZES))), row=row, col=col,
            x=(col + 0.5) / 3 + float(rng.uniform(-1, 1)) / 12, y=(row + 0.5) / 3 + float(rng.uniform(-1, 1)) / 12,
            rgb=rgb))  # type: ignore[arg-type]
    level = int(rng.integers(200, 246))
    background = tuple(int(np.clip(level + rng.integers(-12, 13), 0, 255)) for _ in range(3))
    objects.sort(key=lambda o: (o.row, o.col))
    return Scene(tuple(objects), background, seed)  # type: ignore[arg-type]


def render(scene: Scene, size: int = 128) -> Image.Image:
    """Draw a scene (4x supersampled, then downsized: smooth edges)."""
    s = 4 * size
    img = Image.new("RGB", (s, s), scene.background)
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        cx, cy, r = o.x * s, o.y * s, SIZES[o.size] * s
        if o.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=o.rgb)
        elif o.shape == "square":
            q = r * 0.85
            draw.rectangle([cx - q, cy - q, cx + q, cy + q], fill=o.rgb)
        elif o.shape == "triangle":
            draw.polygon([(cx, cy - r), (cx - r * 0.95, cy + r * 0.75), (cx + r * 0.95, cy + r * 0.75)], fill=o.rgb)
        else:  # diamond
            draw.polygon([(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)], fill=o.rgb)
    return img.resize((size, size), Image.Resampling.LANCZOS)


def _np(o: Object, size_word: str | None = None, article: str = "a") -> str:
    """``a large red circle``, ``an orange square`` (no size word when ``size_word`` is empty)."""
    words = ([size_word] if size_word else []) + [o.colour, o.shape]
    if article == "a" and words[0][0] in "aeiou":
        article = "an"
    return " ".join([article] + words)


def _where(o: Object) -> list[str]:
    row, col = _ROWS[o.row], _COLS[o.col]
    if row == "middle" and col == "center":
        return ["in the middle", "in the center"]
    if row == "middle":
        return [f"on the {col}"]
    if col == "center":
        return [f"at the {row}"]
    return [f"in the {row} {col} corner", f"in the {row} {col}"]


def _relations(a: Object, b: Object) -> list[tuple[Object, str, Object]]:
    rel = []
    if a.col < b.col:
        rel += [(a, "to the left of", b), (b, "to the right of", a)]
    elif a.col > b.col:
        rel += [(b, "to the left of", a), (a, "to the right of", b)]
    if a.row < b.row:
        rel += [(a, "above", b), (b, "below", a)]
    elif a.row > b.row:
        rel += [(b, "above", a), (a, "below", b)]
    return rel


def _plural(shape: str) -> str:
    return shape + "s"


def all_captions(scene: Scene) -> list[str]:
    """Every caption the templates produce for a scene (all of them true of it)."""
    objs = scene.objects
    n = len(objs)
    out: list[str] = []
    sizes = {o: _SIZE_WORDS[o.size] for o in objs}
    if n == 1:
        o = objs[0]
        for sw in sizes[o]:
            out.append(_np(o, sw))
            for w in _where(o):
                out.append(f"{_np(o, sw)} {w}")
        for w in _where(o):
            out.append(f"{_np(o)} {w}")
            out.append(f"there is {_np(o)} {w}")
        out.append(f"there is one {o.colour} {o.shape}")
        out.append(f"one {o.shape} and it is {o.colour}")
    else:
        listing = [_np(o) for o in objs]
        sized = [_np(o, sizes[o][0]) for o in objs]
        and_list = lambda xs: " ".join(xs[:-1]) + " and " + xs[-1] if len(xs) > 1 else xs[0]  # noqa: E731
        out.append(and_list(listing))
        out.append(f"{_NUMBERS[n]} shapes {and_list(listing)}")
        out.append(f"there are {_NUMBERS[n]} shapes {and_list(listing)}")
        if n == 2:
            out.append(and_list(sized))
        shapes = sorted({o.shape for o in objs})
        colours = sorted({o.colour for o in objs})
        if len(shapes) == 1:
            out.append(f"{_NUMBERS[n]} {_plural(shapes[0])}")
            if len(colours) == 1:
                out.append(f"{_NUMBERS[n]} {colours[0]} {_plural(shapes[0])}")
        else:
            parts = []
            for s in shapes:
                k = sum(o.shape == s for o in objs)
                parts.append(f"{_NUMBERS[k]} {_plural(s) if k > 1 else s}")
            out.append(and_list(parts))
        if len(colours) == 1:
            out.append(f"{_NUMBERS[n]} {colours[0]} shapes")
        for i in range(n):
            for j in range(i + 1, n):
                for a, rel, b in _relations(objs[i], objs[j]):
                    out.append(f"{_np(a)} {rel} {_np(b)}")
                    out.append(f"{_np(a, sizes[a][0])} {rel} {_np(b, sizes[b][0])}")
    return list(dict.fromkeys(c for c in out if len(c.split()) <= 15))


def scene_captions(scene: Scene, k: int = 5) -> list[str]:
    """``k`` distinct captions of a scene (fewer if the templates give fewer), drawn from its seed."""
    pool = all_captions(scene)
    rng = np.random.default_rng([scene.seed, 1])
    idx = rng.choice(len(pool), size=min(k, len(pool)), replace=False)
    return [pool[i] for i in sorted(idx)]


def scene_splits(seed: int, counts: dict[str, int]) -> dict[str, list[int]]:
    """Disjoint scene seeds per split: split ``i`` uses ``seed · 10⁷ + i · 10⁶ + 0..count-1``."""
    out = {}
    for i, (name, count) in enumerate(counts.items()):
        if count > 1_000_000:
            raise ValueError("at most a million scenes per split")
        out[name] = [seed * 10_000_000 + i * 1_000_000 + j for j in range(count)]
    return out
