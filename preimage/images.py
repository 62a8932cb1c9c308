"""Image I/O: safe loading of any Pillow-readable file, sample photos, and tensor <-> PNG.

Loading rules (``load_image``):

- JPEG, PNG, WebP, BMP, TIFF, GIF (first frame) and anything else Pillow reads; EXIF orientation is
  applied. Using only the first frame of an animation and flattening transparent pixels are
  announced with an :class:`~preimage.errors.ImageConversionWarning` (the CLI prints it as one
  ``warning:`` line) and recorded by :func:`conversion_notes` for the manifests.
- URLs are refused (images are files; nothing is downloaded).
- Every mode becomes 8-bit RGB: grayscale is replicated, palettes are expanded, CMYK is converted,
  16-bit images (modes ``I;16*`` and ``I``: 16-bit PNG, TIFF, PGM) are scaled (``v / 257``, not
  clipped), float images (``F``) in [0, 1] are scaled by 255, and **alpha is composited over white**
  (a transparent pixel becomes white, a half-transparent one is blended 50/50 with white).
- ``sample:NAME`` loads a photo bundled with scikit-image (``sample:chelsea``, ``sample:coffee``, ...),
  with no network access.
- A missing file, a directory, an empty, truncated or non-image file, a decompression bomb (more than
  ``MAX_PIXELS`` pixels) or an image smaller than ``MIN_SIDE`` pixels on a side raises
  :class:`~preimage.errors.PreimageError` with one line.

Tensors are ``B x 3 x H x W`` RGB in [0, 1] (``B x 1 x H x W`` grey for 1-channel models: see
:func:`to_channels`); models normalize them (see ``Model.normalize``).
"""
from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageConversionWarning, PreimageError, did_you_mean

if TYPE_CHECKING:  # torch and numpy load on first use: checking a path must not wait for them
    import torch

__all__ = [
    "load_image", "to_tensor", "load_tensor", "to_pil", "save_image", "encode_png",
    "SAMPLES", "MAX_PIXELS", "MIN_SIDE", "image_name", "unique_names", "load_batch", "to_channels",
    "conversion_notes", "IMAGE_SUFFIXES", "expand_sources", "as_pixels",
]

#: decompression-bomb guard (Pillow's own default limit)
MAX_PIXELS = 89_478_485
#: smallest accepted side, in pixels
MIN_SIDE = 8

#: photos of scikit-image's ``skimage.data`` that ship inside the package (no download)
SAMPLES = (
    "astronaut", "chelsea", "coffee", "rocket", "cat", "camera", "coins", "moon", "page", "text",
    "immunohistochemistry", "hubble_deep_field", "retina", "colorwheel", "clock", "cell",
    "microaneurysms", "brick", "grass", "gravel", "checkerboard", "logo",
)


def image_name(source: str | os.PathLike) -> str:
    """A short name for outputs: ``sample:chelsea`` -> ``chelsea``, ``dir/cat.jpg`` -> ``cat``."""
    s = str(source)
    return s.split(":", 1)[1] if s.startswith("sample:") else Path(s).stem


def _sample(name: str) -> Image.Image:
    if name not in SAMPLES:
        raise PreimageError(f"unknown sample photo {name!r}" + did_you_mean(name, SAMPLES)
                            + "; samples: " + ", ".join(SAMPLES[:6]) + ", ...")
    import numpy as np
    import skimage.data

    array = np.asarray(getattr(skimage.data, name)())
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    return _to_rgb(Image.fromarray(array))


def _to_rgb(img: Image.Image) -> Image.Image:
    import numpy as np

    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # Pillow's "I" holds 16-bit samples (16-bit PGM/PPM, signed 16-bit TIFF): always 0..65535,
        # so the scale must not depend on the values (a dark 16-bit image is not an 8-bit one)
        a = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(np.round(a / 257.0), 0, 255).astype(np.uint8), "L")
    elif mode == "F":
        a = np.asarray(img, dtype=np.float64)
        if a.max(initial=0) <= 1.0:
            a = a * 255.0
        img = Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert("RGB")


