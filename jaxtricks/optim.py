"""Optimizer pieces of EXACT's published recipe (Karpukhin et al. 2022; their code github ivan-chai/exact), as optax
objects: the gradient normalizer and the sigma schedule (docs/techniques.md#exact).

    tx = optax.chain(optim.gradient_normalizer(clip=0.01, momentum=0.9), optax.sgd(lr, momentum=0.9))
    sigma = optim.exact_sigma_schedule(init_sigma=10.0, final_sigma=1.0, transition_steps=total_steps)
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class GradientNormalizerState(NamedTuple):
  count: jax.Array        # updates seen
  mean_norm: jax.Array    # m: the moving average of the global gradient norm


def gradient_normalizer(*, clip: float = 0.01, momentum: float = 0.9) -> optax.GradientTransformation:
  """Divides the gradient by a moving average of its global L2 norm, instead of clipping it:

      n = ||g||;   m = n on the first step, then m <- momentum * m + (1 - momentum) * n   (this step's n included);
      g <- g / max(m, clip)

  The state (count, m) is an optax state like any other (checkpointed with the optimizer's)."""
  if not 0 < clip < float("inf"):
    raise ValueError(f"clip must be positive, got {clip}")
  if not 0 <= momentum < 1:
    raise ValueError(f"momentum must be in [0, 1), got {momentum}")

  def init(params):
    del params
    return GradientNormalizerState(count=jnp.zeros((), jnp.int32), mean_norm=jnp.zeros((), jnp.float32))

  def update(updates, state, params=None):
    del params
    norm = optax.global_norm(updates).astype(jnp.float32)
    m = jnp.where(state.count == 0, norm, momentum * state.mean_norm + (1 - momentum) * norm)
    scale = 1.0 / jnp.maximum(m, clip)
    updates = jax.tree.map(lambda g: (g * scale).astype(g.dtype), updates)
    return updates, GradientNormalizerState(count=state.count + 1, mean_norm=m)

  return optax.GradientTransformation(init, update)


def exact_sigma_schedule(*, init_sigma: float = 10.0, final_sigma: float = 1.0,
                         transition_steps: int) -> optax.Schedule:
  """sigma(step), geometric from init_sigma to final_sigma over transition_steps, then constant:

      sigma(t) = init * (final / init) ** min(t / T, 1)      (sigma(T / 2) = sqrt(init * final))

  The authors' code schedules the variance from 100 to 1 geometrically (per epoch there): sigma 10 -> 1."""
  if not (0 < init_sigma < float("inf") and 0 < final_sigma < float("inf")):
    raise ValueError(f"init_sigma and final_sigma must be positive and finite, got {init_sigma}, {final_sigma}")
  if transition_steps <= 0:
    raise ValueError(f"transition_steps must be positive, got {transition_steps}")
  log_init, log_ratio = jnp.log(init_sigma), jnp.log(final_sigma / init_sigma)

  def schedule(step):
    frac = jnp.clip(jnp.asarray(step, jnp.float32) / transition_steps, 0.0, 1.0)
    return jnp.exp(log_init + log_ratio * frac)
  return schedule
