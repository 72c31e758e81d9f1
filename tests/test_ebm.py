import dataclasses
import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtricks import ebm, onednn, replay
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


def test_energy_net_shapes_and_spectral_norm():   # (jitted: one program each, not one per operation)
  variables = jax.jit(functools.partial(NET.init, update_stats=True))(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
  energies = jax.jit(NET.apply)(variables, jnp.ones((5, 28, 28, 1)))
  chex.assert_shape(energies, (5,))
  chex.assert_tree_all_finite(energies)
  assert any("SpectralNorm" in "/".join(map(str, p)) for p, _ in jax.tree_util.tree_leaves_with_path(variables["batch_stats"]))


def test_train_step_widens_the_gap_between_fakes_and_reals():
  tx = optax.sgd(1e-3)
  state = ebm.init(jax.random.PRNGKey(0), NET, (28, 28, 1), tx, buffer_size=64)
  x_real = jnp.zeros((8, 28, 28, 1)).at[:, 10:18, 10:18].set(1.0)
  new, m = jax.jit(functools.partial(ebm.train_step, model=NET, tx=tx, sampler=SAMPLER, reg=0.0))(
      state, {"image": x_real}, jax.random.PRNGKey(3))
  x_fake = replay._decode(new.buffer, new.buffer.data[:8])        # the fakes this step used
  # compare at the spectral-norm statistics the step's gradient was taken with (its own power iteration)
  u_old, u_new = ebm.energy_fn(NET, state.params, new.stats), ebm.energy_fn(NET, new.params, new.stats)
  gap = lambda u: float(u(x_fake).mean() - u(x_real).mean())   # -(the loss at reg = 0)
  assert gap(u_new) > gap(u_old) + 1e-4, (gap(u_old), gap(u_new))


def test_training_fills_the_buffer_and_stays_finite():
  tx = optax.adam(1e-3)
  state = ebm.init(jax.random.PRNGKey(0), NET, (28, 28, 1), tx, buffer_size=64)
  x_real = jnp.zeros((8, 28, 28, 1)).at[:, 10:18, 10:18].set(1.0)
  step = jax.jit(functools.partial(ebm.train_step, model=NET, tx=tx, sampler=SAMPLER))
  for i in range(10):
    state, m = step(state, {"image": x_real}, jax.random.PRNGKey(i))
  assert int(state.buffer.count) == 64 and int(state.step) == 10
  chex.assert_tree_all_finite((state.params, m))


def test_fakes_carry_no_gradient():
  state = ebm.init(jax.random.PRNGKey(0), NET, (28, 28, 1), optax.sgd(0.0), buffer_size=16)
  x_fake, _ = jax.jit(lambda s: ebm.sample_chains(NET, s, jax.random.PRNGKey(1), 4, SAMPLER))(state)
  g = jax.jit(jax.grad(lambda p: ebm.sample_chains(NET, state.replace(params=p), jax.random.PRNGKey(1), 4,
                                                   SAMPLER)[0].sum()))(state.params)
  assert all(float(jnp.abs(l).max()) == 0 for l in jax.tree.leaves(g))
  assert float(x_fake.min()) >= 0 and float(x_fake.max()) <= 1


def _tiny_variables(seed=0):
  return NET.init(jax.random.PRNGKey(seed), jnp.zeros((1, 28, 28, 1)), update_stats=True)


def _converged_variables(seed=0, iterations=300):
  """Tiny net's variables after `iterations` power-iteration updates of the spectral-norm vectors."""
  variables = _tiny_variables(seed)
  x = jax.random.uniform(jax.random.PRNGKey(1), (2, 28, 28, 1))
  update = jax.jit(lambda v: NET.apply(v, x, update_stats=True, mutable=["batch_stats"])[1])
  for _ in range(iterations):
    variables = {**variables, **update(variables)}
  return variables


def test_spectral_norm_bounds_every_conv():
  """After the power iteration has converged, each conv kernel (reshaped [kh*kw*cin, cout]) divided by the
  stored sigma has top singular value 1: sigma is the true spectral norm."""
  variables = _converged_variables()
  kernels = {"/".join(str(k.key) for k in p[:-2]): l for p, l in
             jax.tree_util.tree_leaves_with_path(variables["params"]) if p[-1].key == "kernel" and "Dense" not in str(p)}
  sigmas = {"/".join(str(k.key) for k in p[:-1]).replace("/SpectralNorm_0", ""): l for p, l in
            jax.tree_util.tree_leaves_with_path(variables["batch_stats"]) if p[-1].key.endswith("kernel/sigma")}
  assert len(kernels) == 6 and set(kernels) == set(sigmas), (sorted(kernels), sorted(sigmas))
  for name, w in kernels.items():
    top = np.linalg.svd(np.asarray(w).reshape(-1, w.shape[-1]), compute_uv=False)[0]
    np.testing.assert_allclose(top / float(sigmas[name]), 1.0, rtol=1e-3, err_msg=name)


def test_contrastive_loss_gradient_matches_finite_differences():
  """Spectral norm treats its singular vectors as constants; once they have converged that is the exact
  derivative of W / sigma(W), so the whole loss gradient must match finite differences."""
  variables = _converged_variables()
  x_real = jax.random.uniform(jax.random.PRNGKey(2), (3, 28, 28, 1))
  x_fake = jax.random.uniform(jax.random.PRNGKey(3), (3, 28, 28, 1))
  with jax.enable_x64(True):
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables["params"])
    stats = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables["batch_stats"])
    x_r, x_f = jnp.asarray(x_real, jnp.float64), jnp.asarray(x_fake, jnp.float64)

    def loss(p):
      u = ebm.energy_fn(NET, p, stats)
      return ebm.contrastive_loss(u(x_r), u(x_f), reg=0.7)
    jax.test_util.check_grads(jax.jit(loss), (params,), order=1, modes=["rev"], eps=1e-6, atol=1e-6, rtol=1e-5)