def load_image(source: str | os.PathLike, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Load a file (or ``sample:NAME``) as an 8-bit RGB Pillow image; see the module rules."""
    s = str(source)
    if s.startswith("sample:"):
        return _sample(s.split(":", 1)[1])
    if "://" in s:
        raise PreimageError(f"{s}: images are read from files, not fetched from URLs (download it first)")
    path = Path(s).expanduser()
    if not path.exists():
        hint = " (bundled photos are sample:NAME, e.g. sample:chelsea)" if "/" not in s and "." not in s else ""
        raise PreimageError(f"no such file: {s}{hint}")
    if path.is_dir():
        raise PreimageError(f"{s} is a directory, not an image")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PreimageError(f"cannot read {s}: {exc.strerror or exc}") from None
    if not data:
        raise PreimageError(f"{s} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise PreimageError(f"{s} is too large ({w}x{h} pixels, limit {max_pixels}): refusing a possible decompression bomb")
            frames = int(getattr(img, "n_frames", 1) or 1)
            img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img)
            notes = _conversion_notes(img, frames)
            img = _to_rgb(img)
    except PreimageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PreimageError(f"{s} is too large: refusing a possible decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise PreimageError(f"{s} is not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise PreimageError(f"{s} is damaged or truncated ({_first_line(exc)})") from None
    if min(img.size) < MIN_SIDE:
        raise PreimageError(f"{s} is too small ({img.size[0]}x{img.size[1]}; at least {MIN_SIDE} pixels a side)")
    _NOTES[s] = notes
    for note in notes:
        warnings.warn(f"{s}: {note}", ImageConversionWarning, stacklevel=2)
    return img


#: conversions that change what the network sees, by source (read back by :func:`conversion_notes`)
_NOTES: dict[str, list[str]] = {}


def _conversion_notes(img: Image.Image, frames: int) -> list[str]:
    """The silent conversions worth a notice: only the first frame of an animation is used; a
    transparent image is flattened onto white (an alpha channel that is opaque everywhere is not)."""
    notes = []
    if frames > 1:
        notes.append(f"animated ({frames} frames): using the first frame")
    transparent = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info)
    if transparent:
        alpha = img.convert("RGBA").getchannel("A")
        if alpha.getextrema()[0] < 255:
            notes.append("has transparent pixels: flattened onto white")
    return notes


def conversion_notes(sources: "Sequence[str | os.PathLike]") -> dict[str, list[str]]:
    """``{source: [note, ...]}`` for the sources :func:`load_image` converted with a notice (an
    animation's first frame, transparency flattened onto white); for manifests."""
    out = {}
    for src in sources:
        if not isinstance(src, (str, os.PathLike)):
            continue  # a tensor: nothing was converted
        s = str(src)
        if s not in _NOTES and not s.startswith("sample:"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ImageConversionWarning)
                try:
                    load_image(s)
                except PreimageError:
                    continue
        if _NOTES.get(s):
            out[s] = list(_NOTES[s])
    return out


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def to_tensor(img: Image.Image, size: int | None = None) -> torch.Tensor:
    """Pillow RGB -> ``1 x 3 x S x S`` in [0, 1]: resize the short side to ``size`` (bilinear,
    antialiased), then center-crop to ``size`` x ``size``. ``size=None`` keeps the image as it is."""
    import torchvision.transforms.functional as TF

    if not isinstance(img, Image.Image):
        raise PreimageError(f"to_tensor takes a Pillow image, not {type(img).__name__} (see as_pixels)")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise PreimageError(f"size must be a positive number of pixels, not {size!r}")
    if size is not None:
        img = TF.center_crop(TF.resize(img, size, interpolation=TF.InterpolationMode.BILINEAR, antialias=True), size)
    return TF.pil_to_tensor(img).float().div_(255.0).unsqueeze(0)


def as_pixels(image: object, what: str = "images") -> torch.Tensor:
    """An in-memory image as ``B x C x H x W`` floats in [0, 1] (C = 1 or 3): a Pillow image (any
    mode, see :func:`load_image`'s rules), a numpy array (``H x W`` or ``H x W x C``, C = 1 or 3, or
    2 or 4 with alpha, composited over white as for files; uint8 in 0..255 or floats in [0, 1]) or a
    tensor (``C x H x W`` or ``B x C x H x W``; floats in [0, 1], or uint8 in 0..255). Anything else, or
    values outside [0, 1], raises :class:`PreimageError`."""
    import numpy as np
    import torch

    if isinstance(image, Image.Image):
        # an opened JPEG still carries its EXIF orientation: turn it upright as load_image does (a
        # picture already turned has the tag removed, so it is not turned twice)
        return to_tensor(_to_rgb(ImageOps.exif_transpose(image)))
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
            raise PreimageError(f"{what}: a numpy image must be H x W x 3 (or H x W grey, or with an alpha "
                                f"channel H x W x 4), not {image.shape}")
        if image.dtype != np.uint8 and image.dtype.kind != "f":
            raise PreimageError(f"{what}: a numpy image must be uint8 (0..255) or float (0..1), not {image.dtype}")
        if image.shape[2] in (2, 4):  # grey or RGB with alpha: composited over white, as a file is
            f = image.astype(np.float64) / (255.0 if image.dtype == np.uint8 else 1.0)
            alpha = f[:, :, -1:]
            image = f[:, :, :-1] * alpha + (1.0 - alpha)
        # a copy: the array may be read-only
        x = torch.from_numpy(np.array(image.transpose(2, 0, 1), order="C")).unsqueeze(0)
    elif isinstance(image, torch.Tensor):
        x = image.detach().unsqueeze(0) if image.dim() == 3 else image.detach()
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise PreimageError(f"{what} must be B x 3 x H x W (or 3 x H x W), not {tuple(image.shape)}")
        if x.dtype != torch.uint8 and not x.is_floating_point():
            raise PreimageError(f"{what}: an image tensor must be float (0..1) or uint8 (0..255), not {x.dtype}")
    else:
        raise PreimageError(f"{what}: expected a path, sample:NAME, Pillow image, numpy array or tensor, "
                            f"not {type(image).__name__}")
    if x.shape[0] == 0 or x.shape[-1] == 0 or x.shape[-2] == 0:
        raise PreimageError(f"{what}: the image is empty ({tuple(image.shape)})")
    x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
    if not x.isfinite().all():
        raise PreimageError(f"{what}: pixel values must be finite (the image holds NaN or infinity)")
    if x.numel() and not (x.min() >= -1e-3 and x.max() <= 1 + 1e-3):
        raise PreimageError(f"{what}: pixel values must lie in [0, 1], not [{x.min().item():.3g}, "
                            f"{x.max().item():.3g}] (divide 0..255 values by 255)")
    return x


def load_tensor(source: str | os.PathLike, size: int | None = None, *, channels: int = 3) -> torch.Tensor:
    """``to_channels(to_tensor(load_image(source), size), channels)``."""
    return to_channels(to_tensor(load_image(source), size), channels)


#: ITU-R BT.601 luma weights: grey = 0.299 R + 0.587 G + 0.114 B
LUMA = (0.299, 0.587, 0.114)


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """``B x C x H x W`` -> ``B x channels x H x W``: RGB -> grey is BT.601 luma
    (``0.299 R + 0.587 G + 0.114 B``), grey -> RGB repeats the channel; otherwise unchanged."""
    import torch

    c = x.shape[-3]
    if c == channels:
        return x
    if c == 3 and channels == 1:
        w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return (x * w).sum(-3, keepdim=True)
    if c == 1 and channels == 3:
        return x.expand(*x.shape[:-3], 3, *x.shape[-2:]).contiguous()
    raise PreimageError(f"cannot turn a {c}-channel image into a {channels}-channel one (1 grey or 3 RGB)")


def to_pil(pixels: torch.Tensor) -> Image.Image:
    """``3 x H x W`` (or ``1 x 3 x H x W``; 1 channel or ``H x W`` for grey) in [0, 1] -> 8-bit RGB,
    clamped and rounded."""
    import torch

    if not isinstance(pixels, torch.Tensor):
        raise PreimageError(f"to_pil takes a tensor, not {type(pixels).__name__}")
    shape = tuple(pixels.shape)
    if pixels.dim() == 4:
        if pixels.shape[0] != 1:
            raise PreimageError(f"to_pil takes one image, not a batch of {pixels.shape[0]}; index the batch first")
        pixels = pixels[0]
    elif pixels.dim() == 2:
        pixels = pixels.unsqueeze(0)
    if pixels.dim() != 3 or pixels.shape[0] not in (1, 3):
        raise PreimageError(f"to_pil takes a 3 x H x W (or 1 x H x W) image, not {shape}")
    if pixels.shape[0] == 1:
        pixels = pixels.expand(3, -1, -1)
    array = pixels.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")


def encode_png(pixels: torch.Tensor | Image.Image) -> bytes:
    """PNG bytes of an image (deterministic: no timestamps or metadata)."""
    img = pixels if isinstance(pixels, Image.Image) else to_pil(pixels)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def save_image(pixels: torch.Tensor | Image.Image, path: str | os.PathLike) -> Path:
    """Write a PNG atomically (a temporary file in the same folder, then rename). The name must end in
    ``.png``: pre-images are saved without loss, and a PNG under another name would mislead."""
    from .io import atomic_write

    if Path(path).suffix.lower() != ".png":
        raise PreimageError(f"save_image writes PNG files: give a name ending in .png, not {os.fspath(path)!r}")
    return atomic_write(path, encode_png(pixels))


def unique_names(names: Sequence[str]) -> list[str]:
    """``[a, a, b]`` -> ``[a, a_2, b]``: output file stems that do not collide."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        k = seen.get(n, 0)
        seen[n] = k + 1
        out.append(n if k == 0 else f"{n}_{k + 1}")
    return out


def load_batch(images: "torch.Tensor | str | os.PathLike | Sequence[str | os.PathLike]", size: int | None,
               *, channels: int = 3) -> tuple[torch.Tensor, list[str], list[str]]:
    """One batch from a source, a list of sources, or an in-memory image or batch (see
    :func:`as_pixels`: a ``B x C x H x W`` tensor in [0, 1], a Pillow image, a numpy array).

    Returns ``(pixels, unique output names, sources)``; each source is resized and center-cropped
    to ``size`` (see :func:`to_tensor`) and given ``channels`` channels (see :func:`to_channels`)."""
    import torch

    if not isinstance(images, (str, os.PathLike, list, tuple)):
        x = as_pixels(images)
        names = [f"image{i}" for i in range(x.shape[0])]
        return to_channels(x, channels), names, names
    sources = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    if not sources:
        raise PreimageError("no image given")
    for s in sources:
        if not isinstance(s, (str, os.PathLike)):
            raise PreimageError(f"a list of images holds paths or sample:NAME, not {type(s).__name__} "
                                "(stack tensors into one B x 3 x H x W batch)")
    batch = torch.cat([load_tensor(s, size, channels=channels) for s in sources])
    return batch, unique_names([image_name(s) for s in sources]), [str(s) for s in sources]


#: file name endings :func:`expand_sources` takes from a folder
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")


def expand_sources(sources: "Sequence[str | os.PathLike]") -> list[str]:
    """Sources with each folder replaced by the image files in it (by name ending, sorted, not
    recursive); ``sample:NAME`` and files pass as they are. A folder without images, or a path that
    does not exist, raises :class:`PreimageError`. Nothing is decoded here."""
    out: list[str] = []
    for src in sources:
        s = str(src)
        path = Path(s).expanduser()
        if not s.startswith("sample:") and path.is_dir():
            files = sorted(str(p) for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise PreimageError(f"no images found in {s} (looked for {', '.join(IMAGE_SUFFIXES)})")
            out.extend(files)
        elif not s.startswith("sample:") and "://" not in s and not path.exists():
            raise PreimageError(f"no such file or folder: {s}")
        else:
            out.append(s)
    return out
