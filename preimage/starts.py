"""A learned colour start for deep pre-images: the photo's coarse colours predicted from its features.

At stride 32 the features of a photo leave its colours loose: many images match them about equally
well, and the optimizer keeps the colours it starts from (docs/deep_layers.md, "Where the colour
goes"). A :class:`ColourStart` gives it better ones to start from: a ridge regression, fitted on
natural photos, from the feature vector at each position of a layer to the mean colours of the
``cells x cells`` image cells under that position:

    y(p) = W ((f(p) − μ) / σ) + ȳ        (one map shared by every position p)

so it works at any input size. The fit uses square crops of each photo (the full centre crop, then
random ones of 50–100 % of the short side, every other one mirrored), a share of them turned grey
so that grey photos are predicted grey.

A linear map cannot switch colour off, so it also colours grey textures a little. A second ridge
regression, from the whole map's pooled features (each channel's mean and maximum over positions)
to the log colourfulness of the crop (the RMS distance of its cells from their grey), predicts how
colourful the photo is; where the map's colours are more colourful than that, they are moved
towards their grey until they are not; never made more colourful (``chroma=True``; the shipped maps
have no head: it helped grey photos and cost colourful ones, docs/deep_layers.md).

The package ships the maps of the embedded ``efficientnet_lite0`` at ``blocks.5``, ``blocks.6`` and
``conv_head`` (``preimage/data/colour_starts.pt``), fitted on the photos of Debian's wallpaper
packages and the three that ship with scikit-learn and matplotlib, never on the bundled
``sample:`` photos they are measured on (``benchmarks/colour_start.py``). :func:`fit_colour_start`
fits one for any model and layer from any photos; :func:`save_starts` writes fits to a file that
``invert(..., init="FILE.pt")`` (``--init FILE.pt``) starts from:

    >>> fit = fit_colour_start(model, "layer4", photos)
    >>> save_starts([fit], "resnet_starts.pt")
    >>> invert(model, "photo.jpg", layers=["layer4"], init="resnet_starts.pt")
"""
from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .errors import PreimageError

__all__ = ["ColourStart", "fit_colour_start", "fit_colour_starts", "save_starts", "load_starts", "shipped_start", "natural_photos",
           "is_map_file", "SHIPPED", "WALLPAPERS", "CHROMA_EPS"]

#: the colourfulness head's offset: it regresses log(chroma + CHROMA_EPS), so that grey (0) is finite
CHROMA_EPS = 0.01

#: the maps that ship with the package
SHIPPED = Path(__file__).resolve().parent / "data" / "colour_starts.pt"

#: photos (not drawings) in Debian's wallpaper packages: path patterns under /usr/share, by package
WALLPAPERS: dict[str, tuple[str, ...]] = {
    "mate-backgrounds": ("backgrounds/mate/nature/*.jpg",),
    "lomiri-wallpapers-16.04": tuple(f"backgrounds/{n}_by_*.jpg" for n in (
        "Bridge", "Dragonfly", "Picture_0B", "Picture_1A", "Wine", "aitzgorri", "analogpattern", "free",
        "friends", "life", "picosdeeuropa", "seeding", "sunset")),
    "lomiri-wallpapers-20.04": ("backgrounds/Infinite-Sea_by_*.jpg", "backgrounds/Kleiber_by_*.jpg"),
    "plasma-workspace-wallpapers": tuple(f"wallpapers/{n}/contents/images/*" for n in (
        "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey", "Kite",
        "Path", "summer_1am", "OneStandsOut")),
}


