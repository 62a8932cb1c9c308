"""Captioning data: three sources behind one interface.

A :class:`CaptionData` holds a :class:`~.vocab.Vocab` and splits (``train``, ``val``, ``test``);
each :class:`Split` is ``features`` (one row per image), ``captions`` (one row of
``MAX_TOKENS`` indices per caption) and ``image_idx`` (the image of each caption) — the layout of
the assignment's ``coco2014_captions.h5``. Sources:

- :func:`load_coco_h5` — the assignment's files as distributed: ``coco2014_captions.h5``
  (``train_captions``, ``train_image_idxs``, ``val_captions``, ``val_image_idxs``),
  ``train2014_vgg16_fc7_pca.h5`` and ``val2014_vgg16_fc7_pca.h5`` (``features``, 512 numbers per
  image), ``coco2014_vocab.json`` and, if present, ``train2014_urls.txt`` / ``val2014_urls.txt``.
  COCO has no public test captions here: ``test`` is the ``val`` split.
- :func:`load_coco_json` — COCO-style annotations (``{"images": [{"id", "file_name"}],
  "annotations": [{"image_id", "caption"}]}``) and a folder of images. Features come from a zoo
  model (:mod:`.features`), the PCA is fitted on the training images, and both are cached on disk.
  Images are split by a seeded permutation (10% val, 10% test by default).
- :func:`load_shapes` — the procedural scenes of :mod:`.scenes`, rendered and featurized the same
  way (cached).

Every malformed input (a missing file, a file that is not HDF5 or JSON, a missing key, a wrong
shape, an index out of range, an unreadable image, a caption that is too long) raises
:class:`~preimage.errors.PreimageError` with one line.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import PreimageError
from .features import FeaturePipeline, FeatureSpec, PCA, image_tensor
from .vocab import MAX_TOKENS, Vocab

__all__ = ["Split", "CaptionData", "load_coco_h5", "load_coco_json", "load_shapes", "default_cache_dir",
           "load_source", "SPLITS", "COCO_H5_FILES"]

SPLITS = ("train", "val", "test")
#: bump when the scene generator or the feature code changes what a cached file would hold
CACHE_VERSION = 1
COCO_H5_FILES = {
    "captions": "coco2014_captions.h5",
    "vocab": "coco2014_vocab.json",
    "train_features": ("train2014_vgg16_fc7_pca.h5", "train2014_vgg16_fc7.h5"),
    "val_features": ("val2014_vgg16_fc7_pca.h5", "val2014_vgg16_fc7.h5"),
}


@dataclass
class Split:
    """One split: ``features`` (I x D float), ``captions`` (C x MAX_TOKENS long), ``image_idx`` (C,)."""

    features: torch.Tensor
    captions: torch.Tensor
    image_idx: torch.Tensor
    names: list[str] = field(default_factory=list)  # one per image: file, URL or scene:SEED

    def __post_init__(self) -> None:
        n = self.features.shape[0]
        if self.captions.shape[0] != self.image_idx.shape[0]:
            raise PreimageError(f"{self.captions.shape[0]} captions but {self.image_idx.shape[0]} image indices")
        if self.image_idx.numel() and (int(self.image_idx.min()) < 0 or int(self.image_idx.max()) >= n):
            raise PreimageError(f"a caption points at image {int(self.image_idx.max())}, but there are {n} images")

    @property
    def num_images(self) -> int:
        return int(self.features.shape[0])

    def references(self, vocab: Vocab) -> list[list[str]]:
        """The reference captions (strings) of every image, in image order."""
        refs: list[list[str]] = [[] for _ in range(self.num_images)]
        for cap, i in zip(self.captions.tolist(), self.image_idx.tolist()):
            refs[i].append(vocab.decode(cap))
        return refs

    def subset(self, images: int) -> "Split":
        """The first ``images`` images and their captions."""
        keep = self.image_idx < images
        return Split(self.features[:images], self.captions[keep], self.image_idx[keep], self.names[:images])


@dataclass
class CaptionData:
    """A vocabulary, splits, and (when images can be featurized) the feature pipeline."""

    vocab: Vocab
    splits: dict[str, Split]
    source: dict[str, object]                     # JSON-able description (kind, path, settings)
    pipeline: FeaturePipeline | None = None       # pixels -> features; None for precomputed features
    image_loader: Callable[[str], object] | None = None  # an image name -> Pillow image

    @property
    def feature_dim(self) -> int:
        return int(self.splits["train"].features.shape[1])

    def image(self, name: str):
        """The Pillow image behind a split's image name (scenes are re-rendered from their seed)."""
        if self.image_loader is None:
            raise PreimageError(f"{self.source.get('kind')} data has no images, only features")
        return self.image_loader(name)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/preimage/captioning`` (default ``~/.cache/preimage/captioning``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "preimage" / "captioning"


# -- the assignment's HDF5 files ----------------------------------------------------------------

def _h5_open(path: Path):
    import h5py

    if not path.is_file():
        raise PreimageError(f"no such file: {path}")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise PreimageError(f"{path} is not a readable HDF5 file ({str(exc).splitlines()[0]})") from None


def _h5_array(f, key: str, path: Path, *, ndim: int, integer: bool):
    import numpy as np

    if key not in f:
        raise PreimageError(f"{path} has no dataset {key!r} (has: {', '.join(sorted(f.keys())) or 'nothing'})")
    try:
        a = np.asarray(f[key])
    except (OSError, TypeError, ValueError) as exc:
        raise PreimageError(f"cannot read {key!r} from {path}: {str(exc).splitlines()[0]}") from None
    if a.ndim != ndim:
        raise PreimageError(f"{path}: {key!r} has shape {a.shape}, expected {ndim} dimensions")
    kind = "iu" if integer else "fiu"
    if a.dtype.kind not in kind:
        raise PreimageError(f"{path}: {key!r} holds {a.dtype}, expected {'integers' if integer else 'numbers'}")
    return a


def _first_existing(folder: Path, names: tuple[str, ...]) -> Path:
    for n in names:
        if (folder / n).is_file():
            return folder / n
    raise PreimageError(f"{folder} has no {' or '.join(names)}")


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []


def load_coco_h5(folder: str | os.PathLike, *, max_train: int | None = None) -> CaptionData:
    """The assignment's COCO captioning files in ``folder`` (see the module docstring).

    ``max_train`` keeps the first that many training captions (and only the images they use)."""
    import numpy as np

    d = Path(folder)
    if not d.is_dir():
        raise PreimageError(f"{d} is not a folder (expected the assignment's coco_captioning folder)")
    vocab = Vocab.load(d / COCO_H5_FILES["vocab"])
    cap_path = d / COCO_H5_FILES["captions"]
    with _h5_open(cap_path) as f:
        raw = {k: _h5_array(f, k, cap_path, ndim=2 if k.endswith("captions") else 1, integer=True)
               for k in ("train_captions", "train_image_idxs", "val_captions", "val_image_idxs")}
    splits: dict[str, Split] = {}
    for name in ("train", "val"):
        fpath = _first_existing(d, COCO_H5_FILES[f"{name}_features"])
        with _h5_open(fpath) as f:
            feats = _h5_array(f, "features", fpath, ndim=2, integer=False)
        caps, idx = raw[f"{name}_captions"], raw[f"{name}_image_idxs"]
        if caps.shape[1] != MAX_TOKENS:
            raise PreimageError(f"{cap_path}: {name}_captions has {caps.shape[1]} tokens per caption, expected {MAX_TOKENS}")
        if caps.shape[0] != idx.shape[0]:
            raise PreimageError(f"{cap_path}: {caps.shape[0]} {name} captions but {idx.shape[0]} image indices")
        if caps.size and (caps.min() < 0 or caps.max() >= len(vocab)):
            raise PreimageError(f"{cap_path}: {name}_captions uses word index {int(caps.max())}, "
                                f"but the vocabulary has {len(vocab)} words")
        if idx.size and (idx.min() < 0 or idx.max() >= feats.shape[0]):
            raise PreimageError(f"{cap_path}: {name}_image_idxs points at image {int(idx.max())}, "
                                f"but {fpath.name} has {feats.shape[0]} rows")
        urls = _read_lines(d / f"{name}2014_urls.txt")
        names = urls if len(urls) == feats.shape[0] else [f"{name}:{i}" for i in range(feats.shape[0])]
        if name == "train" and max_train is not None:
            caps, idx = caps[:max_train], idx[:max_train]
            used = np.unique(idx)
            remap = np.full(feats.shape[0], -1, dtype=np.int64)
            remap[used] = np.arange(len(used))
            feats, idx, names = feats[used], remap[idx], [names[i] for i in used]
        splits[name] = Split(torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)),
                             torch.from_numpy(caps.astype(np.int64)), torch.from_numpy(idx.astype(np.int64)), names)
    splits["test"] = splits["val"]
    return CaptionData(vocab, splits, {"kind": "coco-h5", "path": str(d.resolve()), "max_train": max_train,
                                       "features": Path(_first_existing(d, COCO_H5_FILES["train_features"])).name})


