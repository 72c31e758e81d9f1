import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtricks import langevin, replay


def quadratic(x):
  """U(x) = |x|^2 / 2 per chain: the standard normal."""
  return 0.5 * jnp.sum(x.reshape(x.shape[0], -1) ** 2, axis=-1)


def test_step_matches_formula():
  x = jnp.array([[0.5, -1.0], [2.0, 0.1]])
  key = jax.random.PRNGKey(0)
  noise = jax.random.normal(key, x.shape)
  got = langevin.langevin_step(quadratic, x, key, step_size=0.04, data_range=None)
  np.testing.assert_allclose(got, x - 0.02 * x + 0.2 * noise, rtol=1e-6)
  got = langevin.langevin_step(quadratic, x, key, step_size=20.0, noise_scale=0.005, grad_clip=0.01,
                               data_range=(0.0, 1.0))
  np.testing.assert_allclose(got, jnp.clip(x - 10.0 * jnp.clip(x, -0.01, 0.01) + 0.005 * noise, 0, 1), rtol=1e-6)


def test_chain_samples_the_target():
  """Langevin on N(0, 1) from far away ends near N(0, 1): mean ~ 0, variance ~ 1 (small step bias)."""
  x0 = jnp.full((4000, 1), 5.0)
  chain = jax.jit(lambda x, k: langevin.langevin_chain(quadratic, x, k, num_steps=400, step_size=0.05,
                                                       data_range=None))
  x = chain(x0, jax.random.PRNGKey(1))
  assert abs(float(x.mean())) < 0.1
  assert abs(float(x.var()) - 1 / (1 - 0.05 / 4)) < 0.1     # stationary variance of the discretized chain


def test_chains_are_independent():
  """A chain's path does not depend on the other chains in the batch."""
  def energy(x):   # a small non-linear net
    w = jnp.linspace(-1, 1, x.shape[-1]).reshape((1,) * (x.ndim - 1) + (-1,))
    return jnp.sum(jnp.tanh(x * w) ** 2 + 0.1 * x ** 2, axis=-1)
  x0 = jax.random.uniform(jax.random.PRNGKey(0), (6, 5))
  key = jax.random.PRNGKey(3)
  kw = dict(num_steps=10, step_size=0.01)
  together = langevin.langevin_chain(energy, x0, key, **kw)
  changed = langevin.langevin_chain(energy, x0.at[1:].set(0.9), key, **kw)
  np.testing.assert_allclose(together[0], changed[0], rtol=1e-6)
  # vmap over single chains gives the same as the batched gradient
  g_batched = jax.grad(lambda v: energy(v).sum())(x0)
  g_vmapped = jax.vmap(jax.grad(lambda v: energy(v[None])[0]))(x0)
  np.testing.assert_allclose(g_batched, g_vmapped, rtol=1e-6)


def test_trace_and_unroll():
  x0 = jnp.zeros((2, 3))
  key = jax.random.PRNGKey(0)
  x, trace = langevin.langevin_chain(quadratic, x0, key, num_steps=5, step_size=0.1, return_trace=True)
  chex.assert_shape(trace, (5, 2, 3))
  np.testing.assert_array_equal(trace[-1], x)
  assert float(x.min()) >= 0 and float(x.max()) <= 1
  unrolled = langevin.langevin_chain(quadratic, x0, key, num_steps=5, step_size=0.1, unroll=True)
  np.testing.assert_allclose(unrolled, x, rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.uint8])
def test_replay_push_and_sample(dtype):
  buf = replay.create(5, (2,), dtype=dtype)
  first = replay.sample(buf, jax.random.PRNGKey(0), 4, reinit_prob=0.0)
  assert float(first.min()) >= 0 and float(first.max()) <= 1    # empty buffer: noise
  items = jnp.array([[0.0, 0.2], [0.4, 0.6], [0.8, 1.0]])
  buf = jax.jit(replay.push)(buf, items)
  assert int(buf.count) == 3 and int(buf.pointer) == 3
  drawn = jax.jit(replay.sample, static_argnums=2)(buf, jax.random.PRNGKey(1), 200)
  tol = 1 / 255 if dtype == jnp.uint8 else 1e-7
  dist = jnp.abs(drawn[:, None, :] - items[None]).max(-1).min(-1)
  assert int((dist <= tol).sum()) >= 180          # ~95% from the buffer, within quantization
  assert int((dist <= tol).sum()) < 200           # and some fresh noise (reinit 0.05)
  buf = replay.push(buf, items)                   # wraps: 6 pushes into 5 slots
  assert int(buf.count) == 5 and int(buf.pointer) == 1
  np.testing.assert_allclose(replay._decode(buf, buf.data[0]), items[2], atol=tol)


def test_replay_errors():
  with pytest.raises(ValueError, match="capacity must be positive"):
    replay.create(0, (2,))
  with pytest.raises(ValueError, match="does not fit"):
    replay.push(replay.create(2, (1,)), jnp.zeros((3, 1)))