def test_ensemble_of_two_models_shares_one_buffer():
  v0, v1 = _tiny_variables(0), _tiny_variables(1)
  params_M, stats_M = ebm.stack([v0["params"], v1["params"]]), ebm.stack([v0["batch_stats"], v1["batch_stats"]])
  buf = replay.push(replay.create(32, (28, 28, 1), dtype=jnp.float32),
                    jax.random.uniform(jax.random.PRNGKey(4), (32, 28, 28, 1)))
  key = jax.random.PRNGKey(5)
  x_M, new_buf = jax.jit(lambda b, k: ebm.sample_ensemble(NET, params_M, stats_M, b, k, 4, SAMPLER))(buf, key)
  chex.assert_shape(x_M, (2, 4, 28, 28, 1))
  # each model ran its own chains: the same as running that model alone from its starting points
  k_init, k_chain = jax.random.split(key)
  x0 = replay.sample(buf, k_init, 8, reinit_prob=SAMPLER.reinit_prob).reshape(2, 4, 28, 28, 1)
  for m, v in enumerate((v0, v1)):
    alone = ebm.run_chains(ebm.energy_fn(NET, v["params"], v["batch_stats"]), x0[m],
                           jax.random.split(k_chain, 2)[m], SAMPLER)
    np.testing.assert_allclose(x_M[m], alone, atol=1e-5)
  assert not np.allclose(x_M[0], x_M[1])
  # all 8 results went back into the one shared buffer
  assert int(new_buf.pointer) == 8 and int(new_buf.count) == 32
  np.testing.assert_allclose(new_buf.data[:8], x_M.reshape(8, 28, 28, 1))


@pytest.mark.parametrize("side", [28, 14, 7, 3])
def test_avg_pool_2x2_equals_flax_same_avg_pool(side):
  """The energy net's pooling (pad + reshape + mean, cheap to differentiate) has nn.avg_pool's values."""
  import flax.linen as nn

  from jaxtricks.models.energy import avg_pool_2x2
  x = jax.random.normal(jax.random.PRNGKey(side), (2, side, side, 3))
  want = nn.avg_pool(x, (2, 2), (2, 2), padding="SAME")
  chex.assert_shape(avg_pool_2x2(x), want.shape)
  np.testing.assert_allclose(avg_pool_2x2(x), want, rtol=1e-6, atol=1e-6)


