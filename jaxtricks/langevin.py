"""Langevin dynamics for energy-based models (docs/techniques.md#ebm; Su, kexue.fm/archives/6612; Du & Mordatch 2019).

    x_{t+1} = clip( x_t - (step_size / 2) * clip(grad_x U(x_t), +-grad_clip) + noise_scale * alpha,  data_range ),
    alpha ~ N(0, I)

`noise_scale=None` is the seed's coupling sqrt(step_size) (true Langevin dynamics with epsilon = step_size);
the official code's decoupled setting "step 10, noise 0.005, gradient clip 0.01" is step_size=20,
noise_scale=0.005, grad_clip=0.01. The chain is one `lax.scan` inside jit, carry (x, key). Chains are
independent: the gradient of the summed energy is each chain's own gradient, since U(x_i) depends on x_i only
(true for nets without cross-example layers such as BatchNorm in training mode).
"""

import numbers
from typing import Callable

import jax
import jax.numpy as jnp

EnergyFn = Callable[[jax.Array], jax.Array]   # x [B, ...] -> energies [B]


def _check_settings(*, step_size, noise_scale, grad_clip, data_range) -> None:
  """The static settings of a chain (Python numbers): ValueError naming the argument. Traced values pass."""
  def known(v):
    return isinstance(v, (int, float))
  if known(step_size) and not step_size > 0:
    raise ValueError(f"langevin: step_size must be positive, got {step_size}")
  if known(noise_scale) and not noise_scale >= 0:
    raise ValueError(f"langevin: noise_scale must be >= 0 (or None: sqrt(step_size)), got {noise_scale}")
  if known(grad_clip) and not grad_clip > 0:
    raise ValueError(f"langevin: grad_clip must be positive (or None: no clip), got {grad_clip}")
  if data_range is not None and not (len(data_range) == 2 and data_range[0] < data_range[1]):
    raise ValueError(f"langevin: data_range must be (low, high) with low < high (or None), got {data_range}")


def langevin_step(energy_fn: EnergyFn, x: jax.Array, key: jax.Array, *, step_size: float,
                  noise_scale: float | None = None, grad_clip: float | None = None,
                  data_range: tuple[float, float] | None = (0.0, 1.0)) -> jax.Array:
  """One Langevin step for a batch of independent chains."""
  _check_settings(step_size=step_size, noise_scale=noise_scale, grad_clip=grad_clip, data_range=data_range)
  grad = jax.grad(lambda v: energy_fn(v).sum())(x)
  if grad_clip is not None:
    grad = jnp.clip(grad, -grad_clip, grad_clip)
  scale = jnp.sqrt(step_size) if noise_scale is None else noise_scale
  x = x - 0.5 * step_size * grad + scale * jax.random.normal(key, x.shape, x.dtype)
  if data_range is not None:
    x = jnp.clip(x, *data_range)
  return x


def langevin_chain(energy_fn: EnergyFn, x0: jax.Array, key: jax.Array, *, num_steps: int, step_size: float,
                   noise_scale: float | None = None, grad_clip: float | None = None,
                   data_range: tuple[float, float] | None = (0.0, 1.0), return_trace: bool = False,
                   unroll: int | bool = 1):
  """`num_steps` Langevin steps from x0 in one lax.scan; returns x_K (and the trace [K, ...] if asked).

  `unroll` is lax.scan's: N > 1 compiles a while loop over blocks of N unrolled steps, then the K mod N steps
  left unrolled (at most 2N - 1 steps compiled; N >= K: the whole chain unrolled, no loop); True unrolls all K.
  On XLA:CPU a loop body loses intra-op parallelism (docs/techniques.md#xla-cpu-loops), whatever its N; an
  unrolled chain compiles in a time that grows faster than K (`ebm.default_unroll`). The steps, and their keys,
  are the same for every `unroll`.
  `num_steps` >= 1 and `unroll` (True, False or an integer >= 1) are checked: ValueError naming them.
  """
  if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral) or num_steps < 1:
    raise ValueError(f"langevin_chain: num_steps must be a positive integer, got {num_steps!r}")
  if not isinstance(unroll, bool) and not (isinstance(unroll, numbers.Integral) and unroll >= 1):
    raise ValueError(f"langevin_chain: unroll must be True, False or an integer >= 1, got {unroll!r}")
  _check_settings(step_size=step_size, noise_scale=noise_scale, grad_clip=grad_clip, data_range=data_range)
  def body(carry, _):
    x, k = carry
    k, sub = jax.random.split(k)
    x = langevin_step(energy_fn, x, sub, step_size=step_size, noise_scale=noise_scale, grad_clip=grad_clip,
                      data_range=data_range)
    return (x, k), (x if return_trace else None)

  (x, _), trace = jax.lax.scan(body, (x0, key), None, length=num_steps, unroll=unroll)
  return (x, trace) if return_trace else x
