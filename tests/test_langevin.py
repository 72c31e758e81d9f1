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


def tiny_energy(x):
  """A small non-linear energy: its gradient changes along the chain, unlike the quadratic's."""
  w = jnp.linspace(-2, 2, x.shape[-1]).reshape((1,) * (x.ndim - 1) + (-1,))
  return jnp.sum(jnp.tanh(x * w) ** 2 + 0.1 * x ** 2, axis=-1)


def test_a_chain_longer_than_its_unroll_block_is_the_same_chain():
  """A loop of blocks of N unrolled steps plus the K mod N left (ebm.default_unroll's form on a CPU, N = 20) runs
  the plain scan's chain and the fully unrolled one, trace included; where the block covers the chain it compiles
  the fully unrolled program itself: the same bits. (The fully unrolled chain is kept short: its compile time
  grows faster than its length, 35 s for 45 steps of this energy on a busy 2-core VM.)"""
  x0 = jax.random.uniform(jax.random.PRNGKey(0), (4, 5))
  key = jax.random.PRNGKey(1)

  def chain(unroll, num_steps, return_trace=False):
    return jax.jit(lambda x, k: langevin.langevin_chain(tiny_energy, x, k, num_steps=num_steps, step_size=0.02,
                                                        unroll=unroll, return_trace=return_trace))

  x = chain(20, 70)(x0, key)                       # 3 blocks of 20, then 10
  np.testing.assert_allclose(x, chain(1, 70)(x0, key), rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(x - x0).min()) > 1e-3       # it moved
  x, trace = chain(5, 13, True)(x0, key)           # 2 blocks of 5, then 3
  chex.assert_shape(trace, (13, 4, 5))
  np.testing.assert_array_equal(trace[-1], x)
  for unroll in (1, True):
    x_other, trace_other = chain(unroll, 13, True)(x0, key)
    np.testing.assert_allclose(x_other, x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(trace_other, trace, rtol=1e-5, atol=1e-6)
  lowered = lambda unroll: chain(unroll, 20).lower(x0, key).as_text()
  assert lowered(20) == lowered(60) == lowered(True)
  np.testing.assert_array_equal(chain(20, 20)(x0, key), chain(True, 20)(x0, key))


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


def test_chains_reach_the_mean_and_covariance_of_a_2d_gaussian():
  """U(x) = 1/2 (x - m)^T A (x - m): the discretized chain x' = x - (h/2) A (x - m) + sqrt(h) xi is stationary at
  mean m with covariance (A (I - h A / 4))^-1 (-> A^-1 as h -> 0); 20,000 chains, 1,000 steps from one point
  (the slow mode contracts by 1 - h lambda_min / 2 = 0.987 a step: e^-13 of the start is left)."""
  a = np.array([[2.0, 0.8], [0.8, 1.0]])
  m = np.array([1.0, -2.0])
  h = 0.05
  m_1D = jnp.asarray(m, jnp.float32)[None, :]
  energy = lambda x: 0.5 * jnp.einsum("bi,ij,bj->b", x - m_1D, jnp.asarray(a, jnp.float32), x - m_1D)
  x = jax.jit(lambda k: langevin.langevin_chain(energy, jnp.zeros((20000, 2)), k, num_steps=1000, step_size=h,
                                                data_range=None))(jax.random.PRNGKey(7))
  x = np.asarray(x, np.float64)
  cov = np.linalg.inv(a @ (np.eye(2) - h * a / 4))
  n = len(x)
  se_mean = np.sqrt(np.diag(cov) / n)
  assert np.all(np.abs(x.mean(0) - m) < 4 * se_mean), (x.mean(0), m)
  np.testing.assert_allclose(np.cov(x, rowvar=False), cov, atol=4 * np.sqrt(2 / n) * np.abs(cov).max())
  # and not A^-1 with any other step-size bias: the off-diagonal term is resolved
  assert abs(np.cov(x, rowvar=False)[0, 1] - cov[0, 1]) < 0.02


def test_replay_reinit_fraction_is_five_percent():
  n = 20000
  buf = replay.push(replay.create(8, (3,), dtype=jnp.float32), jnp.full((8, 3), 0.5))
  drawn = replay.sample(buf, jax.random.PRNGKey(11), n, reinit_prob=0.05)
  fresh = float(jnp.mean(jnp.any(drawn != 0.5, axis=-1)))
  sigma = np.sqrt(0.05 * 0.95 / n)
  assert abs(fresh - 0.05) < 3 * sigma, fresh
  assert buf.data.shape[0] == 8 and int(buf.count) == 8


def test_replay_latest_returns_the_newest_items_first_across_the_wrap():
  buf = replay.create(4, (1,), dtype=jnp.float32)
  assert replay.latest(buf, 3).shape == (0, 1)
  buf = replay.push(buf, jnp.array([[0.1], [0.2], [0.3]]))
  buf = replay.push(buf, jnp.array([[0.4], [0.5]]))                # wraps: slot 0 now holds 0.5
  np.testing.assert_allclose(replay.latest(buf, 3)[:, 0], [0.5, 0.4, 0.3], rtol=1e-6)
  np.testing.assert_allclose(replay.latest(buf, 10)[:, 0], [0.5, 0.4, 0.3, 0.2], rtol=1e-6)


def test_replay_keep_latest_keeps_what_latest_reads_across_the_wrap():
  buf = replay.push(replay.create(4, (1,), dtype=jnp.float32), jnp.array([[0.1], [0.2], [0.3]]))
  buf = replay.push(buf, jnp.array([[0.4], [0.5]]))                # wraps: slot 0 holds 0.5
  kept = replay.keep_latest(buf, 3)
  assert kept.data.shape == (3, 1) and int(kept.count) == 3
  for k in (1, 2, 3, 10):
    np.testing.assert_array_equal(replay.latest(kept, k), replay.latest(buf, min(k, 3)))
  assert replay.keep_latest(buf, 10).data.shape == (4, 1)           # no more than it holds
  kept = replay.push(kept, jnp.array([[0.9]]))                     # a full buffer: the oldest kept item goes
  np.testing.assert_allclose(replay.latest(kept, 3)[:, 0], [0.9, 0.5, 0.4], rtol=1e-6)
  with pytest.raises(ValueError, match="holds no items"):
    replay.keep_latest(replay.create(4, (1,)), 2)


@pytest.mark.parametrize("settings, words", [
    (dict(num_steps=-3), "num_steps must be a positive integer, got -3"),   # returned x0 before
    (dict(num_steps=0), "num_steps must be a positive integer, got 0"),
    (dict(num_steps=2.5), "num_steps must be a positive integer, got 2.5"),
    (dict(step_size=0.0), "step_size must be positive"),
    (dict(step_size=-1.0), "step_size must be positive"),
    (dict(noise_scale=-0.1), "noise_scale must be >= 0"),
    (dict(grad_clip=0.0), "grad_clip must be positive"),
    (dict(data_range=(1.0, 0.0)), r"data_range must be \(low, high\) with low < high"),
    (dict(unroll=0), "unroll must be True, False or an integer >= 1, got 0"),
])
def test_chain_refuses_bad_settings(settings, words):
  args = {"num_steps": 2, "step_size": 0.1, **settings}
  with pytest.raises(ValueError, match=words):
    langevin.langevin_chain(quadratic, jnp.zeros((2, 3)), jax.random.PRNGKey(0), **args)


def test_replay_refuses_bad_arguments():
  buffer = replay.create(4, (2,))
  with pytest.raises(ValueError, match=r"push: items of shape \(3,\), the buffer holds \(2,\)"):
    replay.push(buffer, jnp.zeros((1, 3)))   # broadcast silently into the slots before
  with pytest.raises(ValueError, match="sample: batch_size must be a positive integer, got 0"):
    replay.sample(buffer, jax.random.PRNGKey(0), 0)
  with pytest.raises(ValueError, match=r"reinit_prob must be in \[0, 1\], got 1.5"):
    replay.sample(buffer, jax.random.PRNGKey(0), 2, reinit_prob=1.5)
  with pytest.raises(ValueError, match="latest: n must be an integer >= 0, got -1"):
    replay.latest(buffer, -1)
  with pytest.raises(ValueError, match="data_range must be"):
    replay.create(4, (2,), data_range=(0.0, 0.0))