def _gaussian_energy(x):
  """U(x) = ||x||^2 / 2: the standard normal, whose typical set is the shell ||x|| ~ sqrt(d), not the mode 0."""
  return 0.5 * jnp.sum(jnp.reshape(x, (x.shape[0], -1)) ** 2, axis=-1)


def test_ood_scores_on_a_gaussian_energy_rank_as_theory_says():
  from jaxtricks import metrics
  d = 28 * 28
  x_in = jax.random.normal(jax.random.PRNGKey(0), (400, 28, 28, 1))
  ref = jax.random.normal(jax.random.PRNGKey(1), (400, 28, 28, 1))
  simple = 0.1 * jax.random.normal(jax.random.PRNGKey(2), (400, 28, 28, 1))    # near the mode: "simpler" inputs
  noisy = 3.0 * jax.random.normal(jax.random.PRNGKey(3), (400, 28, 28, 1))     # far outside the shell
  # the gradient of ||x||^2/2 is x: its norm is ||x||
  np.testing.assert_allclose(ebm.input_gradient_norm(_gaussian_energy, x_in[:5]),
                             jnp.linalg.norm(x_in[:5].reshape(5, -1), axis=-1), rtol=1e-5)
  e_ref = _gaussian_energy(ref)
  score = lambda x: ebm.typicality_score(_gaussian_energy(x), e_reference_N=e_ref)
  # -U puts the simpler inputs above the data (the MNIST-under-a-Fashion-MNIST-EBM failure) ...
  assert metrics.auroc(ebm.energy_score(_gaussian_energy(x_in)), ebm.energy_score(_gaussian_energy(simple))) < 0.01
  # ... typicality does not, on either side of the shell
  assert metrics.auroc(score(x_in), score(simple)) > 0.99
  assert metrics.auroc(score(x_in), score(noisy)) > 0.99
  # the typical energy (d/2) scores ~0, the mode's far below it
  assert abs(float(ebm.typicality_score(jnp.array([d / 2]), e_reference_N=e_ref)[0])) < 0.1
  assert float(ebm.typicality_score(jnp.array([0.0]), e_reference_N=e_ref)[0]) < -10


def test_complexity_corrected_score_formula_and_png_bits():
  from jaxtricks import images
  e, bits = jnp.array([2.0, -1.0]), jnp.array([100.0, 50.0])
  np.testing.assert_allclose(ebm.complexity_corrected_score(e, bits, temperature=0.5),
                             [-4.0 + np.log(2) * 100, 2.0 + np.log(2) * 50], rtol=1e-6)
  rng = np.random.default_rng(0)
  flat = np.zeros((1, 28, 28, 1), np.uint8)
  noise = rng.integers(0, 256, (1, 28, 28, 1), dtype=np.uint8)
  b_flat, b_noise = images.png_bits(np.concatenate([flat, noise]))
  assert b_noise > 0.9 * 28 * 28 * 8     # noise does not compress ...
  assert b_flat < 100 * 8               # ... a blank image does (to PNG's ~70 bytes of headers)
  np.testing.assert_array_equal(images.png_bits(noise.astype(np.float32) / 255), [b_noise])


def test_space_to_depth_puts_each_2x2_patch_in_the_channels():
  from jaxtricks.models.energy import space_to_depth_2x2
  x = jnp.arange(2 * 3 * 4 * 2, dtype=jnp.float32).reshape(2, 3, 4, 2)
  y = space_to_depth_2x2(x)
  chex.assert_shape(y, (2, 2, 2, 8))                       # odd height padded at the end
  np.testing.assert_array_equal(y[1, 0, 1], np.asarray(x[1, 0:2, 2:4]).reshape(-1))
  np.testing.assert_array_equal(y[0, 1, 0, 4:], 0)          # the padded row
  np.testing.assert_array_equal(y[0, 1, 0, :2], x[0, 2, 0])


