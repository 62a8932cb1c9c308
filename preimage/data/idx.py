"""The IDX file format of MNIST and Fashion-MNIST (LeCun et al.), gzipped or raw.

An IDX file is a big-endian header followed by the values in C order::

    bytes 0-1   0x00 0x00
    byte  2     type code: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte  3     number of dimensions n
    bytes 4..   n sizes, 4-byte unsigned big-endian each
    then        prod(sizes) values

So images are ``0x00000803`` (N x 28 x 28 uint8) and labels ``0x00000801`` (N uint8). Every check
(gzip integrity, magic number, header length, data size) fails with one line naming the file.
"""
from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import PreimageError

__all__ = ["read_idx", "find_idx", "IDX_TYPES"]

#: IDX type code -> big-endian numpy dtype
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike, *, ndim: int | None = None) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw; detected from the content, not the name) into a numpy array.

    ``ndim``: the number of dimensions the caller expects (3 for images, 1 for labels); another
    number raises :class:`PreimageError`, as do a wrong magic number and a size that does not match
    the header (a truncated or padded file).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PreimageError(f"no such file: {path}") from None
    except OSError as exc:
        raise PreimageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise PreimageError(f"{path} is a damaged gzip file ({exc})") from None
    if len(data) < 4:
        raise PreimageError(f"{path} is not an IDX file ({len(data)} bytes)")
    magic = data[:4].hex()
    if data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES or not 1 <= data[3] <= 8:
        raise PreimageError(f"{path} is not an IDX file (magic number 0x{magic}; expected 0x0000TTNN "
                            f"with type TT in 08..0e and NN dimensions)")
    n = data[3]
    if ndim is not None and n != ndim:
        raise PreimageError(f"{path} holds a {n}-dimensional array (magic number 0x{magic}); expected {ndim} "
                            f"dimensions (0x000008{ndim:02x})")
    header = 4 + 4 * n
    if len(data) < header:
        raise PreimageError(f"{path} is truncated inside its header")
    shape = struct.unpack(">" + "I" * n, data[4:header])
    dtype = np.dtype(IDX_TYPES[data[2]])
    expected = math.prod(shape) * dtype.itemsize
    if len(data) - header != expected:
        raise PreimageError(f"{path} has {len(data) - header} bytes of data; its header {tuple(shape)} says "
                            f"{expected} (truncated or not an IDX file)")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def find_idx(folder: str | os.PathLike, split: str, kind: str) -> Path | None:
    """The IDX file of ``split`` ("train" or "test") and ``kind`` ("images" or "labels") in ``folder``,
    under the names the data sets ship with (``train-images-idx3-ubyte[.gz]``,
    ``t10k-labels-idx1-ubyte[.gz]``, or torchvision's ``train-images.idx3-ubyte``), or None."""
    prefix = "train" if split == "train" else "t10k"
    dims = "idx3" if kind == "images" else "idx1"
    folder = Path(folder)
    for sep in ("-", "."):
        for ext in ("", ".gz"):
            p = folder / f"{prefix}-{kind}{sep}{dims}-ubyte{ext}"
            if p.is_file():
                return p
    return None
