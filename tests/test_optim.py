"""EXACT's optimizer pieces (jaxtricks.optim) against hand-computed values."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtricks import optim


def test_sigma_schedule_is_geometric_from_init_to_final():
  sigma = optim.exact_sigma_schedule(init_sigma=10.0, final_sigma=1.0, transition_steps=100)
  np.testing.assert_allclose([float(sigma(t)) for t in (0, 50, 100, 200)], [10.0, np.sqrt(10.0), 1.0, 1.0],
                             rtol=1e-6)
  np.testing.assert_allclose(float(sigma(25)), 10.0 * 0.1 ** 0.25, rtol=1e-6)   # geometric, not linear
  with pytest.raises(ValueError):
    optim.exact_sigma_schedule(init_sigma=10.0, final_sigma=0.0, transition_steps=10)


def test_gradient_normalizer_divides_by_the_moving_norm():
  tx = optim.gradient_normalizer(clip=0.01, momentum=0.9)
  params = {"a": jnp.zeros(2), "b": jnp.zeros(())}
  state = tx.init(params)
  g1 = {"a": jnp.array([3.0, 0.0]), "b": jnp.array(4.0)}           # norm 5: m = 5 on the first step
  u1, state = tx.update(g1, state)
  chex.assert_trees_all_close(u1, {"a": jnp.array([0.6, 0.0]), "b": jnp.array(0.8)}, rtol=1e-6)
  g2 = {"a": jnp.array([1.0, 0.0]), "b": jnp.array(0.0)}           # norm 1: m = 0.9 * 5 + 0.1 * 1 = 4.6
  u2, state = tx.update(g2, state)
  chex.assert_trees_all_close(u2, {"a": jnp.array([1 / 4.6, 0.0]), "b": jnp.array(0.0)}, rtol=1e-6)
  np.testing.assert_allclose(float(state.mean_norm), 4.6, rtol=1e-6)
  assert int(state.count) == 2


def test_gradient_normalizer_floor_and_jit():
  tx = optim.gradient_normalizer(clip=0.01)
  g = {"a": jnp.array([1e-4, 0.0])}                                 # m = 1e-4 < clip: divided by 0.01
  u, _ = jax.jit(tx.update)(g, tx.init(g))
  np.testing.assert_allclose(np.asarray(u["a"]), [1e-2, 0.0], rtol=1e-6)


def test_gradient_normalizer_chains_with_sgd():
  tx = optax.chain(optim.gradient_normalizer(), optax.sgd(0.5))
  params = jnp.array([1.0, 2.0])
  updates, _ = tx.update(jnp.array([0.0, 10.0]), tx.init(params), params)
  np.testing.assert_allclose(np.asarray(updates), [0.0, -0.5], rtol=1e-6)   # unit-norm gradient times lr
