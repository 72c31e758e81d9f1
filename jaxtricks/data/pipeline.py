"""Batches gathered on the accelerator: the whole split lives on device, each step takes a slice of a
permutation made from `fold_in(key, epoch)` (of a sub-key of the data key), so the batch for step s is a pure function of (key, s) and
no host-to-device copy happens per step. Augmentations are jittable pure functions of (key, batch).
With a mesh (jaxtricks.parallel) the split is replicated on every device and each batch comes out sharded
along 'data': each device gathers and augments only its own rows.
"""

import functools
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

Batch = dict[str, jax.Array]


def epoch_permutation(key: jax.Array, epoch: int | jax.Array, num_examples: int) -> jax.Array:
  """The order of the examples in `epoch`: a permutation of range(num_examples) from fold_in(key, epoch)."""
  return jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)


def take(data: Batch, indices_B: jax.Array) -> Batch:
  """Gathers the examples at `indices_B` from every array of `data`."""
  return jax.tree.map(lambda a: jnp.take(a, indices_B, axis=0), data)


def random_flip(key: jax.Array, x_BHWC: jax.Array) -> jax.Array:
  """Flips each image left-right with probability 1/2."""
  flip_B = jax.random.bernoulli(key, 0.5, (x_BHWC.shape[0],))
  return jnp.where(flip_B[:, None, None, None], x_BHWC[:, :, ::-1, :], x_BHWC)


def random_crop(key: jax.Array, x_BHWC: jax.Array, *, pad: int = 4) -> jax.Array:
  """Pads each image by `pad` zeros on every side and crops a random window of the original size (dm-pix's
  pad_to_size and random_crop, one key per image): the translation augmentation of the CIFAR/Fashion-MNIST
  ResNet recipes."""
  import dm_pix as pix
  b, h, w, c = x_BHWC.shape
  padded = jax.vmap(lambda x: pix.pad_to_size(x, h + 2 * pad, w + 2 * pad))(x_BHWC)
  return jax.vmap(lambda k, x: pix.random_crop(k, x, (h, w, c)))(jax.random.split(key, b), padded)


def rotate_shift(x_BHWC: jax.Array, angle_B: jax.Array, shift_B2: jax.Array) -> jax.Array:
  """Rotates each image about its centre by angle_B radians (counter-clockwise as displayed: 90 degrees is
  np.rot90) and then shifts it by shift_B2 pixels (rows down, columns right); bilinear, zero fill. dm-pix's
  affine_transform pulls: output pixel o reads the input at R^-1 (o - c - s) + c."""
  import dm_pix as pix
  _, h, w, _ = x_BHWC.shape
  centre = jnp.array([(h - 1) / 2, (w - 1) / 2, 0.0])

  def one(x_HWC, angle, shift_2):
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    inverse = jnp.array([[cos, sin, 0.0], [-sin, cos, 0.0], [0.0, 0.0, 1.0]])   # R^-1 on (row, col, channel)
    offset = centre - inverse @ (centre + jnp.append(shift_2, 0.0))
    return pix.affine_transform(x_HWC, inverse, offset=offset, order=1, mode="constant", cval=0.0)

  return jax.vmap(one)(x_BHWC, angle_B, shift_B2)


def random_rotate_shift(key: jax.Array, x_BHWC: jax.Array, *, max_degrees: float = 20.0,
                        max_shift: float = 0.2) -> jax.Array:
  """`rotate_shift` by U(-max_degrees, max_degrees) and U(-max_shift, max_shift) of the height and width, one
  draw per image: the EXACT authors' MNIST augmentation (github ivan-chai/exact, mdn-metric's dataset configs:
  rotation_max_angle 20, translate_ratios 0.2; torchvision's RandomRotation, then RandomAffine's translation)."""
  b, h, w, _ = x_BHWC.shape
  k_angle, k_shift = jax.random.split(key)
  angle_B = jnp.deg2rad(jax.random.uniform(k_angle, (b,), minval=-max_degrees, maxval=max_degrees))
  shift_B2 = jax.random.uniform(k_shift, (b, 2), minval=-max_shift, maxval=max_shift) * jnp.array([[h, w]])
  return rotate_shift(x_BHWC, angle_B, shift_B2)


