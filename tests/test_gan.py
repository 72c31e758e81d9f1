"""The one-loss GAN: its gradient is D's hinge gradient for D and lam x G's gradient for G, in both forms."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtricks import gan
from jaxtricks.models.dcgan import Discriminator, Generator

G, D = Generator(width=4), Discriminator(width=4)
Z = 8


NETS = dict(generator=G, discriminator=D)


def _tx(tx):
  """One transformation for both players, or a {'G', 'D'} pair as given."""
  return tx if isinstance(tx, dict) else gan.two_timescale(tx, tx)


def _state(tx, key=0):
  init = jax.jit(functools.partial(gan.init, generator=G, discriminator=D, z_shape=(2, Z), x_shape=(2, 28, 28, 1),
                                   tx=_tx(tx)))   # (jitted: one program to compile, not one per operation)
  state = init(jax.random.PRNGKey(key))
  # perturb BatchNorm's running statistics so that a pass that wrongly used them would show
  stats = jax.tree.map(lambda a: a + 0.1, state.batch_stats)
  return state.replace(batch_stats=stats)


def _batch(n=6):
  x = jax.random.uniform(jax.random.PRNGKey(1), (n, 28, 28, 1), minval=-1, maxval=1)
  z = jax.random.normal(jax.random.PRNGKey(2), (n, Z))
  return x, z


def _reference_grads(state, x, z):
  """Separate gradients: D on its hinge loss, G on E[D(G(z))] (both nets in training mode)."""
  def d_loss(p_d):
    fake = G.apply({"params": state.params["G"], "batch_stats": state.batch_stats["G"]}, z, mutable=["batch_stats"])[0]
    d = lambda v: D.apply({"params": p_d, "batch_stats": state.batch_stats["D"]}, v, mutable=["batch_stats"])[0]
    return gan.d_hinge_loss(d(x), d(jax.lax.stop_gradient(fake)))

  def g_loss(p_g):
    fake = G.apply({"params": p_g, "batch_stats": state.batch_stats["G"]}, z, mutable=["batch_stats"])[0]
    return gan.g_hinge_loss(D.apply({"params": state.params["D"], "batch_stats": state.batch_stats["D"]}, fake,
                                    mutable=["batch_stats"])[0])

  return jax.jit(jax.grad(d_loss))(state.params["D"]), jax.jit(jax.grad(g_loss))(state.params["G"])   # (compiled:
  # op by op these took most of a test's 17 s)


@pytest.mark.parametrize("mode", ["single-freeze", "single-subtract"])
@pytest.mark.parametrize("lam", [1.0, 0.3])
def test_single_loss_gradient_is_both_losses_gradients(mode, lam):
  state = _state(optax.adam(1e-3))
  x, z = _batch()
  f = functools.partial(gan.single_loss, generator=G, discriminator=D, lam=lam, mode=mode)
  (loss, (_, metrics)), grads = jax.jit(jax.value_and_grad(f, has_aux=True))(state.params, state.batch_stats, x, z)
  ref_d, ref_g = _reference_grads(state, x, z)
  chex.assert_trees_all_close(grads["D"], ref_d, rtol=1e-4, atol=1e-6)
  chex.assert_trees_all_close(grads["G"], jax.tree.map(lambda g: lam * g, ref_g), rtol=1e-4, atol=1e-6)
  assert float(metrics["lam_term"]) == 0.0                   # exactly zero in value
  assert float(loss) == float(metrics["d_loss"])
  assert max(float(jnp.abs(l).max()) for l in jax.tree.leaves(ref_g)) > 1e-4   # G really gets a gradient


@pytest.mark.parametrize("lam", [1.0, 0.3])
def test_fused_grads_equal_freeze_grads(lam):
  state = _state(optax.adam(1e-3))
  x, z = _batch()
  kw = dict(generator=G, discriminator=D, lam=lam)
  ref, (ref_stats, _) = jax.jit(jax.grad(functools.partial(gan.single_loss, **kw), has_aux=True))(
      state.params, state.batch_stats, x, z)
  got, (stats, metrics) = jax.jit(functools.partial(gan.fused_grads, **kw))(state.params, state.batch_stats, x, z)
  chex.assert_trees_all_close(got, ref, rtol=1e-4, atol=1e-6)
  chex.assert_trees_all_close(stats, ref_stats, rtol=1e-5, atol=1e-6)


def test_freeze_gives_d_nothing_from_the_lam_term():
  state = _state(optax.adam(1e-3))
  x, z = _batch()
  grad = lambda lam: jax.jit(jax.grad(functools.partial(gan.single_loss, generator=G, discriminator=D, lam=lam,
                                                          mode="single-freeze"), has_aux=True))(
      state.params, state.batch_stats, x, z)[0]
  with_lam, without = grad(5.0), grad(0.0)
  chex.assert_trees_all_equal(with_lam["D"], without["D"])    # zero, not small
  assert all(float(jnp.abs(l).max()) == 0 for l in jax.tree.leaves(without["G"]))


def test_batch_stats_updated_by_real_then_fake_pass():
  state = _state(optax.adam(1e-3))
  x, z = _batch()
  _, (stats, _) = gan.single_loss(state.params, state.batch_stats, x, z, generator=G, discriminator=D)
  fake, g_stats = gan._run(G, state.params["G"], state.batch_stats["G"], z)
  _, d_stats = gan._run(D, state.params["D"], state.batch_stats["D"], x)
  _, d_stats = gan._run(D, state.params["D"], d_stats, fake)
  chex.assert_trees_all_close(stats, {"G": g_stats, "D": d_stats})
  assert not np.allclose(jax.tree.leaves(stats["D"])[0], jax.tree.leaves(state.batch_stats["D"])[0])


def test_alternating_step_equals_two_updates_by_hand():
  tx = {"G": optax.adam(2e-4), "D": optax.adam(1e-3)}
  state = _state(tx)
  x, z = _batch()
  new, _ = jax.jit(functools.partial(gan.alternating_step, tx=tx, **NETS))(state, x, z)
  # by hand: D step on the hinge loss
  grad_d, _ = _reference_grads(state, x, z)
  upd, _ = tx["D"].update(grad_d, state.opt_state["D"], state.params["D"])
  p_d = optax.apply_updates(state.params["D"], upd)
  # then G against the NEW D, G's BatchNorm statistics as left by the D step's pass (D's statistics do not
  # matter in training mode: BatchNorm normalizes with the batch's own)
  _, g_stats = gan._run(G, state.params["G"], state.batch_stats["G"], z)
  grad_g = jax.jit(jax.grad(lambda p: gan.g_hinge_loss(
      gan._run(D, p_d, state.batch_stats["D"], gan._run(G, p, g_stats, z)[0])[0])))(state.params["G"])
  upd, _ = tx["G"].update(grad_g, state.opt_state["G"], state.params["G"])
  p_g = optax.apply_updates(state.params["G"], upd)
  chex.assert_trees_all_close(new.params["D"], p_d, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(new.params["G"], p_g, rtol=1e-5, atol=1e-6)
  assert int(new.step) == 1


@pytest.mark.parametrize("mode", ["alternating", "single", "single-subtract"])
def test_train_step_draws_z_from_its_key_then_steps_then_updates_the_ema(mode):
  """gan.train_step (what train.gan and benchmarks.studies.gan.gan_convergence run) is the named step on z ~ N(0, I) from the
  key (alternating: G's own z from fold_in(key, 1)), then G's EMA."""
  tx = gan.adam_players(lr_g=1e-3, lr_d=4e-3, eps=1e-3)
  state = gan.with_ema(_state(tx))
  x, _ = _batch()
  key = jax.random.PRNGKey(7)
  new, metrics = jax.jit(lambda s: gan.train_step(s, x, key, mode=mode, tx=tx, z_dim=Z, lam=2.0, ema_decay=0.9,
                                                  **NETS))(state)
  z = jax.random.normal(key, (x.shape[0], Z))
  if mode == "alternating":
    z_g = jax.random.normal(jax.random.fold_in(key, 1), z.shape)
    ref, _ = jax.jit(lambda s: gan.alternating_step(s, x, z, z_g, tx=tx, **NETS))(state)
  else:
    ref, _ = jax.jit(lambda s: gan.single_step(s, x, z, lam=2.0, mode=mode, tx=tx, **NETS))(state)
  chex.assert_trees_all_close(new.params, ref.params, rtol=1e-6, atol=1e-7)
  ema = jax.tree.map(lambda e, p: 0.9 * e + 0.1 * p, state.ema_g, ref.params["G"])
  chex.assert_trees_all_close(new.ema_g, ema, rtol=1e-6, atol=1e-7)
  assert not np.allclose(jax.tree.leaves(new.ema_g)[0], jax.tree.leaves(state.ema_g)[0])
  assert int(new.step) == 1 and np.isfinite(float(metrics["d_loss"]))


def test_adam_players_is_each_players_adam_or_optimistic_adam():
  state = _state(optax.adam(1e-3))
  grads = jax.tree.map(jnp.ones_like, state.params)
  for optimistic, make in ((False, optax.adam), (True, optax.optimistic_adam)):
    tx = gan.adam_players(lr_g=1e-4, lr_d=4e-4, b1=0.5, eps=1e-3, optimistic=optimistic)
    for k, lr in (("G", 1e-4), ("D", 4e-4)):
      ref = make(lr, b1=0.5, eps=1e-3)
      got, _ = tx[k].update(grads[k], tx[k].init(state.params[k]), state.params[k])
      want, _ = ref.update(grads[k], ref.init(state.params[k]), state.params[k])
      chex.assert_trees_all_close(got, want)
  plain = gan.adam_players(lr_g=1e-4, lr_d=1e-4)["G"]
  opt = gan.adam_players(lr_g=1e-4, lr_d=1e-4, optimistic=True)["G"]
  assert not np.allclose(jax.tree.leaves(plain.update(grads["G"], plain.init(state.params["G"]))[0])[0],
                         jax.tree.leaves(opt.update(grads["G"], opt.init(state.params["G"]))[0])[0])


def test_two_timescale_is_adam_per_subtree():
  tx_g, tx_d = optax.adam(1e-4), optax.adam(4e-4)
  state = _state(gan.two_timescale(tx_g, tx_d))
  x, z = _batch()
  new, _ = jax.jit(functools.partial(gan.single_step, lam=1.0, mode="single-freeze", tx=gan.two_timescale(tx_g, tx_d),
                                     **NETS))(state, x, z)
  grads = jax.jit(jax.grad(functools.partial(gan.single_loss, **NETS), has_aux=True))(state.params, state.batch_stats,
                                                                                       x, z)[0]
  for k, tx in (("G", tx_g), ("D", tx_d)):
    upd, _ = tx.update(grads[k], tx.init(state.params[k]), state.params[k])
    chex.assert_trees_all_close(new.params[k], optax.apply_updates(state.params[k], upd), rtol=1e-5, atol=1e-7)


def test_lam_does_not_change_adam_steps_but_does_change_sgd_steps():
  x, z = _batch()
  def g_update(tx, lam):
    state = _state(tx)
    new, _ = gan.single_step(state, x, z, lam=lam, tx=_tx(tx), **NETS)
    return jax.tree.map(lambda a, b: a - b, new.params["G"], state.params["G"])
  adam = optax.adam(1e-3, eps=1e-30)     # Adam's eps is the only thing that sees the gradient's scale
  a1, a4 = g_update(adam, 1.0), g_update(adam, 4.0)
  chex.assert_trees_all_close(a1, a4, rtol=1e-4, atol=1e-6)                     # Adam undoes lam
  s1, s4 = g_update(optax.sgd(1e-2), 1.0), g_update(optax.sgd(1e-2), 4.0)
  assert not np.allclose(jax.tree.leaves(s1)[0], jax.tree.leaves(s4)[0], rtol=1e-2)
  chex.assert_trees_all_close(jax.tree.map(lambda v: 4 * v, s1), s4, rtol=1e-4, atol=1e-6)   # SGD scales by lam (atol: float32 rounding of p_new - p)


def test_gradient_reversal_refuses_hinge_and_works_for_minimax():
  state = _state(optax.adam(1e-3))
  x, z = _batch()
  kw = dict(generator=G, discriminator=D)
  with pytest.raises(ValueError, match="zero-sum"):
    gan.gradient_reversal_loss(state.params, state.batch_stats, x, z, loss="hinge", **kw)
  grads = jax.grad(gan.gradient_reversal_loss, has_aux=True)(state.params, state.batch_stats, x, z, **kw)[0]
  v = lambda p: gan.gradient_reversal_loss(p, state.batch_stats, x, z, **kw)[0]
  # D descends V, G ascends V: G's gradient is -dV/dG
  plain_g = jax.grad(lambda pg: jax.nn.softplus(-gan._run(D, state.params["D"], state.batch_stats["D"],
                                                          gan._run(G, pg, state.batch_stats["G"], z)[0])[0]).mean())(
                                                              state.params["G"])
  chex.assert_trees_all_close(grads["G"], jax.tree.map(jnp.negative, plain_g), rtol=1e-4, atol=1e-7)
  chex.assert_trees_all_close(grads["D"], jax.grad(lambda pd: v({"G": state.params["G"], "D": pd}))(state.params["D"]),
                              rtol=1e-5, atol=1e-7)


def test_models_shapes():
  state = _state(optax.adam(1e-3))
  samples = gan.sample(G, state, jnp.zeros((3, Z)))
  chex.assert_shape(samples, (3, 28, 28, 1))
  assert float(jnp.abs(samples).max()) <= 1.0
  g3 = Generator(image_shape=(32, 32, 3), width=4)
  for net, inp, out in ((g3, jnp.zeros((2, Z)), (2, 32, 32, 3)), (D, jnp.zeros((2, 32, 32, 3)), (2,))):
    forward = jax.jit(lambda key, inp: net.apply(net.init(key, inp, train=False), inp, train=False))   # one program
    chex.assert_shape(forward(jax.random.PRNGKey(0), inp), out)


@pytest.mark.parametrize("k,s", [(5, 2), (5, 1), (3, 2), (4, 2), (2, 3)])
def test_subpixel_conv_transpose_is_flax_conv_transpose(k, s):
  """Same init, same outputs, same gradients (kernel, bias, input) as nn.ConvTranspose(..., padding='SAME')."""
  import flax.linen as nn

  from jaxtricks.models.dcgan import ConvTranspose
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 5, 3))
  ref, mine = nn.ConvTranspose(4, (k, k), (s, s), padding="SAME"), ConvTranspose(4, (k, k), (s, s))
  p = ref.init(jax.random.PRNGKey(1), x)
  chex.assert_trees_all_equal(p, mine.init(jax.random.PRNGKey(1), x))
  chex.assert_trees_all_close(mine.apply(p, x), ref.apply(p, x), atol=1e-5)
  loss = lambda m: lambda p, x: jnp.sum(jnp.sin(m.apply(p, x)))
  chex.assert_trees_all_close(jax.grad(loss(mine), argnums=(0, 1))(p, x), jax.grad(loss(ref), argnums=(0, 1))(p, x),
                              rtol=1e-5, atol=1e-5)


def test_generator_keeps_its_parameter_paths():
  """Checkpoints of the nn.ConvTranspose generator load into this one."""
  params = Generator(width=4).init(jax.random.PRNGKey(0), jnp.zeros((1, 100)))["params"]
  assert {"ConvTranspose_0", "ConvTranspose_1", "ConvTranspose_2"} <= set(params)
  chex.assert_shape(params["ConvTranspose_1"]["kernel"], (5, 5, 8, 4))
  assert "bias" not in params["ConvTranspose_1"] and "bias" in params["ConvTranspose_2"]
  z = jax.random.normal(jax.random.PRNGKey(1), (3, 100))
  variables = Generator(width=4).init(jax.random.PRNGKey(0), z)
  chex.assert_trees_all_close(Generator(width=4).apply(variables, z, train=False),
                              Generator(width=4, conv_transpose="flax").apply(variables, z, train=False), atol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_outputs_and_agrees_with_float32():
  """dtype=bfloat16 is flax's mixed precision: same params (float32), float32 outputs, values within bf16 rounding,
  and the convolutions really run in bfloat16 (the lowered program holds bf16 convolutions)."""
  z = jax.random.normal(jax.random.PRNGKey(1), (4, Z))
  vg = Generator(width=4).init(jax.random.PRNGKey(0), z, train=False)
  vd = Discriminator(width=4).init(jax.random.PRNGKey(2), jnp.zeros((1, 28, 28, 1)), train=False)

  def both(dtype):
    g, d = Generator(width=4, dtype=dtype), Discriminator(width=4, dtype=dtype)
    fn = jax.jit(lambda vg, vd, z: (g.apply(vg, z, train=False), d.apply(vd, g.apply(vg, z, train=False), train=False)))
    return fn, fn(vg, vd, z)

  _, (images32, scores32) = both(jnp.float32)
  fn16, (images16, scores16) = both(jnp.bfloat16)
  chex.assert_trees_all_equal_shapes_and_dtypes(vg, Generator(width=4, dtype=jnp.bfloat16).init(
      jax.random.PRNGKey(0), z, train=False))
  assert images16.dtype == jnp.float32 and scores16.dtype == jnp.float32
  chex.assert_trees_all_close(images16, images32, atol=0.05)
  chex.assert_trees_all_close(scores16, scores32, rtol=0.05, atol=0.05)
  hlo = fn16.lower(vg, vd, z).as_text()
  assert "bf16" in hlo and "convolution" in hlo
  assert not np.allclose(images16, images32, atol=1e-6)   # it did not compute in float32


def test_convolutions_as_dots_are_the_same_nets(shape=(28, 28, 1)):
  """Generator/Discriminator(conv="taps"): every convolution as one matrix product over its taps (conv_taps), with
  nn.Conv's and ConvTranspose's parameters (the same tree and initial values): the same outputs and parameter
  gradients as XLA's convolutions, to float32 rounding (odd 7x7 maps included)."""
  from jaxtricks.models.dcgan import conv_taps
  key = jax.random.PRNGKey(0)
  z = jax.random.normal(key, (4, 16))
  x = jax.random.uniform(key, (4, *shape), minval=-1, maxval=1)
  for xla, taps, inp in ((Generator(image_shape=shape, width=4), Generator(image_shape=shape, width=4, conv="taps"), z),
                         (Discriminator(width=4), Discriminator(width=4, conv="taps"), x)):
    v = jax.jit(xla.init)(key, inp)   # (jitted: one program to compile, not one per operation)
    chex.assert_trees_all_equal(v, jax.jit(taps.init)(key, inp))
    out = lambda m, p: m.apply({**v, "params": p}, inp, mutable=["batch_stats"])[0]
    both = lambda m: jax.jit(lambda p: (out(m, p), jax.grad(lambda p: jnp.sum(out(m, p) ** 2))(p)))(v["params"])
    (out_taps, grads_taps), (out_xla, grads_xla) = both(taps), both(xla)
    chex.assert_trees_all_close(out_taps, out_xla, rtol=1e-4, atol=1e-5)
    chex.assert_trees_all_close(grads_taps, grads_xla, rtol=1e-3, atol=1e-5)
  # conv_taps itself against lax at a stride and explicit padding the nets do not use
  k = jax.random.normal(key, (3, 3, 2, 5))
  y = jax.random.normal(key, (2, 9, 9, 2))
  want = jax.lax.conv_general_dilated(y, k, (3, 3), [(2, 0), (1, 1)], dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(conv_taps(y, k, 3, [(2, 0), (1, 1)]), want, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="conv must be 'xla', 'taps' or 'onednn'"):
    Discriminator(width=4, conv="fft").init(key, x)


def test_conv_onednn_where_it_is_not_built_is_one_line_naming_the_flag(monkeypatch, capsys, tmp_path):
  from jaxtricks import onednn
  from train import gan as program
  monkeypatch.setattr(onednn, "available", lambda: False)
  assert program.main(["--conv", "onednn", "--workdir", str(tmp_path / "g")]) == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and "--conv" in err and "make onednn" in err
  assert not (tmp_path / "g").exists()