# -- cached featurization ------------------------------------------------------------------------

def _cache_key(description: dict[str, object]) -> str:
    text = json.dumps({"version": CACHE_VERSION, **description}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _load_cache(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged cache file is recomputed, never trusted
        return None


def _save_cache(path: Path, data: dict) -> None:
    from ..io import atomic_write

    buf = io.BytesIO()
    torch.save(data, buf)
    try:
        atomic_write(path, buf.getvalue())
    except OSError:  # a read-only cache folder costs time, not correctness
        pass


def _featurize(images: dict[str, list[str]], load: Callable[[str], object], spec: FeatureSpec, *, model,
               description: dict[str, object], cache_dir: Path | None, seed: int,
               progress: Callable[[int], None] | None) -> tuple[dict[str, torch.Tensor], FeaturePipeline]:
    """PCA features of every split's images, from the cache when ``description`` matches."""
    pipeline = FeaturePipeline(spec, model=model)
    key_desc = {**description, "spec": spec.to_dict(), "seed": seed,
                "model_id": None if model is None else getattr(model, "name", "custom")}
    path = None if cache_dir is None else Path(cache_dir) / f"features-{_cache_key(key_desc)}.pt"
    cached = _load_cache(path) if path is not None else None
    if cached is not None and set(cached.get("features", {})) == set(images):
        pca = PCA(cached["pca_mean"].shape[0], cached["pca_components"].shape[1])
        pca.mean.copy_(cached["pca_mean"])
        pca.components.copy_(cached["pca_components"])
        pipeline.pca = pca
        return cached["features"], pipeline
    size = spec.input_size
    pooled = {}
    for split, names in images.items():
        pooled[split] = pipeline.pooled_batches(lambda i, n=names: image_tensor(load(n[i]), size), len(names),
                                                progress=progress)
    pca = pipeline.fit_pca(pooled["train"], seed=seed)
    with torch.no_grad():
        feats = {s: pca(p) for s, p in pooled.items()}
    if path is not None:
        _save_cache(path, {"features": feats, "pca_mean": pca.mean, "pca_components": pca.components,
                           "description": json.dumps(key_desc, sort_keys=True)})
    return feats, pipeline


def _encode_split(vocab: Vocab, captions: list[list[str]], *, truncate: bool, skip_long: bool
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    from .vocab import CaptionTooLong

    rows, idx = [], []
    for i, caps in enumerate(captions):
        for c in caps:
            try:
                rows.append(vocab.encode(c, truncate=truncate))
            except CaptionTooLong:
                if not skip_long:
                    raise
                continue
            idx.append(i)
    return (torch.tensor(rows, dtype=torch.long).view(-1, MAX_TOKENS), torch.tensor(idx, dtype=torch.long))


# -- the procedural scenes -------------------------------------------------------------------------

#: default scene counts per split
SHAPES_COUNTS = {"train": 6000, "val": 500, "test": 1000}


def load_shapes(*, counts: dict[str, int] | None = None, seed: int = 0, spec: FeatureSpec = FeatureSpec(),
                captions_per_image: int = 5, model=None, cache_dir: str | os.PathLike | None = None,
                progress: Callable[[int], None] | None = None) -> CaptionData:
    """The built-in captioned scenes (:mod:`.scenes`): rendered, featurized, cached.

    ``counts``: scenes per split (default :data:`SHAPES_COUNTS`); ``seed`` picks the scenes;
    ``model``: a :class:`~preimage.models.Model` to use instead of loading ``spec.model``."""
    from .scenes import make_scene, render, scene_captions, scene_splits

    counts = dict(SHAPES_COUNTS if counts is None else counts)
    for s in SPLITS:
        if counts.get(s, 0) < 1:
            raise PreimageError(f"the shapes data needs at least one {s} scene")
    seeds = scene_splits(seed, {s: counts[s] for s in SPLITS})
    captions = {s: [scene_captions(make_scene(x), captions_per_image) for x in seeds[s]] for s in SPLITS}
    vocab = Vocab.build(c for caps in captions["train"] for c in caps)
    names = {s: [f"scene:{x}" for x in seeds[s]] for s in SPLITS}

    def load(name: str):
        return render(make_scene(int(name.split(":", 1)[1])), spec.input_size)

    description = {"kind": "shapes", "counts": counts, "scene_seed": seed, "captions_per_image": captions_per_image}
    feats, pipeline = _featurize(names, load, spec, model=model, description=description,
                                 cache_dir=None if cache_dir is None else Path(cache_dir), seed=seed, progress=progress)
    splits = {}
    for s in SPLITS:
        caps, idx = _encode_split(vocab, captions[s], truncate=False, skip_long=False)
        splits[s] = Split(feats[s], caps, idx, names[s])
    return CaptionData(vocab, splits, description, pipeline, load)


# -- COCO-style JSON + image folder ------------------------------------------------------------------

def _read_coco_json(path: Path) -> tuple[list[tuple[str, str]], dict[str, list[str]]]:
    """``[(image id, file name)]`` and ``{image id: [captions]}`` from a COCO captions file."""
    if not path.is_file():
        raise PreimageError(f"no such file: {path}")
    try:
        data = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise PreimageError(f"{path} is not a JSON text file (a COCO captions file such as "
                            f"captions_train2014.json)") from None
    except OSError as exc:
        raise PreimageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise PreimageError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise PreimageError(f"{path} is not a COCO captions file (expected 'images' and 'annotations' lists)")
    images: list[tuple[str, str]] = []
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise PreimageError(f"{path}: images[{i}] needs an 'id' and a 'file_name'")
        images.append((str(im["id"]), im["file_name"]))
    known = {i for i, _ in images}
    caps: dict[str, list[str]] = {i: [] for i, _ in images}
    for j, a in enumerate(data["annotations"]):
        if not isinstance(a, dict) or "image_id" not in a or not isinstance(a.get("caption"), str):
            raise PreimageError(f"{path}: annotations[{j}] needs an 'image_id' and a 'caption'")
        iid = str(a["image_id"])
        if iid not in known:
            raise PreimageError(f"{path}: annotations[{j}] refers to image {iid}, which is not in 'images'")
        caps[iid].append(a["caption"])
    images = [(i, f) for i, f in images if caps[i]]
    if len(images) < 3:
        raise PreimageError(f"{path}: need at least 3 captioned images (train, val and test), found {len(images)}")
    return images, caps


def check_coco_json(path: str | os.PathLike, images_dir: str | os.PathLike | None = None
                    ) -> tuple[list[tuple[str, str]], dict[str, list[str]], Path]:
    """Read a COCO captions file and check (headers only) that every captioned image it lists exists
    and opens, before any model loads or minutes go into the others. Returns ``(images, captions,
    image folder)``; raises :class:`PreimageError` in one line."""
    p = Path(path)
    images, caps = _read_coco_json(p)
    root = Path(images_dir) if images_dir is not None else p.parent
    if not root.is_dir():
        raise PreimageError(f"image folder {root} does not exist")
    for _, f in images:
        _check_image_header(root / f, p.name)
    return images, caps, root


def _check_image_header(path: Path, listed_in: str) -> None:
    """A cheap check (the header only) that ``path`` is an image Pillow can open."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise PreimageError(f"image {path} (listed in {listed_in}) does not exist")
    try:
        with Image.open(path):
            pass
    except UnidentifiedImageError:
        raise PreimageError(f"{path} is not an image Pillow can read") from None
    except OSError as exc:
        raise PreimageError(f"cannot read {path}: {exc.strerror or exc}") from None


def load_coco_json(path: str | os.PathLike, *, images_dir: str | os.PathLike | None = None, seed: int = 0,
                   val_fraction: float = 0.1, test_fraction: float = 0.1, spec: FeatureSpec = FeatureSpec(),
                   min_count: int = 1, long_captions: str = "error", model=None,
                   cache_dir: str | os.PathLike | None = None, progress: Callable[[int], None] | None = None
                   ) -> CaptionData:
    """COCO-style captions and their images (see the module docstring).

    ``images_dir``: where ``file_name`` is found (default: the JSON file's folder). ``min_count``:
    rarer training words become ``<UNK>``. ``long_captions``: ``"error"`` (default), ``"skip"`` or
    ``"truncate"`` for captions of more than 15 words."""
    from ..images import load_image

    p = Path(path)
    if long_captions not in ("error", "skip", "truncate"):
        raise PreimageError(f"long_captions must be error, skip or truncate, not {long_captions!r}")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise PreimageError("val and test fractions must be in [0, 1) and leave images for training")
    images, caps, root = check_coco_json(p, images_dir)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=g).tolist()
    n_val = max(1, round(val_fraction * len(images)))
    n_test = max(1, round(test_fraction * len(images)))
    parts = {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
    vocab = Vocab.build((c for i in parts["train"] for c in caps[images[i][0]]), min_count=min_count)
    names = {s: [str(root / images[i][1]) for i in sorted(ix)] for s, ix in parts.items()}
    captions = {s: [caps[images[i][0]] for i in sorted(ix)] for s, ix in parts.items()}
    stat = [(n, os.stat(n).st_size, int(os.stat(n).st_mtime)) for s in SPLITS for n in names[s]]
    description = {"kind": "coco-json", "path": str(p.resolve()), "images": str(root.resolve()),
                   "split_seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction,
                   "min_count": min_count, "long_captions": long_captions,
                   "files": hashlib.sha256(json.dumps(stat).encode()).hexdigest()[:16]}
    feats, pipeline = _featurize(names, load_image, spec, model=model,
                                 description={k: v for k, v in description.items() if k not in ("min_count", "long_captions")},
                                 cache_dir=None if cache_dir is None else Path(cache_dir), seed=seed, progress=progress)
    splits = {}
    for s in SPLITS:
        c, idx = _encode_split(vocab, captions[s], truncate=long_captions == "truncate", skip_long=long_captions == "skip")
        splits[s] = Split(feats[s], c, idx, names[s])
    if splits["train"].captions.shape[0] == 0:
        raise PreimageError(f"{p}: no training caption is left (all longer than {MAX_TOKENS - 2} words?)")
    return CaptionData(vocab, splits, description, pipeline, load_image)


def load_source(source: dict[str, object], *, spec: FeatureSpec | None = None, model=None,
                cache_dir: str | os.PathLike | None = None,
                progress: Callable[[int], None] | None = None) -> CaptionData:
    """Rebuild the data a run was trained on from its stored description (``config["data"]``)."""
    kind = source.get("kind")
    if kind == "coco-h5":
        return load_coco_h5(str(source["path"]), max_train=source.get("max_train"))  # type: ignore[arg-type]
    if kind == "shapes":
        return load_shapes(counts=dict(source["counts"]), seed=int(source["scene_seed"]),  # type: ignore[arg-type]
                           captions_per_image=int(source["captions_per_image"]),  # type: ignore[arg-type]
                           spec=spec or FeatureSpec(), model=model, cache_dir=cache_dir, progress=progress)
    if kind == "coco-json":
        return load_coco_json(str(source["path"]), images_dir=str(source["images"]),
                              seed=int(source["split_seed"]),  # type: ignore[arg-type]
                              val_fraction=float(source["val_fraction"]),  # type: ignore[arg-type]
                              test_fraction=float(source["test_fraction"]),  # type: ignore[arg-type]
                              min_count=int(source["min_count"]),  # type: ignore[arg-type]
                              long_captions=str(source["long_captions"]), spec=spec or FeatureSpec(),
                              model=model, cache_dir=cache_dir, progress=progress)
    raise PreimageError(f"unknown data source {kind!r} in the checkpoint")
