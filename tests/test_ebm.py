import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtricks import ebm, replay
from jaxtricks.models.energy import EnergyNet

NET = EnergyNet(stem=4, stages=(4, 8))
SAMPLER = ebm.SamplerConfig(num_steps=3, step_size=20.0, noise_scale=0.005, grad_clip=0.01)


def test_contrastive_loss_value_and_sign():
  e_r, e_f = jnp.array([1.0, -1.0, 0.5]), jnp.array([2.0, 0.0])
  expected = np.mean([1, -1, 0.5]) - 1.0 + 0.5 * (np.mean([1, 1, 0.25]) + np.mean([4, 0]))
  np.testing.assert_allclose(ebm.contrastive_loss(e_r, e_f, reg=0.5), expected, rtol=1e-6)
  # the PLUS: larger fake energies beyond the optimum are penalized, not rewarded without bound
  f = lambda e: ebm.contrastive_loss(jnp.zeros(2), jnp.full(2, e), reg=1.0)
  assert float(f(100.0)) > float(f(0.5))


def test_energy_net_shapes_and_spectral_norm():
  variables = NET.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)), update_stats=True)
  energies = NET.apply(variables, jnp.ones((5, 28, 28, 1)))
  chex.assert_shape(energies, (5,))
  chex.assert_tree_all_finite(energies)
  assert any("SpectralNorm" in "/".join(map(str, p)) for p, _ in jax.tree_util.tree_leaves_with_path(variables["batch_stats"]))


def test_train_step_widens_the_gap_between_fakes_and_reals():
  tx = optax.sgd(1e-3)
  state = ebm.init(jax.random.PRNGKey(0), NET, (28, 28, 1), tx, buffer_size=64)
  x_real = jnp.zeros((8, 28, 28, 1)).at[:, 10:18, 10:18].set(1.0)
  new, m = jax.jit(functools.partial(ebm.train_step, sampler=SAMPLER, reg=0.0))(state, {"image": x_real},
                                                                               jax.random.PRNGKey(3))
  x_fake = replay._decode(new.buffer, new.buffer.data[:8])        # the fakes this step used
  # compare at the spectral-norm statistics the step's gradient was taken with (its own power iteration)
  u_old, u_new = ebm.energy_fn(state.replace(stats=new.stats)), ebm.energy_fn(new)
  gap = lambda u: float(u(x_fake).mean() - u(x_real).mean())   # -(the loss at reg = 0)
  assert gap(u_new) > gap(u_old) + 1e-4, (gap(u_old), gap(u_new))


def test_training_fills_the_buffer_and_stays_finite():
  state = ebm.init(jax.random.PRNGKey(0), NET, (28, 28, 1), optax.adam(1e-3), buffer_size=64)
  x_real = jnp.zeros((8, 28, 28, 1)).at[:, 10:18, 10:18].set(1.0)
  step = jax.jit(functools.partial(ebm.train_step, sampler=SAMPLER))
  for i in range(10):
    state, m = step(state, {"image": x_real}, jax.random.PRNGKey(i))
  assert int(state.buffer.count) == 64 and int(state.step) == 10
  chex.assert_tree_all_finite((state.params, m))


def test_fakes_carry_no_gradient():
  state = ebm.init(jax.random.PRNGKey(0), NET, (28, 28, 1), optax.sgd(0.0), buffer_size=16)
  x_fake, _ = ebm.sample_chains(state, jax.random.PRNGKey(1), 4, SAMPLER)
  g = jax.grad(lambda p: ebm.sample_chains(state.replace(params=p), jax.random.PRNGKey(1), 4, SAMPLER)[0].sum())(
      state.params)
  assert all(float(jnp.abs(l).max()) == 0 for l in jax.tree.leaves(g))
  assert float(x_fake.min()) >= 0 and float(x_fake.max()) <= 1
