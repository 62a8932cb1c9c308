"""Composable loss terms. The optimizer *minimizes* an :class:`Objective`.

An objective maps a :class:`State` (the current image, the network input and the activations of the
layers it asked for) to one loss per image, shape ``(B,)``, so that images in a batch never interact.
Objectives compose: ``a + b``, ``a - b``, ``3.0 * a``, ``-a``; the result keeps every named term, so
the loop can log each one (``rec``, ``alpha``, ``tv`` ...).

Augmentation ensembling (:func:`preimage.transforms.repeat`): when the network saw ``n`` copies of each
of the ``B`` images (``n·B`` rows, copy-major), a term that reads features returns ``n·B`` values and
:meth:`Objective.terms` averages them back to one per image; per-image targets and classes are
repeated to match.

Terms (``x`` is the image in the space a term is asked to read, see :class:`State`):

- :func:`feature_loss`: ``||Φ(x) - Φ0||² / ||Φ0||²`` (Mahendran & Vedaldi 2015, eq. 2), or unnormalized.
- :func:`gram_loss`: ``Σ (G(Φ(x)) - G0)²`` with ``G = F Fᵀ`` (Gatys et al. 2016).
- :func:`class_score`: ``-S_c(x)``, the negated unnormalized score of class ``c``.
- :func:`channel`: ``-mean_{y,x} Φ_k(x)[y, x]``, the negated spatial mean of channel ``k`` of a layer
  (Olah et al. 2017's channel objective; a token layer ``(B, N, C)`` averages over tokens).
- :func:`neuron`: ``-Φ_k(x)[y, x]``, one channel at one position (the centre by default).
- :func:`direction`: ``-mean_{y,x} <Φ(x)[:, y, x], v> / ||v||``, a direction ``v`` in channel space
  (Olah et al. 2017; the one-hot ``v = e_k`` is :func:`channel` ``k``).
- :func:`diversity`: ``mean_{j≠i} cos(G_i, G_j)`` per image ``i``, the similarity of its Gram matrix
  to the other images' (Olah et al. 2017, "Feature Visualization", diversity); adding it with a
  positive weight pushes the images of a batch towards different facets. The only term whose images
  interact.
- :func:`parse`: the small expression language of the CLI (``"blocks.5:12 - 0.5*blocks.5:40"``),
  see :mod:`preimage.expr`.
- :func:`alpha_norm`: ``Σ |x|^α / (H W B^α)`` (α-norm prior, with optional IJCV 2016 normalization).
- :func:`total_variation`: ``Σ (dx² + dy²)^(β/2) / (H W V^β)`` with forward differences, zero on the border.
- :func:`l2`: ``Σ x²``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

__all__ = [
    "State", "Objective", "feature_loss", "gram_matrix", "gram_loss", "class_score", "channel", "neuron",
    "direction", "diversity", "parse", "alpha_norm", "total_variation", "saturation", "bn_stats", "coarse_colour",
    "agreement", "l2",
]

SPACES = ("input", "pixel", "pixel255")


@dataclass
class State:
    """What an objective sees at one step.

    ``image``: the image in [0, 1] RGB units (not clamped); ``input``: the normalized network input
    (``model.normalize(image)``); ``features``: activations by layer name, computed from the input
    after the random transforms of that step; ``step``: the step number.
    """

    image: torch.Tensor | None
    input: torch.Tensor
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    step: int = 0
    #: computes ``image`` on first use when the engine optimizes in input space (most objectives
    #: never read it, so the loop does not build it every step)
    to_image: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.image is None and self.to_image is None:
            raise ValueError("State needs an image or a way to compute it")

    def __getattribute__(self, name: str):
        if name == "image" and object.__getattribute__(self, "__dict__").get("image") is None:
            self.__dict__["image"] = self.to_image(self.input)  # type: ignore[misc]
        return object.__getattribute__(self, name)

    def space(self, name: str) -> torch.Tensor:
        if name == "input":
            return self.input
        if name == "pixel":
            return self.image
        if name == "pixel255":  # mean-free [0, 255] units, as in the papers' MATLAB code
            return (self.image - self.image.new_tensor(0.5)) * 255.0
        raise ValueError(f"unknown space {name!r}; choose from {SPACES}")


TermFn = Callable[[State], torch.Tensor]


class Objective:
    """A weighted sum of named terms; each term returns one loss per image (shape ``(B,)``)."""

    def __init__(self, fn: TermFn | None = None, name: str = "loss", layers: Sequence[str] = (), *,
                 shows: str | Sequence[str] | None = None):
        """One term ``fn`` (``State -> (B,)`` losses) named ``name`` (its column in the history),
        reading the activations of ``layers`` (names as :func:`preimage.resolve_layer` takes them);
        no ``fn`` makes the empty sum. ``shows``: what the term shows, in the syntax of
        :mod:`preimage.expr` (``blocks.5:3``), one text for every image or one per image; it labels
        the images (:meth:`labels`)."""
        self._terms: list[tuple[float, str, TermFn]] = [] if fn is None else [(1.0, name, fn)]
        self._layers: list[str] = list(layers)
        self._shows: list[str | Sequence[str] | None] = [] if fn is None else [shows]

    # -- algebra -------------------------------------------------------------------------------
    @classmethod
    def _from(cls, terms: list[tuple[float, str, TermFn]], layers: list[str],
              shows: list[str | Sequence[str] | None]) -> "Objective":
        obj = cls()
        obj._terms, obj._layers, obj._shows = terms, list(dict.fromkeys(layers)), shows
        return obj

    def __add__(self, other: "Objective") -> "Objective":
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective._from(self._terms + other._terms, self._layers + other._layers, self._shows + other._shows)

    def __sub__(self, other: "Objective") -> "Objective":
        return self + (-1.0) * other

    def __mul__(self, k: float) -> "Objective":
        if not isinstance(k, (int, float)):
            return NotImplemented
        return Objective._from([(w * float(k), n, f) for w, n, f in self._terms], self._layers, self._shows)

    __rmul__ = __mul__

    def __neg__(self) -> "Objective":
        return self * -1.0

    # -- evaluation ----------------------------------------------------------------------------
    @property
    def layers(self) -> list[str]:
        """The layers this objective reads (the engine extracts exactly these)."""
        return list(self._layers)

    @property
    def names(self) -> list[str]:
        return [n for _, n, _ in self._terms]

    def labels(self, batch: int) -> list[str] | None:
        """What each of ``batch`` images shows, in the syntax of :mod:`preimage.expr`: ``blocks.5:3``,
        ``blocks.5:12 - 0.5*blocks.5:40``. None when a term does not say (a loss term such as
        :func:`total_variation`) or does not give one text per image."""
        from .expr import describe

        per_term = []
        for shows in self._shows:
            texts = [shows] if isinstance(shows, str) else list(shows) if shows is not None else []
            texts = texts * batch if len(texts) == 1 else texts
            if len(texts) != batch:
                return None
            per_term.append(texts)
        if not per_term:
            return None
        return [describe([(w, texts[i]) for (w, _, _), texts in zip(self._terms, per_term)]) for i in range(batch)]

    def weights(self) -> dict[str, float]:
        return {n: w for w, n, _ in self._terms}

    def terms(self, state: State) -> dict[str, torch.Tensor]:
        """Each weighted term, one value per image. Names repeat-safe: ``rec``, ``rec#2``, ..."""
        out: dict[str, torch.Tensor] = {}
        for w, name, fn in self._terms:
            key, k = name, 2
            while key in out:
                key, k = f"{name}#{k}", k + 1
            value = _fold_copies(fn(state), state.input.shape[0])
            out[key] = w * value if w != 1.0 else value
        return out

    def __call__(self, state: State) -> torch.Tensor:
        return torch.stack(list(self.terms(state).values())).sum(0)

    def __repr__(self) -> str:
        return " + ".join(f"{w:g}*{n}" for w, n, _ in self._terms) or "Objective()"


