"""A fixed-capacity replay buffer for Langevin chains as a pytree of arrays (docs/techniques.md#ebm).

`push` and `sample` are pure and run inside jit. A chain starts from a buffer sample with probability
1 - reinit_prob and from uniform noise otherwise (always noise while the buffer is empty). Items are stored as
float32, or as uint8 quantized over the data range (4x smaller, exact for images that are uint8 anyway).
"""

import numbers

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class ReplayBuffer:
  data: jax.Array            # [capacity, ...] float32 or uint8
  count: jax.Array           # items held, <= capacity
  pointer: jax.Array         # next slot to write (oldest item once full)
  data_range: tuple[float, float] = struct.field(pytree_node=False, default=(0.0, 1.0))


def create(capacity: int, item_shape: tuple[int, ...], *, dtype=jnp.float32,
           data_range: tuple[float, float] = (0.0, 1.0)) -> ReplayBuffer:
  if isinstance(capacity, bool) or not isinstance(capacity, numbers.Integral) or capacity <= 0:
    raise ValueError(f"capacity must be positive (an integer), got {capacity!r}")
  if not (len(data_range) == 2 and data_range[0] < data_range[1]):
    raise ValueError(f"data_range must be (low, high) with low < high, got {data_range}")
  if jnp.dtype(dtype) not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.uint8)):
    raise ValueError(f"dtype must be float32 or uint8, got {dtype}")
  return ReplayBuffer(data=jnp.zeros((capacity, *item_shape), dtype), count=jnp.zeros((), jnp.int32),
                      pointer=jnp.zeros((), jnp.int32), data_range=tuple(data_range))


def _encode(buffer: ReplayBuffer, x):
  if buffer.data.dtype == jnp.uint8:
    lo, hi = buffer.data_range
    return jnp.round((jnp.clip(x, lo, hi) - lo) / (hi - lo) * 255).astype(jnp.uint8)
  return x.astype(buffer.data.dtype)


def _decode(buffer: ReplayBuffer, stored):
  if buffer.data.dtype == jnp.uint8:
    lo, hi = buffer.data_range
    return stored.astype(jnp.float32) / 255 * (hi - lo) + lo
  return stored


def push(buffer: ReplayBuffer, x_B: jax.Array) -> ReplayBuffer:
  """Writes the batch at the pointer, overwriting the oldest items once full (ring buffer)."""
  capacity = buffer.data.shape[0]
  if x_B.shape[1:] != buffer.data.shape[1:]:
    raise ValueError(f"push: items of shape {x_B.shape[1:]}, the buffer holds {buffer.data.shape[1:]}")
  if x_B.shape[0] > capacity:
    raise ValueError(f"batch of {x_B.shape[0]} does not fit a buffer of {capacity}")
  idx = (buffer.pointer + jnp.arange(x_B.shape[0])) % capacity
  return buffer.replace(data=buffer.data.at[idx].set(_encode(buffer, x_B)),
                        count=jnp.minimum(buffer.count + x_B.shape[0], capacity),
                        pointer=(buffer.pointer + x_B.shape[0]) % capacity)


def uniform_noise(key: jax.Array, shape, data_range=(0.0, 1.0)) -> jax.Array:
  return jax.random.uniform(key, shape, jnp.float32, *data_range)


def sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int, *, reinit_prob: float = 0.05) -> jax.Array:
  """Starting points for `batch_size` chains: buffer items (uniform over those held) or fresh noise."""
  if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
    raise ValueError(f"sample: batch_size must be a positive integer, got {batch_size!r}")
  if isinstance(reinit_prob, (int, float)) and not 0 <= reinit_prob <= 1:
    raise ValueError(f"sample: reinit_prob must be in [0, 1], got {reinit_prob}")
  k_idx, k_noise, k_reinit = jax.random.split(key, 3)
  idx = jax.random.randint(k_idx, (batch_size,), 0, jnp.maximum(buffer.count, 1))
  stored = _decode(buffer, buffer.data[idx])
  noise = uniform_noise(k_noise, stored.shape, buffer.data_range)
  fresh = (jax.random.uniform(k_reinit, (batch_size,)) < reinit_prob) | (buffer.count == 0)
  return jnp.where(fresh.reshape((batch_size,) + (1,) * (stored.ndim - 1)), noise, stored)


def latest(buffer: ReplayBuffer, n: int) -> jax.Array:
  """The n most recently pushed items, newest first (fewer if the buffer holds fewer), decoded to floats.
  Reads count and pointer on the host: for grids and metrics outside jit."""
  if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
    raise ValueError(f"latest: n must be an integer >= 0, got {n!r}")
  count, pointer, capacity = int(buffer.count), int(buffer.pointer), buffer.data.shape[0]
  idx = (pointer - 1 - jnp.arange(min(n, count))) % capacity
  return _decode(buffer, buffer.data[idx])


def keep_latest(buffer: ReplayBuffer, n: int) -> ReplayBuffer:
  """A full buffer of capacity min(n, count) holding `buffer`'s n most recently pushed items: `latest(.., k)` of it
  gives what `latest(buffer, k)` gives for every k <= n (a pretrained EBM keeps these, not its whole buffer)."""
  if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
    raise ValueError(f"keep_latest: n must be an integer >= 1, got {n!r}")
  count, pointer, capacity = int(buffer.count), int(buffer.pointer), buffer.data.shape[0]
  if count == 0:
    raise ValueError("keep_latest: the buffer holds no items")
  k = min(n, count)
  idx_K = (pointer - k + jnp.arange(k)) % capacity   # oldest first: the new buffer's pointer wraps to slot 0
  return buffer.replace(data=buffer.data[idx_K], count=jnp.asarray(k, jnp.int32), pointer=jnp.zeros((), jnp.int32))
