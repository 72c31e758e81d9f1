"""Reading gzipped IDX files (the MNIST file format), with errors that name the file.

Format (yann.lecun.com/exdb/mnist): two zero bytes, a type byte (0x08 = uint8), the number of
dimensions, one big-endian uint32 per dimension, then the values in C order.
"""

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from jaxtricks.errors import DataError


def read_idx_gz(path: str | Path, *, item_shape: tuple[int, ...] | None = None) -> np.ndarray:
  """Returns the uint8 array stored in a gzipped IDX file, checking gzip CRC, header and size."""
  path = Path(path)
  try:
    with gzip.open(path, "rb") as f:
      raw = f.read()
  except FileNotFoundError:
    raise DataError(None, f"{path}: file not found") from None
  except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
    raise DataError(None, f"{path}: truncated or corrupted gzip file ({e}); delete it and fetch it again") from None
  if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08 or raw[3] == 0:
    raise DataError(None, f"{path}: not an IDX file of uint8 values (header {raw[:4].hex()})")
  ndim = raw[3]
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise DataError(None, f"{path}: truncated IDX header")
  dims = struct.unpack(f">{ndim}I", raw[4:header])
  values = np.frombuffer(raw, dtype=np.uint8, offset=header)
  if values.size != math.prod(dims):
    raise DataError(None, f"{path}: header promises {dims} = {math.prod(dims)} values, the file holds {values.size}")
  array = values.reshape(dims)
  if item_shape is not None and array.shape[1:] != tuple(item_shape):
    raise DataError(None, f"{path}: items have shape {array.shape[1:]}, expected {tuple(item_shape)}")
  return array


def write_idx_gz(path: str | Path, array: np.ndarray) -> None:
  """Writes a uint8 array as a gzipped IDX file (for tests and custom data sets)."""
  array = np.ascontiguousarray(array, dtype=np.uint8)
  header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.tobytes())
