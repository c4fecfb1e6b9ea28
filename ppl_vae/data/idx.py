"""Reading and writing the IDX files of MNIST and Fashion-MNIST (LeCun et al. 1998).

The format: a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian
``int32`` sizes, then the data in row-major order. Files may be gzip-compressed (``.gz``),
as the original distributions and the Debian ``dataset-fashion-mnist`` package ship them.
torchvision's own reader (``torchvision.datasets.mnist.read_sn3_pascalvincent_tensor``)
reads only uncompressed files; this one reads both and is tested against it.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib

import numpy as np
import torch

from .errors import DataError

__all__ = ["read_idx", "write_idx"]

_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}


def _open(path: str, mode: str):
    return gzip.open(path, mode) if str(path).endswith(".gz") else open(path, mode)


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """Read an IDX file (optionally ``.gz``) into a tensor of its stored shape.

    :param path: the file.
    :returns: a tensor of shape given by the header, e.g. ``(N, 28, 28)`` ``uint8`` for images,
        ``(N,)`` for labels.
    :raises DataError: if the file is not a valid IDX file (corrupt compression, bad magic number, truncated data).
    :raises OSError: if the file cannot be opened (e.g. :class:`FileNotFoundError`).
    """
    path = os.fspath(path)
    try:
        with _open(path, "rb") as f:
            data = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:  # gzip raises these on corrupt archives
        raise DataError(f"Could not read IDX file {path!r}: {type(e).__name__}: {e}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise DataError(f"{path!r} is not an IDX file: bad magic number {data[:4]!r}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path!r} is truncated: header of {ndim} dimensions is incomplete")
    shape = struct.unpack(f">{ndim}i", data[4:header])
    dtype = np.dtype(_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"{path!r} is truncated or corrupt: header says shape {tuple(shape)} "
            f"({expected} bytes) but the file holds {len(data) - header} bytes of data"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def write_idx(path: str | os.PathLike, tensor: torch.Tensor) -> None:
    """Write a ``uint8`` or ``int8`` tensor as an IDX file (gzip-compressed if ``path`` ends in ``.gz``).

    :raises ValueError: if the tensor is neither ``uint8`` nor ``int8``.
    """
    array = tensor.detach().cpu().numpy()
    if array.dtype not in _CODES:
        raise ValueError(f"write_idx supports uint8 and int8 tensors, got {array.dtype}")
    header = bytes([0, 0, _CODES[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    with _open(os.fspath(path), "wb") as f:
        f.write(header + np.ascontiguousarray(array).tobytes())
