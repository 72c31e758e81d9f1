"""Image grids as PNG files."""

from pathlib import Path

import jax
import numpy as np
from PIL import Image


def grid(images_NHWC, *, ncol: int | None = None, pad: int = 1) -> np.ndarray:
  """Tiles N images (values in [0, 1]) into one uint8 array [rows*(H+pad), ncol*(W+pad), C]."""
  x = np.clip(np.asarray(images_NHWC, np.float32), 0, 1)
  n, h, w, c = x.shape
  ncol = ncol or int(np.ceil(np.sqrt(n)))
  nrow = int(np.ceil(n / ncol))
  out = np.ones((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), np.float32)
  for i in range(n):
    r, k = divmod(i, ncol)
    out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = x[i]
  return (out * 255).round().astype(np.uint8)


def save_grid(images_NHWC, path: str | Path, *, ncol: int | None = None, scale: int = 2) -> Path:
  """Writes a PNG grid of images in [0, 1]; returns the path. In a multi-process run only process 0 writes."""
  path = Path(path)
  if jax.process_index() != 0:
    return path
  g = grid(images_NHWC, ncol=ncol)
  img = Image.fromarray(g[..., 0] if g.shape[-1] == 1 else g)
  if scale != 1:
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
  path.parent.mkdir(parents=True, exist_ok=True)
  img.save(path)
  return path


def png_bits(images_NHWC) -> np.ndarray:
  """Length in bits of each uint8 image as a PNG at maximum compression: the generic compressor's code length
  L(x) of Serra et al. 2020 (ebm.complexity_corrected_score)."""
  import io
  x = np.asarray(images_NHWC)
  if x.dtype != np.uint8:
    x = (np.clip(x, 0, 1) * 255).round().astype(np.uint8)
  bits = np.empty(len(x))
  for i, img in enumerate(x):
    buf = io.BytesIO()
    Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, format="PNG", optimize=True)
    bits[i] = 8 * buf.tell()
  return bits