def _per_image(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def _fold_copies(value: torch.Tensor, batch: int) -> torch.Tensor:
    """``n·B`` per-row values (n augmented copies of B images, copy-major) -> the mean per image."""
    if value.dim() == 0 or value.shape[0] == batch or batch == 0 or value.shape[0] % batch:
        return value
    return value.reshape(value.shape[0] // batch, batch, *value.shape[1:]).mean(0)


def _match_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """A per-image tensor (``B`` rows, or 1) repeated copy-major to ``rows = n·B`` rows."""
    if t.shape[0] in (1, rows) or rows % t.shape[0]:
        return t
    return t.repeat(rows // t.shape[0], *([1] * (t.dim() - 1)))


# -- feature terms ---------------------------------------------------------------------------

def feature_loss(layer: str, target: torch.Tensor, *, normalize: bool = True, name: str | None = None) -> Objective:
    """``||Φ_l(x) - Φ0||² / ||Φ0||²`` per image (``normalize=False``: the plain sum of squares).

    ``target`` is the activation of the reference image(s) at ``layer``, computed once; its batch
    dimension must be 1 (shared) or the batch size.
    """
    target = target.detach()
    denom = _per_image(target).pow(2).sum(1).clamp_min(1e-12) if normalize else None

    def fn(s: State) -> torch.Tensor:
        f = s.features[layer]
        diff = _per_image(f - _match_rows(target, f.shape[0])).pow(2).sum(1)
        return diff / _match_rows(denom, f.shape[0]) if denom is not None else diff

    return Objective(fn, name or f"rec[{layer}]", [layer])


def gram_matrix(features: torch.Tensor, normalize: str = "chw") -> torch.Tensor:
    """``G = F Fᵀ`` for ``F`` of shape ``B x C x (HW)``; ``normalize``: ``"chw"`` divides by C·H·W,
    ``"hw"`` by H·W, ``"none"`` not at all."""
    b, c = features.shape[:2]
    f = features.reshape(b, c, -1)
    g = f @ f.transpose(1, 2)
    if normalize == "chw":
        g = g / (c * f.shape[2])
    elif normalize == "hw":
        g = g / f.shape[2]
    elif normalize != "none":
        raise ValueError(f"unknown gram normalization {normalize!r} (chw, hw, none)")
    return g


def gram_loss(layer: str, target_gram: torch.Tensor, *, normalize: str = "chw", name: str | None = None) -> Objective:
    """``Σ (G(Φ_l(x)) - G0)²`` per image, with ``G0`` precomputed by :func:`gram_matrix`."""
    target_gram = target_gram.detach()

    def fn(s: State) -> torch.Tensor:
        g = gram_matrix(s.features[layer], normalize)
        return _per_image(g - _match_rows(target_gram, g.shape[0])).pow(2).sum(1)

    return Objective(fn, name or f"style[{layer}]", [layer])


def class_score(index: int | Sequence[int], *, layer: str = "logits", name: str = "score") -> Objective:
    """``-S_c`` per image: minimizing it raises the unnormalized score of class ``c`` (one class for all
    images, or one per image)."""

    def fn(s: State) -> torch.Tensor:
        logits = s.features[layer].reshape(s.features[layer].shape[0], -1)
        idx = torch.as_tensor(index, device=logits.device).reshape(-1)
        idx = idx.expand(logits.shape[0]) if idx.numel() == 1 else _match_rows(idx, logits.shape[0])
        return -logits.gather(1, idx[:, None]).squeeze(1)

    return Objective(fn, name, [layer], shows=_unit_texts(layer, index))


def _indices(index: int | Sequence[int], rows: int, device: torch.device) -> torch.Tensor:
    """One index for every row: a single index for all images, or one per image (repeated per copy)."""
    idx = torch.as_tensor(index, device=device).reshape(-1)
    return idx.expand(rows) if idx.numel() == 1 else _match_rows(idx, rows)


def _channel_maps(f: torch.Tensor) -> torch.Tensor:
    """Activations as ``(B, C, H, W)``: convolutional maps as they are, token layers ``(B, N, C)`` as
    ``(B, C, 1, N)``, vectors ``(B, C)`` as ``(B, C, 1, 1)``."""
    if f.dim() == 4:
        return f
    if f.dim() == 3:
        return f.transpose(1, 2)[:, :, None, :]
    return f.reshape(f.shape[0], -1, 1, 1)


def channel(layer: str, index: int | Sequence[int], *, name: str = "channel") -> Objective:
    """``-mean_{y,x} Φ_k(x)[y, x]`` per image: minimizing it raises the mean activation of channel ``k``
    (one channel for all images, or one per image, so one batch can visualize many channels)."""

    def fn(s: State) -> torch.Tensor:
        maps = _channel_maps(s.features[layer])
        idx = _indices(index, maps.shape[0], maps.device)
        return -maps.mean((2, 3)).gather(1, idx[:, None]).squeeze(1)

    return Objective(fn, name, [layer], shows=_unit_texts(layer, index))


def _unit_texts(layer: str, index: int | Sequence[int], at: str = "") -> list[str]:
    """``layer:k`` (plus ``at``) for each index."""
    return [f"{layer}:{int(k)}{at}" for k in torch.as_tensor(index).reshape(-1).tolist()]


def neuron(layer: str, index: int | Sequence[int], *, at: tuple[int, int] | None = None,
           grid: tuple[int, int] | None = None, name: str = "neuron") -> Objective:
    """``-Φ_k(x)[y, x]`` per image: one channel at one position ``at = (y, x)`` of the map (default: the
    centre, ``(H // 2, W // 2)``).

    ``grid = (H, W)``: the map size ``at`` refers to. When a step's map is larger or smaller (padding
    or random rescaling of the input), the position keeps its offset from the centre,
    ``y' = H' // 2 + (y - H // 2)`` (clamped to the map)."""

    def fn(s: State) -> torch.Tensor:
        maps = _channel_maps(s.features[layer])
        h, w = maps.shape[2:]
        if at is None:
            y, x = h // 2, w // 2
        elif grid is None or tuple(grid) == (h, w):
            y, x = at
        else:
            y = min(max(h // 2 + at[0] - grid[0] // 2, 0), h - 1)
            x = min(max(w // 2 + at[1] - grid[1] // 2, 0), w - 1)
        idx = _indices(index, maps.shape[0], maps.device)
        return -maps[:, :, y, x].gather(1, idx[:, None]).squeeze(1)

    where = "@centre" if at is None else f"@{at[0]},{at[1]}"
    return Objective(fn, name, [layer], shows=_unit_texts(layer, index, where))


def direction(layer: str, vector: torch.Tensor | Sequence[float], *, cosine: bool = False,
              name: str = "direction") -> Objective:
    """``-mean_{y,x} <Φ(x)[:, y, x], v> / ||v||`` per image: the activation projected on the unit vector
    ``v / ||v||`` of channel space, averaged over positions (Olah et al. 2017: any direction, not only a
    channel's basis vector, can be visualized; ``v = e_k`` gives :func:`channel` ``k``).

    ``cosine=True``: ``-mean_{y,x} cos(Φ(x)[:, y, x], v)`` instead, which rewards the direction of the
    activation and not its size (Lucid's ``direction_cossim``)."""
    v = torch.as_tensor(vector, dtype=torch.float32).detach().reshape(-1)
    norm = float(v.norm())
    if not norm > 0 or norm != norm or norm == float("inf"):
        raise ValueError("a direction needs a finite, non-zero vector")
    unit = v / norm

    def fn(s: State) -> torch.Tensor:
        maps = _channel_maps(s.features[layer])
        if maps.shape[1] != unit.numel():
            raise ValueError(f"direction has {unit.numel()} values but {layer} has {maps.shape[1]} channels")
        u = unit.to(maps)
        proj = torch.einsum("bchw,c->bhw", maps, u)
        if cosine:
            proj = proj / maps.norm(dim=1).clamp_min(1e-8)
        return -proj.mean((1, 2))

    return Objective(fn, name, [layer], shows=f"direction[{layer}]")


def diversity(layer: str, *, name: str = "diversity") -> Objective:
    """``mean_{j≠i} <G_i, G_j> / (||G_i|| ||G_j||)`` per image ``i``, with ``G = F Fᵀ`` the Gram matrix of
    the image's activations at ``layer`` (Olah et al. 2017, "Feature Visualization", section
    "Diversity"). Zero for a batch of one. With augmentation copies (``n·B`` rows, copy-major), each
    copy is compared with the other images' copies of the same draw."""

    def fn(s: State) -> torch.Tensor:
        maps = _channel_maps(s.features[layer])
        rows, batch = maps.shape[0], s.input.shape[0]
        if batch < 2 or rows % batch:
            return maps.new_zeros(rows)
        g = F.normalize(gram_matrix(maps, "none").reshape(rows, -1), dim=1)
        g = g.reshape(rows // batch, batch, -1)
        sim = g @ g.transpose(1, 2)  # n x B x B
        off = sim.sum(2) - sim.diagonal(dim1=1, dim2=2)
        return (off / (batch - 1)).reshape(rows)

    return Objective(fn, name, [layer])


def parse(expr: str, model, *, size: int | None = None) -> Objective:
    """An objective from the CLI's expression language (``"blocks.5:12"``, ``"blocks.5:12@3,4"``,
    ``"blocks.5:12 - 0.5*blocks.5:40"``, ``"logits:130"``), checked against ``model`` at image side
    ``size``; see :func:`preimage.expr.build`."""
    from .expr import build

    return build(expr, model, size=size)


# -- image priors ----------------------------------------------------------------------------

def alpha_norm(alpha: float = 6.0, *, space: str = "input", bound: float | None = None, name: str = "alpha") -> Objective:
    """``Σ |x|^α`` per image; with ``bound=B``, ``Σ_v ||x(v)||^α / (H W B^α)`` (IJCV 2016), where
    ``||x(v)||`` is the norm of the colour vector of pixel v."""

    def fn(s: State) -> torch.Tensor:
        x = s.space(space)
        if bound is None:
            if float(alpha).is_integer() and int(alpha) % 2 == 0:
                half = int(alpha) // 2  # |x|^6 as (x²)³: square and cube are fast paths, pow(6) is not
                return _per_image(x.square() if half == 1 else x.square().pow(half)).sum(1)
            return _per_image(x.abs().pow(alpha)).sum(1)
        h, w = x.shape[-2:]
        norms = x.pow(2).sum(1).clamp_min(1e-12).pow(alpha / 2)
        return _per_image(norms).sum(1) / (h * w * bound ** alpha)

    return Objective(fn, name)


def _diffs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences at full size, zero in the first column / row (padding, not an
    in-place write: cheaper forward and backward)."""
    dx = F.pad(x[..., :, 1:] - x[..., :, :-1], (1, 0, 0, 0))
    dy = F.pad(x[..., :-1, :] - x[..., 1:, :], (0, 0, 1, 0))
    return dx, dy


#: an orthonormal opponent-colour basis: luminance (R+G+B)/√3, red-blue (R−B)/√2, green-magenta
#: (R−2G+B)/√6 (rows); with β = 2 the TV of the three opponent channels equals the TV of R, G, B
OPPONENT = ((3 ** -0.5, 3 ** -0.5, 3 ** -0.5), (2 ** -0.5, 0.0, -(2 ** -0.5)), (6 ** -0.5, -2 * 6 ** -0.5, 6 ** -0.5))


def total_variation(beta: float = 2.0, *, space: str = "input", scale: float | None = None, chroma: float = 1.0,
                    name: str = "tv") -> Objective:
    """``Σ (dx² + dy²)^(β/2)`` per image, with forward differences that are zero on the border
    (the original script's TV^β); with ``scale=V``, divided by ``H W V^β`` (IJCV 2016).

    ``chroma``: on RGB images, the TV of the two colour-opponent channels (:data:`OPPONENT`) weighs
    ``chroma`` times the TV of luminance (1: the plain TV of R, G, B when β = 2). Natural images put
    their fine detail in luminance; a weight above 1 keeps edges and damps colour noise.

    For β < 2 the square root is taken of ``dx² + dy² + 1e-12`` so the gradient stays finite."""
    if chroma < 0:
        raise ValueError("chroma must be >= 0")

    def fn(s: State) -> torch.Tensor:
        x = s.space(space)
        if chroma != 1.0 and x.shape[1] == 3:
            k = chroma ** (1.0 / beta)  # a channel scaled by k weighs k^β in the sum
            basis = x.new_tensor(OPPONENT) * x.new_tensor([1.0, k, k])[:, None]
            x = torch.einsum("oc,bchw->bohw", basis, x)
        dx, dy = _diffs(x)
        sq = dx.pow(2) + dy.pow(2)
        v = sq if beta == 2.0 else (sq + 1e-12).pow(beta / 2)
        total = _per_image(v).sum(1)
        if scale is not None:
            h, w = x.shape[-2:]
            total = total / (h * w * scale ** beta)
        return total

    return Objective(fn, name)


def saturation(name: str = "saturation") -> Objective:
    """``mean_v ||x(v) − g(v)·1||²`` per image on [0, 1] RGB pixels, ``g(v)`` the mean of pixel v's
    three channels: how far the colours are from grey (the energy of the two colour-opponent channels
    of :data:`OPPONENT`). A prior against colour the target does not ask for: deep features leave the
    colour of a pre-image loose, and without it a grey photo's pre-image takes on false colour.
    0 on images with fewer than 3 channels."""

    def fn(s: State) -> torch.Tensor:
        x = s.image
        if x.shape[1] != 3:
            return x.new_zeros(x.shape[0])
        return _per_image((x - x.mean(1, keepdim=True)).pow(2).sum(1)).mean(1)

    return Objective(fn, name)


def bn_stats(stats: Sequence[tuple[str, torch.Tensor, torch.Tensor]], name: str = "bn") -> Objective:
    """The batch-norm statistics prior (Yin et al. 2020, "Dreaming to distill"), per image:

        R_bn(x) = mean_l mean_c [(μ_lc(x) − m_lc)² / v_lc + (σ_lc(x) / √v_lc − 1)²]

    where ``μ_lc(x)``, ``σ_lc(x)`` are the spatial mean and standard deviation of channel c at the
    input of batch-norm layer l, and ``m``, ``v`` that layer's running mean and variance: the statistics
    of the network's own training photos at every depth, which a natural image's activations keep.
    ``stats`` holds ``(layer, m, v)`` with ``layer`` the module whose output the batch norm reads
    (:func:`preimage.layers.batchnorm_inputs`)."""
    stats = [(layer, m.detach().flatten(), v.detach().flatten().clamp_min(1e-5)) for layer, m, v in stats]
    if not stats:
        raise ValueError("bn_stats needs at least one batch-norm layer")

    def fn(s: State) -> torch.Tensor:
        total = None
        for layer, m, v in stats:
            f = s.features[layer].flatten(2)
            mu, sd = f.mean(2), f.std(2, unbiased=False)
            m, v = m.to(f.device), v.to(f.device)
            term = ((mu - m).pow(2) / v + (sd / v.sqrt() - 1).pow(2)).mean(1)
            total = term if total is None else total + term
        return total / len(stats)

    return Objective(fn, name, [layer for layer, _, _ in stats])


def coarse_colour(target: torch.Tensor, name: str = "anchor") -> Objective:
    """``mean ||A(x) − t||²`` per image on [0, 1] pixels, ``A`` the area mean of the image on the grid
    of ``target`` (``B x 3 x h x w``, or 1 x ...): a pull of the image's coarse colours towards
    ``target`` (such as the learned colour start of :mod:`preimage.starts`) that leaves finer detail free."""
    target = target.detach()

    def fn(s: State) -> torch.Tensor:
        x = F.interpolate(s.image, size=tuple(target.shape[-2:]), mode="area")
        return _per_image(x - _match_rows(target, x.shape[0])).pow(2).mean(1)

    return Objective(fn, name)


def agreement(partner: Callable[[torch.Tensor], torch.Tensor], target: torch.Tensor, *, size: int | None = None,
              name: str = "agree") -> Objective:
    """``KL(t || p_partner(x))`` per image: the cross-entropy of another classifier's prediction on the
    image against the class distribution ``target`` (``B x K`` or ``1 x K`` probabilities; for an
    inversion, the inverted network's own prediction for the photo), minus its entropy. ``partner``
    maps [0, 1] images to logits (a :class:`preimage.models.Model`); the image is resized to ``size``
    (bilinear, antialiased) first. A prior that the image mean the same to a second network as to the
    first: pixels tuned to one network's features alone do not."""
    from .metrics import judge_input

    target = target.detach().clamp_min(1e-12)
    target = target / target.sum(1, keepdim=True)
    log_target = target.log()

    def fn(s: State) -> torch.Tensor:
        x = judge_input(s.image, size) if size is not None else s.image
        logp = partner(x).float().log_softmax(-1)
        rows = x.shape[0]
        t, lt = (_match_rows(v, rows).to(logp.device) for v in (target, log_target))
        return (t * (lt - logp)).sum(1)

    return Objective(fn, name)


def l2(*, space: str = "input", name: str = "l2") -> Objective:
    """``Σ x²`` per image."""
    return Objective(lambda s: _per_image(s.space(space)).pow(2).sum(1), name)
