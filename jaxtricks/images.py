"""Image grids as PNG files, and samples exported for the standard FID/KID tools."""

from pathlib import Path

import jax
import numpy as np
from PIL import Image

from jaxtricks.errors import ConfigError


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


# Samples for the standard Inception FID/KID tools (pytorch-fid, clean-fid, torch-fidelity): 3-channel uint8 images,
# as PNG files in one folder (what all three read) or one .npz.
EXPORT_FORMATS = ("png", "npz")
NPZ_KEY = "arr_0"   # np.savez's name for a positional array: the key OpenAI guided-diffusion's evaluator reads


def to_uint8_rgb(images_NHWC) -> np.ndarray:
  """[N, H, W, 1 or 3] images -> uint8 [N, H, W, 3], in the project's one image convention (metrics.net_input's):
  uint8 0..255 as they are, floats in [0, 1] as round(255 x) (numpy's rounding, as `grid` and the uint8 replay
  buffer), so that x = u / 255 reads them back exactly. One channel (grey) is repeated into three equal ones.
  ValueError for another shape, dtype (ints other than uint8, bool), a NaN/inf or a float outside [0, 1] (map
  [-1, 1] by (x + 1) / 2 first)."""
  x = np.asarray(images_NHWC)
  if x.ndim != 4 or x.shape[-1] not in (1, 3):
    raise ValueError(f"to_uint8_rgb: images must be [N, H, W, 1 or 3], got shape {x.shape}")
  if x.dtype != np.uint8:
    if not np.issubdtype(x.dtype, np.floating):
      raise ValueError(f"to_uint8_rgb: images of dtype {x.dtype}; give uint8 (0..255) or floats in [0, 1]")
    if not np.isfinite(x).all():
      raise ValueError(f"to_uint8_rgb: {int((~np.isfinite(x)).sum())} pixel values are NaN or infinite")
    if x.size and (x.min() < 0 or x.max() > 1):
      raise ValueError(f"to_uint8_rgb: float images must be in [0, 1], got values in [{x.min():.4g}, "
                       f"{x.max():.4g}]; map [-1, 1] by (x + 1) / 2")
    x = np.round(x.astype(np.float64) * 255).astype(np.uint8)
  return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def export_path(folder: str | Path, name: str, fmt: str) -> Path:
  """Where `write_export` puts the set `name`: folder/name/ (PNG files) or folder/name.npz."""
  return Path(folder) / (name if fmt == "png" else f"{name}.npz")


def check_export(folder: str | Path, names: tuple[str, ...], fmt: str, *, setting: str = "export_dir") -> None:
  """ConfigError (naming `setting`) unless the sets `names` can be written into `folder` in format `fmt`: the
  folder is no file, and no set is there already (the tools read every image of a folder, so an old export would
  mix into the new one)."""
  if fmt not in EXPORT_FORMATS:
    raise ConfigError("export_format", f"must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
  folder = Path(folder)
  for parent in (folder, *folder.parents):
    if parent.exists() and not parent.is_dir():
      raise ConfigError(setting, f"{folder}: {parent} is a file, not a folder; give a folder for the export")
  for name in names:
    target = export_path(folder, name, fmt)
    if target.is_dir() and any(target.iterdir()) or target.is_file():
      raise ConfigError(setting, f"{folder}: {target.name} is there already; choose another folder or remove it "
                        "(an export never mixes with an old one)")


def write_export(images_NHWC, folder: str | Path, name: str, fmt: str, *, setting: str = "export_dir") -> Path:
  """Writes images (`to_uint8_rgb`'s input) as the set `name` of `folder`: fmt "png", folder/name/000000.png, ...
  (RGB, one file per image, numbered in order), the layout pytorch-fid, clean-fid and torch-fidelity read; fmt
  "npz", folder/name.npz holding one uint8 array [N, H, W, 3] under NPZ_KEY. Returns the path written. ConfigError
  (naming `setting`) when the folder cannot take it (`check_export`) or cannot be written. In a multi-process run
  only process 0 writes."""
  x = to_uint8_rgb(images_NHWC)
  check_export(folder, (name,), fmt, setting=setting)
  target = export_path(folder, name, fmt)
  if jax.process_index() != 0:
    return target
  try:
    if fmt == "png":
      target.mkdir(parents=True, exist_ok=True)
      digits = max(6, len(str(len(x) - 1)))
      for i, img in enumerate(x):
        Image.fromarray(img).save(target / f"{i:0{digits}d}.png")
    else:
      target.parent.mkdir(parents=True, exist_ok=True)
      partial = target.with_name(target.name + ".partial")
      with open(partial, "wb") as f:
        np.savez(f, **{NPZ_KEY: x})
      partial.replace(target)   # whole or absent
  except OSError as e:
    raise ConfigError(setting, f"{folder}: cannot write {target.name} there ({e.strerror or e})") from None
  return target
