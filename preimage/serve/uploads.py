"""Uploaded images: capped in bytes and pixels, image types only, stored under the server's folder.

An upload is checked three times before a job may use it: its size while it streams in (the
connection is refused past ``max_upload_bytes``), its header (Pillow must name one of
:data:`FORMATS`, and width x height must stay under ``max_upload_pixels``, so a small file that
declares a huge image is refused before it is decoded), and a full decode through
:func:`preimage.images.load_image` (truncated or damaged files). Clients then name it by its id
only (``upload:ID``); no path ever comes from a client.
"""
from __future__ import annotations

import io
import re
import secrets
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import PreimageError

__all__ = ["FORMATS", "Upload", "UploadStore", "TooLarge", "NotAnImage", "safe_stem"]

#: Pillow format name -> file extension of the stored copy
FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "GIF": "gif", "TIFF": "tif"}

_ID = re.compile(r"^[0-9a-f]{16}$")


class TooLarge(PreimageError):
    """More bytes or pixels than the server accepts (HTTP 413)."""


class NotAnImage(PreimageError):
    """Not one of the accepted image types (HTTP 415)."""


def safe_stem(filename: str | None) -> str:
    """A file stem made of letters, digits, ``-`` and ``_`` only (``../a b.png`` -> ``a_b``)."""
    stem = Path(filename or "").name.rsplit(".", 1)[0]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:40]
    return stem or "upload"


@dataclass(frozen=True)
class Upload:
    id: str
    name: str       # the stem used for output files
    path: Path      # under <out>/uploads/<id>/
    width: int
    height: int
    format: str
    bytes: int

    def public(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "width": self.width, "height": self.height,
                "format": self.format, "bytes": self.bytes, "source": f"upload:{self.id}"}


class UploadStore:
    """Checked uploads by id, stored under ``folder``."""

    def __init__(self, folder: Path, *, max_bytes: int, max_pixels: int, max_count: int):
        self.folder, self.max_bytes, self.max_pixels, self.max_count = Path(folder), max_bytes, max_pixels, max_count
        self._items: dict[str, Upload] = {}
        self._lock = threading.Lock()

    def check_header(self, data: bytes) -> tuple[str, int, int]:
        """``(format, width, height)`` from the header alone; refuses other types and huge images."""
        from PIL import Image, UnidentifiedImageError

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(data))
                fmt, (w, h) = img.format or "", img.size
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise TooLarge(f"the image is too large: more than {self.max_pixels:,} pixels "
                           "(refusing a possible decompression bomb)") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
            raise NotAnImage("not an image: upload a JPEG, PNG, WebP, BMP, GIF or TIFF file") from None
        if fmt not in FORMATS:
            raise NotAnImage(f"{fmt or 'this'} files are not accepted: upload a JPEG, PNG, WebP, BMP, GIF or TIFF file")
        if w * h > self.max_pixels:
            raise TooLarge(f"the image is too large: {w}x{h} pixels, the limit is {self.max_pixels:,} pixels "
                           "(refusing a possible decompression bomb)")
        return fmt, w, h

    def add(self, data: bytes, filename: str | None) -> Upload:
        """Check ``data`` (already read within the byte cap) and store it; raises PreimageError."""
        from ..images import load_image
        from ..io import atomic_write

        if not data:
            raise NotAnImage("the upload is empty")
        if len(data) > self.max_bytes:
            raise TooLarge(f"the file is too large: {len(data):,} bytes, the limit is {self.max_bytes:,} bytes")
        fmt, w, h = self.check_header(data)
        with self._lock:
            if len(self._items) >= self.max_count:
                from .jobs import Busy

                raise Busy(f"server busy: it holds {self.max_count} uploads already; restart it to clear them")
            upload_id = secrets.token_hex(8)
        name = safe_stem(filename)
        path = self.folder / upload_id / f"{name}.{FORMATS[fmt]}"
        atomic_write(path, data)
        try:
            load_image(path, max_pixels=self.max_pixels)  # a full decode: truncated or damaged files fail here
        except PreimageError as exc:
            path.unlink(missing_ok=True)
            path.parent.rmdir()
            raise NotAnImage(str(exc).replace(str(path), "the upload")) from None
        item = Upload(upload_id, name, path, w, h, fmt, len(data))
        with self._lock:
            self._items[upload_id] = item
        return item

    def get(self, upload_id: str) -> Upload:
        with self._lock:
            item = self._items.get(upload_id) if _ID.match(upload_id) else None
        if item is None:
            raise PreimageError(f"no upload {upload_id!r} on this server (uploads are kept until it stops)")
        return item
