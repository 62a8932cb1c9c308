"""Image data sets behind one small interface: ``load_data(source, split=...) -> ImageData``.

Sources:

- ``fashion-mnist``: the four IDX files in ``/usr/share/datasets/fashion-mnist/`` (Debian's
  ``dataset-fashion-mnist``) or in ``root``; where neither exists, torchvision's download into the
  cache (``$PREIMAGE_DATA``, default ``~/.cache/preimage/data``), which fails offline with one line.
- ``mnist``: torchvision's MNIST download path into the same cache (one line when offline).
- ``digits``: scikit-learn's 8 x 8 digits (1,797 images, bundled), upsampled to 28 x 28 (bilinear);
  a fixed split puts every fifth image in ``test``.
- a folder with IDX files (read as Fashion-MNIST is), or any folder of the user's images (searched
  recursively; Pillow-readable files), resized on the short side and center-cropped to ``size``
  (default 32), grey when every image is grey (or ``channels=1``), else colour. Images in
  sub-folders get the sub-folder's name as their class. Every tenth file (in sorted order) is the
  ``test`` split when there are at least ten.

``ImageData`` holds ``uint8`` images (``N x C x H x W``), integer labels (or None) and class names;
:meth:`ImageData.batches` draws an epoch's full batches from a seeded generator.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import PreimageError, did_you_mean
from .idx import find_idx, read_idx

__all__ = ["ImageData", "load_data", "read_idx", "DATASETS", "FASHION_MNIST_DIR", "FASHION_CLASSES", "SIZES",
           "is_named"]

#: where Debian's dataset-fashion-mnist package puts the IDX files
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
DIGIT_CLASSES = tuple(str(i) for i in range(10))
#: the named data sets; anything else is a folder
DATASETS = ("fashion-mnist", "mnist", "digits")
#: image sides the GAN architectures adapt to
SIZES = (28, 32, 64)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass
class ImageData:
    """A labelled (or unlabelled) image set held in memory.

    ``images``: ``N x C x H x W`` uint8 (C = 1 or 3); ``labels``: ``N`` int64 or None;
    ``classes``: class names (index = label) or None; ``name``: where it came from.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    classes: tuple[str, ...] | None
    name: str

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def pixels(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Images as float in [0, 1] (all, or those at ``index``)."""
        x = self.images if index is None else self.images[index]
        return x.float().div_(255.0)

    def num_batches(self, batch_size: int, drop_last: bool = True) -> int:
        n = len(self)
        return n // batch_size if drop_last else -(-n // batch_size)

    def batches(self, batch_size: int, generator: torch.Generator, *, drop_last: bool = True
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """One epoch in an order drawn from ``generator``: ``(pixels in [0, 1], labels)`` per batch;
        ``drop_last`` keeps full batches only (as the notes' ``run_a_gan``)."""
        order = torch.randperm(len(self), generator=generator)
        for i in range(self.num_batches(batch_size, drop_last)):
            idx = order[i * batch_size:(i + 1) * batch_size]
            yield self.pixels(idx), (self.labels[idx] if self.labels is not None else None)


def is_named(source: str) -> bool:
    return source in DATASETS


def load_data(source: str | os.PathLike, *, split: str = "train", size: int | None = None,
              channels: int | None = None, root: str | os.PathLike | None = None) -> ImageData:
    """Load ``source`` (see the module docstring) as :class:`ImageData`.

    Args:
        split: ``"train"`` or ``"test"``.
        size: resize to ``size`` x ``size`` (default: the data set's own; 32 for image folders).
        channels: 1 (grey) or 3 (colour); default: the data set's own.
        root: for ``fashion-mnist``, a folder with the IDX files; for ``mnist``, the download cache.
    """
    if split not in ("train", "test"):
        raise PreimageError(f"split must be 'train' or 'test', not {split!r}")
    if size is not None and size not in SIZES:
        raise PreimageError(f"image size must be one of {', '.join(map(str, SIZES))}, not {size}")
    if channels not in (None, 1, 3):
        raise PreimageError(f"channels must be 1 or 3, not {channels}")
    s = str(source)
    if s == "fashion-mnist":
        data = _fashion_mnist(split, root)
    elif s == "mnist":
        data = _torchvision("MNIST", split, root)
    elif s == "digits":
        data = _digits(split)
    else:
        path = Path(s).expanduser()
        if not path.exists():
            hint = did_you_mean(s, DATASETS)
            raise PreimageError(f"no data set or folder {s!r}{hint}; named data sets: {', '.join(DATASETS)}")
        if not path.is_dir():
            raise PreimageError(f"{s} is not a folder (give a folder of images or IDX files)")
        if find_idx(path, "train", "images") or find_idx(path, "test", "images"):
            data = _idx_folder(path, split, FASHION_CLASSES if "fashion" in path.name.lower() else None)
        else:
            data = _image_folder(path, split, size or 32, channels)
    return _adapt(data, size, channels)


def _adapt(data: ImageData, size: int | None, channels: int | None) -> ImageData:
    x = data.images
    if channels is not None and channels != x.shape[1]:
        if channels == 3:
            x = x.expand(-1, 3, -1, -1)
        else:  # ITU-R 601 luma
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = (x.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    if size is not None and size != x.shape[-1]:
        x = _resize(x, size)
    return ImageData(x.contiguous(), data.labels, data.classes, data.name)


def _resize(x: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    import torch.nn.functional as F

    out = [F.interpolate(x[i:i + chunk].float(), size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True).round().clamp(0, 255).to(torch.uint8) for i in range(0, len(x), chunk)]
    return torch.cat(out)


def _idx_folder(folder: Path, split: str, classes: tuple[str, ...] | None) -> ImageData:
    img_path, lab_path = find_idx(folder, split, "images"), find_idx(folder, split, "labels")
    if img_path is None or lab_path is None:
        prefix = "train" if split == "train" else "t10k"
        missing = f"{prefix}-images-idx3-ubyte" if img_path is None else f"{prefix}-labels-idx1-ubyte"
        raise PreimageError(f"{folder} has no {missing}[.gz] (a Fashion-MNIST/MNIST folder holds four IDX files)")
    images = read_idx(img_path, ndim=3)
    labels = read_idx(lab_path, ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise PreimageError(f"{img_path.name} has {images.shape[0]} images but {lab_path.name} {labels.shape[0]} labels")
    if images.dtype.itemsize != 1:
        raise PreimageError(f"{img_path} holds {images.dtype} values; expected unsigned bytes (type 0x08)")
    if labels.size and int(labels.max()) >= 10:
        raise PreimageError(f"{lab_path} has label {int(labels.max())}; expected 0..9")
    x = torch.from_numpy(images.astype("uint8")).unsqueeze(1)
    return ImageData(x, torch.from_numpy(labels.astype("int64")), classes or DIGIT_CLASSES, str(folder))


def _cache_root(root: str | os.PathLike | None) -> Path:
    if root is not None:
        return Path(root).expanduser()
    return Path(os.environ.get("PREIMAGE_DATA", "~/.cache/preimage/data")).expanduser()


def _fashion_mnist(split: str, root: str | os.PathLike | None) -> ImageData:
    folder = Path(root).expanduser() if root is not None else FASHION_MNIST_DIR
    if root is not None or find_idx(folder, split, "images"):
        if not folder.is_dir():
            raise PreimageError(f"no such folder: {folder}")
        data = _idx_folder(folder, split, FASHION_CLASSES)
        return ImageData(data.images, data.labels, FASHION_CLASSES, "fashion-mnist")
    return _torchvision("FashionMNIST", split, None,
                        hint=f"no IDX files in {FASHION_MNIST_DIR} (apt-get install dataset-fashion-mnist)")


def _torchvision(name: str, split: str, root: str | os.PathLike | None, hint: str = "") -> ImageData:
    import contextlib
    import io

    import torchvision

    cache = _cache_root(root)
    cls = getattr(torchvision.datasets, name)
    try:  # torchvision prints its download progress; the library stays quiet
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            ds = cls(str(cache), train=split == "train", download=True)
    except Exception as exc:  # offline: URLError, RuntimeError("Error downloading ..."), ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        pre = f"{hint}; " if hint else ""
        raise PreimageError(f"{pre}could not download {name} into {cache} ({first[:120]}); offline, give a "
                            f"folder with its four IDX files instead (--data FOLDER)") from None
    classes = FASHION_CLASSES if name == "FashionMNIST" else DIGIT_CLASSES
    return ImageData(ds.data.to(torch.uint8).unsqueeze(1).contiguous(), ds.targets.long(), classes,
                     name.lower().replace("fashionmnist", "fashion-mnist"))


def _digits(split: str) -> ImageData:
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images).float().unsqueeze(1) * (255.0 / 16.0)  # 0..16 -> 0..255
    x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False).round().clamp(0, 255)
    y = torch.from_numpy(d.target).long()
    test = torch.arange(len(y)) % 5 == 4
    keep = test if split == "test" else ~test
    return ImageData(x[keep].to(torch.uint8), y[keep], DIGIT_CLASSES, "digits")


def _image_folder(folder: Path, split: str, size: int, channels: int | None) -> ImageData:
    from ..images import load_image, to_tensor

    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise PreimageError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if len(files) >= 10:
        files = [f for i, f in enumerate(files) if (i % 10 == 9) == (split == "test")]
    tensors = [to_tensor(load_image(f), size)[0] for f in files]
    x = (torch.stack(tensors) * 255).round().to(torch.uint8)
    grey = bool((x[:, 0] == x[:, 1]).all() and (x[:, 1] == x[:, 2]).all())
    if channels == 1 or (channels is None and grey):
        x = x[:, :1] if grey else _adapt(ImageData(x, None, None, ""), None, 1).images
    parents = [f.parent.relative_to(folder).parts for f in files]
    labels = classes = None
    if all(len(p) >= 1 for p in parents):
        classes = tuple(sorted({p[0] for p in parents}))
        labels = torch.tensor([classes.index(p[0]) for p in parents], dtype=torch.long)
    return ImageData(x.contiguous(), labels, classes, str(folder))