def random_erasing(key: jax.Array, x_BHWC: jax.Array, *, prob: float = 0.5, area=(0.02, 0.4),
                   aspect=(0.3, 3.3)) -> jax.Array:
  """Random Erasing (Zhong et al. 2017, arXiv 1708.04896): with probability `prob` an image gets one rectangle of
  area fraction U(area) and aspect ratio log-uniform in `aspect` (clipped to the image) filled with uniform noise
  in [0, 1]. Written here as masks (dm-pix has no erasing); the paper's Fashion-MNIST setting is the default."""
  b, h, w, c = x_BHWC.shape
  k_apply, k_area, k_aspect, k_y, k_x, k_fill = jax.random.split(key, 6)
  frac = jax.random.uniform(k_area, (b,), minval=area[0], maxval=area[1])
  ratio = jnp.exp(jax.random.uniform(k_aspect, (b,), minval=jnp.log(aspect[0]), maxval=jnp.log(aspect[1])))
  eh = jnp.clip(jnp.round(jnp.sqrt(frac * h * w * ratio)), 1, h).astype(jnp.int32)
  ew = jnp.clip(jnp.round(jnp.sqrt(frac * h * w / ratio)), 1, w).astype(jnp.int32)
  y0 = jnp.floor(jax.random.uniform(k_y, (b,)) * (h - eh + 1)).astype(jnp.int32)
  x0 = jnp.floor(jax.random.uniform(k_x, (b,)) * (w - ew + 1)).astype(jnp.int32)
  rows, cols = jnp.arange(h)[None, :], jnp.arange(w)[None, :]
  inside_BH = (rows >= y0[:, None]) & (rows < (y0 + eh)[:, None])
  inside_BW = (cols >= x0[:, None]) & (cols < (x0 + ew)[:, None])
  mask = inside_BH[:, :, None, None] & inside_BW[:, None, :, None]
  mask &= jax.random.bernoulli(k_apply, prob, (b,))[:, None, None, None]
  return jnp.where(mask, jax.random.uniform(k_fill, x_BHWC.shape, x_BHWC.dtype), x_BHWC)


def to_float(x_BHWC: jax.Array) -> jax.Array:
  """uint8 [0, 255] -> float32 [0, 1]."""
  return x_BHWC.astype(jnp.float32) / 255.0


def resize_rgb(x_BHWC: jax.Array, size: int) -> jax.Array:
  """Bilinear resize to size x size and grey -> 3 channels (docs/techniques.md#mobilenet: MobileNet sees 56x56x3)."""
  b, _, _, c = x_BHWC.shape
  x = jax.image.resize(x_BHWC, (b, size, size, c), method="bilinear")
  return jnp.broadcast_to(x, (b, size, size, 3)) if c == 1 else x


class DeviceBatches:
  """Batch iterator over one split kept on device.

  `batches(step)` returns the batch of global step `step`: the epoch's permutation is made once per epoch
  (jitted, on device) and each batch is gathered inside one jitted call together with `transform`
  (a pure `transform(key, batch) -> batch`, e.g. flips and resizing). The last partial batch of an epoch
  is dropped, so every step has the same shape and compiles once. With `mesh`, batches are sharded along its
  'data' axis (the batch size must divide by the mesh size) and the values do not depend on the mesh.
  """

  def __init__(self, data: Batch, *, batch_size: int, key: jax.Array,
               transform: Callable[[jax.Array, Batch], Batch] | None = None, mesh: Mesh | None = None):
    sizes = {a.shape[0] for a in jax.tree.leaves(data)}
    if len(sizes) != 1:
      raise ValueError(f"arrays of different lengths: {sizes}")
    self.num_examples = sizes.pop()
    if not 0 < batch_size <= self.num_examples:
      raise ValueError(f"batch size {batch_size} must be in [1, {self.num_examples}] (the split's size)")
    self.batch_size = batch_size
    self.steps_per_epoch = self.num_examples // batch_size
    if mesh is not None and batch_size % mesh.size:
      raise ValueError(f"batch size {batch_size} does not divide by the mesh's {mesh.size} devices")
    replicated = {} if mesh is None else {"out_shardings": NamedSharding(mesh, P())}
    sharded = {} if mesh is None else {"out_shardings": NamedSharding(mesh, P("data"))}
    self.data = jax.device_put(data, replicated.get("out_shardings"))
    self._perm_key, self._transform_key = jax.device_put(tuple(jax.random.split(key)),
                                                         replicated.get("out_shardings"))
    self._permutation = jax.jit(epoch_permutation, static_argnums=2, **replicated)
    self._gather = jax.jit(functools.partial(_gather, transform=transform, batch_size=batch_size,
                                             steps_per_epoch=self.steps_per_epoch), **sharded)
    self._epoch, self._perm = None, None

  def __call__(self, step: int) -> Batch:
    epoch = int(step) // self.steps_per_epoch
    if epoch != self._epoch:
      self._epoch, self._perm = epoch, self._permutation(self._perm_key, epoch, self.num_examples)
    return self._gather(self.data, self._perm, step, self._transform_key)


def _gather(data: Batch, perm: jax.Array, step: jax.Array, key: jax.Array, *,
            transform: Any, batch_size: int, steps_per_epoch: int) -> Batch:
  index = step % steps_per_epoch
  indices_B = jax.lax.dynamic_slice_in_dim(perm, index * batch_size, batch_size)
  batch = take(data, indices_B)
  return transform(jax.random.fold_in(key, step), batch) if transform is not None else batch


def eval_batches(data: Batch, *, batch_size: int):
  """Yields (batch, mask_B) covering every example once; the last batch is padded and masked."""
  n = jax.tree.leaves(data)[0].shape[0]
  for start in range(0, n, batch_size):
    idx = jnp.arange(start, start + batch_size)
    mask = idx < n
    batch = take(data, jnp.minimum(idx, n - 1))
    chex.assert_shape(mask, (batch_size,))
    yield batch, mask