def test_strided_energy_net_energies_and_input_gradients():
  net = ebm.energy_net(4, "strided")
  x = jax.random.uniform(jax.random.PRNGKey(0), (3, 28, 28, 1))
  variables = jax.jit(functools.partial(net.init, update_stats=True))(jax.random.PRNGKey(1), x)
  assert "batch_stats" not in variables                    # no spectral norm in the tutorial's net
  e = jax.jit(net.apply)(variables, x)
  chex.assert_shape(e, (3,))
  g = jax.jit(jax.grad(lambda x: net.apply(variables, x).sum()))(x)
  chex.assert_tree_all_finite((e, g))
  assert float(jnp.abs(g).sum()) > 0
  # a training step runs on it (EbmState.stats is then empty)
  tx = optax.adam(1e-3)
  state = jax.jit(functools.partial(ebm.init, model=net, image_shape=(28, 28, 1), tx=tx, buffer_size=32))(
      jax.random.PRNGKey(0))
  new, m = jax.jit(functools.partial(ebm.train_step, model=net, tx=tx, sampler=SAMPLER, reg=0.1))(
      state, {"image": x[:2].repeat(4, 0)}, jax.random.PRNGKey(3))
  chex.assert_tree_all_finite(m)
  assert int(new.step) == 1


def test_standardized_temperature_gives_both_terms_one_scale():
  e = jnp.array([1.0, 3.0, 5.0, 7.0])
  bits = jnp.array([100.0, 300.0, 200.0, 400.0])
  t = ebm.standardized_temperature(e, bits)
  np.testing.assert_allclose(t, np.std([1, 3, 5, 7]) / (np.log(2) * np.std([100, 300, 200, 400])), rtol=1e-6)
  np.testing.assert_allclose(np.std(e / t), np.std(np.log(2) * bits), rtol=1e-5)


@pytest.mark.parametrize("unroll, expected", [("full", True), (True, True), (1, 1), (4, 4), ("auto", "auto")])
def test_scan_unroll_names(unroll, expected):
  """lax.scan's unroll of each SamplerConfig.unroll ("auto": blocks of 20 on a CPU, 1 elsewhere)."""
  if expected == "auto":
    expected = 20 if jax.default_backend() == "cpu" else 1
  got = ebm.scan_unroll(unroll)
  assert got == expected and type(got) is type(expected)


def test_run_chains_gives_one_chain_whatever_the_unroll():
  """The unroll changes how XLA lays out the chain, not the chain: "full", "auto" and 2 give the scan's samples."""
  energy = lambda x: 0.5 * jnp.sum(x ** 2, axis=(1, 2, 3))
  x0 = jax.random.uniform(jax.random.PRNGKey(0), (4, 6, 6, 1))
  chain = lambda unroll: ebm.run_chains(energy, x0, jax.random.PRNGKey(1), dataclasses.replace(SAMPLER, unroll=unroll))
  scan = chain(1)
  for unroll in ("full", "auto", 2):
    np.testing.assert_allclose(chain(unroll), scan, rtol=1e-6, atol=1e-7)
  assert not np.allclose(scan, x0)