@dataclass
class ColourStart:
    """A fitted map from ``layer``'s features of ``model`` to coarse colours (see the module docstring)."""

    model: str
    layer: str
    mean: torch.Tensor      # C: feature means over the fitting rows
    std: torch.Tensor       # C: ... and standard deviations
    weight: torch.Tensor    # C x (3 cells²)
    bias: torch.Tensor      # 3 cells²: the mean colours of the fitting rows
    cells: int = 4
    lam: float = 0.3
    photos: list[str] = field(default_factory=list)
    crops: int = 24
    grey: float = 0.3
    # the colourfulness head (None: no head): pooled features (2C) -> log(chroma + CHROMA_EPS)
    chroma_mean: torch.Tensor | None = None
    chroma_std: torch.Tensor | None = None
    chroma_weight: torch.Tensor | None = None   # 2C
    chroma_bias: float = 0.0

    def coarse(self, features: torch.Tensor) -> torch.Tensor:
        """The predicted colours on the cell grid, ``B x 3 x (h cells) x (w cells)`` in [0, 1], for
        features ``B x C x h x w`` of ``layer``."""
        n, c, h, w = features.shape
        if c != self.mean.numel():
            raise PreimageError(f"the colour start of {self.model}:{self.layer} reads {self.mean.numel()} channels, "
                                f"not {c}")
        k = self.cells
        rows = features.permute(0, 2, 3, 1).reshape(-1, c).double().cpu()
        y = ((rows - self.mean) / self.std) @ self.weight + self.bias
        y = y.reshape(n, h, w, 3, k, k).permute(0, 3, 1, 4, 2, 5).reshape(n, 3, h * k, w * k).float().clamp(0, 1)
        if self.chroma_weight is not None:
            y = self.desaturate(y, self.chroma(features))
        return y.to(features.device)

    def chroma(self, features: torch.Tensor) -> torch.Tensor:
        """The predicted colourfulness of the photo behind each of ``features`` (``B``; the RMS
        distance of its cells' colours from their grey)."""
        if self.chroma_weight is None:
            raise PreimageError(f"the colour start of {self.model}:{self.layer} has no colourfulness head")
        z = (_pooled(features) - self.chroma_mean) / self.chroma_std
        return ((z @ self.chroma_weight + self.chroma_bias).exp() - CHROMA_EPS).clamp(min=0).float()

    @staticmethod
    def desaturate(colours: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
        """``colours`` (``B x 3 x H x W``) moved towards their grey until each image's colourfulness
        is at most ``chroma`` (``B``)."""
        grey = colours.mean(1, keepdim=True)
        scale = (chroma / _chroma(colours).clamp(min=1e-6)).clamp(max=1.0)
        return grey + scale[:, None, None, None] * (colours - grey)

    def predict(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The start image (``B x 3 x size``, in [0, 1]): :meth:`coarse` upsampled bilinearly."""
        return F.interpolate(self.coarse(features), size=size, mode="bilinear", align_corners=False)

    def state(self) -> dict:
        return asdict(self)


def natural_photos(root: str | os.PathLike = "/usr/share") -> list[str]:
    """The photos the shipped maps are fitted on: those of :data:`WALLPAPERS` that are installed
    (the largest size of each), then scikit-learn's two and matplotlib's portrait."""
    from PIL import Image

    out: list[str] = []
    for patterns in WALLPAPERS.values():
        for pattern in patterns:
            found = sorted(glob.glob(os.path.join(str(root), pattern)))
            if "/contents/images/" in pattern and found:  # one picture in several sizes: the largest
                found = [max(found, key=lambda p: Image.open(p).size[0])]
            out += found
    import matplotlib
    import sklearn

    out += [os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images", f) for f in ("china.jpg", "flower.jpg")]
    out.append(os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", "grace_hopper.jpg"))
    return out


def _crops(source: str, n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """The full square centre crop, then ``n - 1`` random square crops of 50–100 % of the short side,
    every other one mirrored; all area-resized to ``size``."""
    from .images import load_image, to_tensor

    img = to_tensor(load_image(source))  # 1 x 3 x H x W
    h, w = img.shape[-2:]
    out = []
    for i in range(n):
        side = min(h, w) if i == 0 else int(min(h, w) * (0.5 + 0.5 * torch.rand(1, generator=gen).item()))
        y = (h - side) // 2 if i == 0 else int(torch.randint(0, h - side + 1, (1,), generator=gen))
        x = (w - side) // 2 if i == 0 else int(torch.randint(0, w - side + 1, (1,), generator=gen))
        c = img[..., y:y + side, x:x + side]
        out.append(F.interpolate(c.flip(-1) if i % 2 else c, size=(size, size), mode="area"))
    return torch.cat(out)


def _rows(features: torch.Tensor, images: torch.Tensor, cells: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One row per feature position (C values) and, as its target, the colours of the cells under it."""
    n, c, h, w = features.shape
    x = features.permute(0, 2, 3, 1).reshape(-1, c)
    y = F.interpolate(images, size=(h * cells, w * cells), mode="area")
    y = y.reshape(n, 3, h, cells, w, cells).permute(0, 2, 4, 1, 3, 5).reshape(n * h * w, 3 * cells * cells)
    return x.double().cpu(), y.double().cpu()


def _chroma(images: torch.Tensor) -> torch.Tensor:
    """Each image's colourfulness: the RMS distance of its pixels from their grey (``B``)."""
    return (images - images.mean(1, keepdim=True)).pow(2).mean((1, 2, 3)).sqrt()


def _pooled(features: torch.Tensor) -> torch.Tensor:
    """Each map's channel means and maxima over positions (``B x 2C``, double, on the CPU)."""
    return torch.cat([features.mean((2, 3)), features.amax((2, 3))], 1).double().cpu()


def _ridge(x: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """``argmin_W ||x W − y||² + lam · len(x) · ||W||²``."""
    a = x.T @ x + lam * len(x) * torch.eye(x.shape[1], dtype=x.dtype)
    return torch.linalg.solve(a, x.T @ y)


def fit_colour_start(model, layer: str, photos: Sequence[str], *, crops: int = 24, grey: float = 0.3,
                     lam: float = 0.3, cells: int = 4, chroma: bool = False, chroma_lam: float = 1.0, seed: int = 0,
                     batch: int = 8) -> ColourStart:
    """Fit the ridge map of ``layer`` of ``model`` on ``crops`` square crops of each of ``photos``
    (a share ``grey`` of them made grey), with ridge weight ``lam`` (per row, on standardized
    features), and with ``chroma`` its colourfulness head (ridge weight ``chroma_lam``, per crop).
    Deterministic for a given ``seed``."""
    return fit_colour_starts(model, [layer], photos, lams=(lam,), crops=crops, grey=grey, cells=cells, chroma=chroma,
                             chroma_lam=chroma_lam, seed=seed, batch=batch)[0]


def fit_colour_starts(model, layers: Sequence[str], photos: Sequence[str], *, lams: Sequence[float] = (0.3,),
                      crops: int = 24, grey: float = 0.3, cells: int = 4, chroma: bool = False,
                      chroma_lam: float = 1.0, seed: int = 0, batch: int = 8) -> list[ColourStart]:
    """:func:`fit_colour_start` for several layers and ridge weights from one pass over the crops: one
    map per layer and weight, layer-major. The same crops for every layer, so each map equals the one
    :func:`fit_colour_start` fits alone."""
    from .layers import FeatureExtractor, resolve_layer

    if not photos:
        raise PreimageError("fitting a colour start needs at least one photo")
    if model.channels != 3:
        raise PreimageError(f"a colour start needs a colour model; {model.name} reads {model.channels} channel(s)")
    paths = list(dict.fromkeys(resolve_layer(model, n) for n in layers))  # maps are found by module path
    ex = FeatureExtractor(model, paths)
    gen = torch.Generator().manual_seed(seed)
    rows: dict[str, tuple[list, list]] = {p: ([], []) for p in paths}
    pooled: dict[str, list] = {p: [] for p in paths}
    colourful: dict[str, list] = {p: [] for p in paths}  # each crop's colourfulness on the layer's cell grid
    with torch.no_grad():
        for src in photos:
            imgs = _crops(src, crops, model.input_size, gen)
            g = torch.rand(len(imgs), generator=gen) < grey
            imgs[g] = imgs[g].mean(1, keepdim=True).expand(-1, 3, -1, -1)
            for i in range(0, len(imgs), batch):
                part = imgs[i:i + batch].to(model.device)
                feats = ex(model.normalize(part))
                for p in paths:
                    if feats[p].dim() != 4:
                        raise PreimageError(f"a colour start needs a spatial layer (C x H x W); {p} gives "
                                            f"{tuple(feats[p].shape[1:])}")
                    x, y = _rows(feats[p], part, cells)
                    rows[p][0].append(x)
                    rows[p][1].append(y)
                    pooled[p].append(_pooled(feats[p]))
                    h, w = feats[p].shape[-2:]
                    colourful[p].append(_chroma(F.interpolate(part, size=(h * cells, w * cells), mode="area")).double().cpu())
    out = []
    for p in paths:
        x, y = torch.cat(rows[p][0]), torch.cat(rows[p][1])
        mean, std = x.mean(0), x.std(0) + 1e-6
        x = (x - mean) / std
        bias = y.mean(0)
        head: dict = {}
        if chroma:
            z, target = torch.cat(pooled[p]), torch.log(torch.cat(colourful[p]) + CHROMA_EPS)[:, None]
            zm, zs = z.mean(0), z.std(0) + 1e-6
            head = {"chroma_mean": zm, "chroma_std": zs, "chroma_bias": target.mean().item(),
                    "chroma_weight": _ridge((z - zm) / zs, target - target.mean(), chroma_lam)[:, 0]}
        out += [ColourStart(model=model.name, layer=p, mean=mean, std=std, weight=_ridge(x, y - bias, lam), bias=bias,
                            cells=cells, lam=lam, photos=[_short(s) for s in photos], crops=crops, grey=grey, **head)
                for lam in lams]
    return out


def _short(path: str) -> str:
    """A photo's name without the machine's folders above the package's."""
    p = str(path)
    for marker in ("/usr/share/", "site-packages/"):
        if marker in p:
            return p.split(marker, 1)[1]
    return p


def save_starts(starts: Sequence[ColourStart], path: str | os.PathLike) -> Path:
    """Write fitted maps to one file (atomically)."""
    import io

    from .io import atomic_write

    buf = io.BytesIO()
    torch.save([s.state() for s in starts], buf)
    return atomic_write(Path(path), buf.getvalue())


def is_map_file(init: str | os.PathLike) -> bool:
    """Whether an inversion's ``init`` names a file of colour maps (written by :func:`save_starts`)."""
    return str(init).endswith(".pt")


def load_starts(path: str | os.PathLike) -> list[ColourStart]:
    import pickle

    try:
        states = torch.load(Path(path), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        raise PreimageError(f"cannot read colour starts from {path}: {str(e).splitlines()[0]}") from None
    return [ColourStart(**s) for s in states]


_SHIPPED: list[ColourStart] | None = None


def shipped_start(model: str, layer: str) -> ColourStart | None:
    """The shipped map of ``model`` at ``layer`` (the resolved module path), or None."""
    global _SHIPPED
    if _SHIPPED is None:
        _SHIPPED = load_starts(SHIPPED) if SHIPPED.exists() else []
    return next((s for s in _SHIPPED if s.model == model and s.layer == layer), None)