def test_the_default_unroll_compiles_any_chain_length_from_a_bounded_number_of_steps():
  """"auto" on a CPU: a 20-step chain (train.ebm's) is the fully unrolled program, unchanged; a 500-step chain holds
  at most 2 B - 1 = 39 steps' convolutions (a loop of 25 blocks of 20), and runs: the same chain as the plain scan."""
  net = ebm.energy_net(2, "strided")
  x0 = jax.random.uniform(jax.random.PRNGKey(0), (4, 28, 28, 1))
  variables = net.init(jax.random.PRNGKey(1), x0[:1])
  key = jax.random.PRNGKey(2)

  def chain(num_steps, unroll):
    sampler = dataclasses.replace(SAMPLER, num_steps=num_steps, unroll=unroll)
    return jax.jit(lambda v, x, k: ebm.run_chains(ebm.energy_fn(net, v["params"], {}), x, k, sampler))

  convolutions = lambda num_steps, unroll: chain(num_steps, unroll).lower(variables, x0, key).as_text().count(
      "stablehlo.convolution")
  assert chain(20, "auto").lower(variables, x0, key).as_text() == chain(20, "full").lower(variables, x0, key).as_text()
  per_step = convolutions(1, "full")
  assert per_step > 0 and convolutions(20, "full") == 20 * per_step
  assert convolutions(500, "auto") == 20 * per_step and convolutions(539, "auto") == 39 * per_step
  x = chain(500, "auto")(variables, x0, key)
  chex.assert_shape(x, x0.shape)
  chex.assert_tree_all_finite(x)
  assert float(x.min()) >= 0 and float(x.max()) <= 1 and float(jnp.abs(x - x0).mean()) > 1e-3
  np.testing.assert_allclose(x, chain(500, 1)(variables, x0, key), rtol=1e-5, atol=1e-5)


class _Quadratic(nn.Module):
  """U(x) = a * sum(x^2) per example: a known-answer energy for kl_loss."""

  @nn.compact
  def __call__(self, x, update_stats=False):
    a = self.param("a", lambda _: jnp.asarray(0.5))
    return a * jnp.sum(x ** 2, axis=tuple(range(1, x.ndim)))


def test_kl_loss_value_and_its_gradient_through_the_step_only():
  """Improved CD's KL term on U = a |x|^2 (no clipping at these values): the step lands on x (1 - s a), the loss
  is a |x (1 - s a)|^2 with the outer a frozen, so d/da = a * 2 (1 - s a) (-s) |x|^2 — not the 0.81 |x|^2 more that
  differentiating the outer energy too would add."""
  model, s = _Quadratic(), 0.2
  params = {"a": jnp.asarray(0.5)}
  x = jax.random.uniform(jax.random.PRNGKey(0), (4, 3, 3, 1), minval=0.1, maxval=0.9)
  sq = float(jnp.mean(jnp.sum(x ** 2, axis=(1, 2, 3))))
  loss = lambda p: ebm.kl_loss(model, p, {}, x, step_size=s)
  np.testing.assert_allclose(loss(params), 0.5 * 0.9 ** 2 * sq, rtol=1e-5)
  np.testing.assert_allclose(jax.grad(loss)(params)["a"], 0.5 * 2 * 0.9 * -s * sq, rtol=1e-5)


def test_train_step_with_the_kl_term_changes_the_parameters_update_and_stays_finite():
  tx = optax.sgd(1e-3)
  state = ebm.init(jax.random.PRNGKey(0), NET, (28, 28, 1), tx, buffer_size=64)
  batch = {"image": jnp.zeros((8, 28, 28, 1)).at[:, 10:18, 10:18].set(1.0)}
  step = lambda kl: jax.jit(functools.partial(ebm.train_step, model=NET, tx=tx, sampler=SAMPLER, kl=kl))(
      state, batch, jax.random.PRNGKey(3))
  (plain, _), (with_kl, m1) = step(0.0), step(1.0)
  chex.assert_tree_all_finite((with_kl.params, m1))
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(with_kl.params)))


@pytest.mark.parametrize("impl", ["taps", "shifted", pytest.param("onednn", marks=pytest.mark.skipif(
    not onednn.available(), reason="oneDNN kernels not built here (tests/test_onednn.py fails if they should be)"))])
def test_strided_net_with_convolutions_as_dots_is_the_same_function(impl):
  """StridedEnergyNet(conv=taps|shifted|onednn) has nn.Conv's parameters (same tree, same initial values) and computes the
  same energies, input-gradients (a Langevin step) and parameter gradients, odd feature maps (7x7) included; in
  bfloat16 compute it stays within bf16's precision of float32."""
  from jaxtricks.models.energy import StridedEnergyNet
  x = jax.random.uniform(jax.random.PRNGKey(1), (3, 28, 28, 1))
  ref, net = StridedEnergyNet(features=(4, 8, 8, 8), hidden=8), StridedEnergyNet(features=(4, 8, 8, 8), hidden=8,
                                                                                  conv=impl)
  v = jax.jit(ref.init)(jax.random.PRNGKey(0), x)   # (each jitted: one program to compile, not one per operation)
  chex.assert_trees_all_equal(v, jax.jit(net.init)(jax.random.PRNGKey(0), x))
  parts = lambda m: jax.jit(lambda v: (m.apply(v, x), jax.grad(lambda z: m.apply(v, z).sum())(x),
                                       jax.grad(lambda p: m.apply({"params": p}, x).sum())(v["params"])))
  chex.assert_trees_all_close(parts(net)(v), parts(ref)(v), rtol=1e-4, atol=1e-6)
  e_bf16, e = (jax.jit(m.apply)(v, x) for m in (net.clone(dtype=jnp.bfloat16), ref))
  assert e_bf16.dtype == jnp.float32
  np.testing.assert_allclose(e_bf16, e, atol=0.05 * float(jnp.abs(e).max()))
  with pytest.raises(ValueError, match="impl must be taps, shifted or onednn"):
    StridedEnergyNet(conv="fft").init(jax.random.PRNGKey(0), x)


def test_augment_starts_flips_and_shifts_each_image_within_its_bound():
  """Each output is its input, or the input mirrored, moved by at most max_shift pixels each way (zeros coming
  in); with max_shift 2 over 64 images both flips and several shifts occur."""
  x = jax.random.uniform(jax.random.PRNGKey(0), (64, 8, 8, 1))
  out = np.asarray(ebm.augment_starts(jax.random.PRNGKey(1), x, max_shift=2))
  chex.assert_shape(out, x.shape)
  found = set()
  for img, o in zip(np.asarray(x), out):
    matches = [(f, dy, dx) for f in (0, 1) for dy in range(-2, 3) for dx in range(-2, 3)
               if np.array_equal(o, np.roll(np.pad(img[:, ::-1] if f else img, ((2, 2), (2, 2), (0, 0))),
                                            (dy, dx), axis=(0, 1))[2:10, 2:10])]
    assert matches, "an output is no flip-and-shift of its input"
    found.update(matches)
  assert {f for f, _, _ in found} == {0, 1} and len({(dy, dx) for _, dy, dx in found}) > 5


def test_train_step_augments_the_chain_starts_only_when_asked():
  tx = optax.sgd(1e-3)
  state = ebm.init(jax.random.PRNGKey(0), NET, (28, 28, 1), tx, buffer_size=64)
  state = state.replace(buffer=replay.push(state.buffer, jax.random.uniform(jax.random.PRNGKey(5), (64, 28, 28, 1))))
  batch = {"image": jnp.zeros((8, 28, 28, 1)).at[:, 10:18, 10:18].set(1.0)}
  step = lambda shift: jax.jit(functools.partial(
      ebm.train_step, model=NET, tx=tx, sampler=dataclasses.replace(SAMPLER, augment_shift=shift, reinit_prob=0.0)))(
      state, batch, jax.random.PRNGKey(3))
  (plain, _), (again, _), (augmented, m) = step(0), step(0), step(2)
  chex.assert_tree_all_finite((augmented.params, m))
  chex.assert_trees_all_equal(plain.buffer, again.buffer)
  assert not np.array_equal(plain.buffer.data, augmented.buffer.data)
  with pytest.raises(ValueError, match="augment_shift"):
    ebm.SamplerConfig(augment_shift=-1)


def test_energy_net_reads_its_compute_dtype_as_a_name():
  assert ebm.energy_net(2, "strided", dtype="float32").dtype is None
  assert ebm.energy_net(2, "strided", dtype="bfloat16").dtype == jnp.bfloat16
