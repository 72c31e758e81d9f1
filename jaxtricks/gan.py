"""A GAN trained with one loss through stop_gradient, and 1:1 alternating training (docs/techniques.md#gan;
Su, kexue.fm/archives/6387; reference code bojone/gan).

Hinge GAN, discriminator D scores real data LOW:
    D minimizes  E_x[relu(1 + D(x))] + E_z[relu(1 - D(G(z)))],      G minimizes  E_z[D(G(z))].
One loss over {'G': ..., 'D': ...}, sg = stop_gradient, in two forms:
    single-subtract:  L = hinge(D(x), D(sg(G(z)))) + lam * (E D(G(z)) - E D(sg(G(z))))         (the seed's, Keras-able)
    single-freeze:    L = hinge(D(x), D(sg(G(z)))) + lam * (E D_{sg(theta_D)}(G(z)) - sg(same))  (sg on D's params)
The lam term is exactly 0 in value; its gradient is 0 for D and lam * grad_G E[D(G(z))] for G. So one step on
L moves D by its hinge loss and G by its loss at once. Mode "single" is single-freeze's gradient computed by
`fused_grads` with a single forward of D on the fakes (one VJP, two cotangents); on XLA:CPU the plain freeze form
compiles to the same FLOPs, because XLA merges the two identical forwards itself (benchmarks/speed/README.md).

The ways to train, named once (`Mode`; train.gan's --mode, the benchmarks and result labels use these names):
"single", "single-freeze", "single-subtract" (one loss, one step of both optimizers) and "alternating".

lam scales G's gradient. With SGD that is a learning-rate ratio D:G = 1:lam, but Adam and RMSprop divide by
the gradient's own scale and undo it: for two time scales give each player its own learning rate. Every step
takes `tx = {'G': tx_G, 'D': tx_D}`, one optax transformation per player (`two_timescale` builds it); the single
loss updates both with one gradient, alternating training updates them in turn. The state holds arrays only:
the nets and the optimizers are arguments of every step.

Gradient reversal (differentiate D's loss once and negate G's part) is valid only when G minimizes exactly
-1 x D's objective (a zero-sum game): `gradient_reversal_loss` offers it for the minimax loss and refuses the
hinge loss (and any other).

BatchNorm: every forward pass runs in training mode with `mutable=['batch_stats']`; D's statistics are
updated by its pass on the real batch and then on the fake batch (as two Keras calls would), G's by its pass;
the passes that exist only for the lam term do not touch the statistics.
"""

from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

Params = dict[str, Any]
Mode = Literal["single", "single-freeze", "single-subtract", "alternating"]


def d_hinge_loss(d_real_B: jax.Array, d_fake_B: jax.Array) -> jax.Array:
  """E[relu(1 + D(x))] + E[relu(1 - D(G(z)))] (real scored low)."""
  return jax.nn.relu(1.0 + d_real_B).mean() + jax.nn.relu(1.0 - d_fake_B).mean()


def g_hinge_loss(d_fake_B: jax.Array) -> jax.Array:
  """E[D(G(z))]."""
  return d_fake_B.mean()


def _run(module: nn.Module, params, stats, x, train: bool = True):
  """(output, new batch stats) of a training-mode forward pass."""
  out, updates = module.apply({"params": params, "batch_stats": stats}, x, train=train, mutable=["batch_stats"])
  return out, updates.get("batch_stats", stats)


Optimizers = dict[str, optax.GradientTransformation]   # {'G': tx_G, 'D': tx_D}


@struct.dataclass
class GanState:
  step: jax.Array
  params: Params             # {'G': ..., 'D': ...}
  batch_stats: Params        # {'G': ..., 'D': ...} ({} for nets without BatchNorm)
  opt_state: Params          # {'G': ..., 'D': ...}
  ema_g: Params | None = None   # an exponential moving average of G's params (with_ema), or None


def with_ema(state: GanState) -> GanState:
  """The state with an EMA of G's params, started at G's current params."""
  return state.replace(ema_g=jax.tree.map(jnp.copy, state.params["G"]))


def ema_update(state: GanState, decay: float) -> GanState:
  """ema_g <- decay * ema_g + (1 - decay) * params['G'] (a no-op for a state without an EMA)."""
  if state.ema_g is None:
    return state
  ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_g, state.params["G"])
  return state.replace(ema_g=ema)


def two_timescale(tx_g: optax.GradientTransformation, tx_d: optax.GradientTransformation) -> Optimizers:
  """{'G': tx_g, 'D': tx_d}: each player's own optimizer (e.g. D with a larger learning rate than G)."""
  return {"G": tx_g, "D": tx_d}


def adam_players(*, lr_g: float, lr_d: float, b1: float = 0.5, eps: float = 1e-8,
                 optimistic: bool = False) -> Optimizers:
  """Both players' Adam, each with its own learning rate (two time scales when lr_d != lr_g); `optimistic`:
  optax.optimistic_adam (Daskalakis et al. 2018), extrapolating with the previous update (a saved gradient, no
  extra forward pass). A large `eps` (e.g. 1e-3) lets a single loss's lam scale G's steps."""
  make = optax.optimistic_adam if optimistic else optax.adam
  return two_timescale(make(lr_g, b1=b1, eps=eps), make(lr_d, b1=b1, eps=eps))


def init(key, generator, discriminator, z_shape, x_shape, tx: Optimizers) -> GanState:
  """Initial state; `tx` = {'G': tx_G, 'D': tx_D}."""
  kg, kd = jax.random.split(key)
  vg = generator.init(kg, jnp.zeros(z_shape), train=False)
  vd = discriminator.init(kd, jnp.zeros(x_shape), train=False)
  params = {"G": vg["params"], "D": vd["params"]}
  stats = {"G": vg.get("batch_stats", {}), "D": vd.get("batch_stats", {})}
  return GanState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=stats,
                  opt_state={k: tx[k].init(params[k]) for k in ("G", "D")})


def _apply(tx: Optimizers, player: str, grads, opt_state, params):
  updates, opt_state = tx[player].update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def single_loss(params: Params, batch_stats: Params, x_real, z, *, generator, discriminator, lam: float = 1.0,
                mode: Literal["single-freeze", "single-subtract"] = "single-freeze"
                ) -> tuple[jax.Array, tuple[Params, dict]]:
  """The one loss over G and D in `mode`'s form; returns (loss, (new batch stats, metrics))."""
  g, d = generator, discriminator
  x_fake, g_stats = _run(g, params["G"], batch_stats["G"], z)
  d_real, d_stats = _run(d, params["D"], batch_stats["D"], x_real)
  d_fake_sg, d_stats_new = _run(d, params["D"], d_stats, jax.lax.stop_gradient(x_fake))
  if mode == "single-subtract":
    d_fake, _ = _run(d, params["D"], d_stats, x_fake)
    lam_term = d_fake.mean() - d_fake_sg.mean()
  elif mode == "single-freeze":
    d_frozen, _ = _run(d, jax.lax.stop_gradient(params["D"]), d_stats, x_fake)
    lam_term = d_frozen.mean() - jax.lax.stop_gradient(d_frozen.mean())
  else:
    raise ValueError(f"mode must be 'single-freeze' or 'single-subtract', got {mode!r}")
  d_loss = d_hinge_loss(d_real, d_fake_sg)
  loss = d_loss + lam * lam_term
  metrics = {"d_loss": d_loss, "g_loss": g_hinge_loss(d_fake_sg), "lam_term": lam_term,
             "d_real": d_real.mean(), "d_fake": d_fake_sg.mean()}
  return loss, ({"G": g_stats, "D": d_stats_new}, metrics)


def fused_grads(params: Params, batch_stats: Params, x_real, z, *, generator, discriminator,
                lam: float = 1.0) -> tuple[Params, tuple[Params, dict]]:
  """The gradient of single_loss(mode='single-freeze') with ONE forward of D on the fake batch (mode "single").

  D's pass on G(z) is linearized once (jax.vjp) and its VJP applied with two cotangents: the hinge's, kept
  for D's parameters, and lam / B, kept for the input G(z) and carried back through G. Inside jit XLA drops
  the unused half of each VJP, so D runs forward once and backward once per half, not twice over.
  """
  g, d = generator, discriminator
  x_fake, g_vjp, g_stats = jax.vjp(lambda p: _run(g, p, batch_stats["G"], z), params["G"], has_aux=True)

  def real_part(p_d):
    d_real, stats = _run(d, p_d, batch_stats["D"], x_real)
    return jax.nn.relu(1.0 + d_real).mean(), (stats, d_real)

  (real_loss, (d_stats, d_real)), grad_d_real = jax.value_and_grad(real_part, has_aux=True)(params["D"])
  d_fake, d_vjp, d_stats = jax.vjp(lambda p, x: _run(d, p, d_stats, x), params["D"], x_fake, has_aux=True)
  n = d_fake.shape[0]
  grad_d_fake, _ = d_vjp(jnp.where(1.0 - d_fake > 0, -1.0 / n, 0.0).astype(d_fake.dtype))
  _, grad_x = d_vjp(jnp.full_like(d_fake, lam / n))
  (grad_g,) = g_vjp(grad_x)
  grads = {"G": grad_g, "D": jax.tree.map(jnp.add, grad_d_real, grad_d_fake)}
  d_loss = real_loss + jax.nn.relu(1.0 - d_fake).mean()
  metrics = {"d_loss": d_loss, "g_loss": g_hinge_loss(d_fake), "d_real": d_real.mean(), "d_fake": d_fake.mean()}
  return grads, ({"G": g_stats, "D": d_stats}, metrics)


def single_step(state: GanState, x_real, z, *, generator, discriminator, tx: Optimizers, lam: float = 1.0,
                mode: Literal["single", "single-freeze", "single-subtract"] = "single"):
  """One step of both optimizers on the single loss's gradient; "single" is "single-freeze" with one D forward
  on the fakes (fused_grads)."""
  kw = dict(generator=generator, discriminator=discriminator, lam=lam)
  if mode == "single":
    grads, (stats, metrics) = fused_grads(state.params, state.batch_stats, x_real, z, **kw)
  else:
    grads, (stats, metrics) = jax.grad(single_loss, has_aux=True)(state.params, state.batch_stats, x_real, z,
                                                                  mode=mode, **kw)
  new = {k: _apply(tx, k, grads[k], state.opt_state[k], state.params[k]) for k in ("G", "D")}
  return state.replace(step=state.step + 1, params={k: v[0] for k, v in new.items()}, batch_stats=stats,
                       opt_state={k: v[1] for k, v in new.items()}), metrics


def discriminator_step(state: GanState, x_real, z, *, generator, discriminator, tx: Optimizers):
  """The D half of alternating training: one step of tx['D'] on the hinge loss against sg(G(z))."""
  g, d = generator, discriminator

  def d_loss_fn(p_d):
    x_fake, g_stats = _run(g, state.params["G"], state.batch_stats["G"], z)
    d_real, d_stats = _run(d, p_d, state.batch_stats["D"], x_real)
    d_fake, d_stats = _run(d, p_d, d_stats, jax.lax.stop_gradient(x_fake))
    return d_hinge_loss(d_real, d_fake), ({"G": g_stats, "D": d_stats}, d_real.mean(), d_fake.mean())

  (d_loss, (stats, d_real, d_fake)), grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state.params["D"])
  p_d, opt_d = _apply(tx, "D", grads, state.opt_state["D"], state.params["D"])
  state = state.replace(params={**state.params, "D": p_d}, batch_stats=stats, opt_state={**state.opt_state, "D": opt_d})
  return state, {"d_loss": d_loss, "d_real": d_real, "d_fake": d_fake}


def generator_step(state: GanState, z, *, generator, discriminator, tx: Optimizers):
  """The G half: one step of tx['G'] on E[D(G(z))] against the current D."""
  g, d = generator, discriminator

  def g_loss_fn(p_g):
    x_fake, g_stats = _run(g, p_g, state.batch_stats["G"], z)
    d_fake, _ = _run(d, state.params["D"], state.batch_stats["D"], x_fake)
    return g_hinge_loss(d_fake), g_stats

  (g_loss, g_stats), grads = jax.value_and_grad(g_loss_fn, has_aux=True)(state.params["G"])
  p_g, opt_g = _apply(tx, "G", grads, state.opt_state["G"], state.params["G"])
  state = state.replace(params={**state.params, "G": p_g}, batch_stats={**state.batch_stats, "G": g_stats},
                        opt_state={**state.opt_state, "G": opt_g})
  return state, {"g_loss": g_loss}


def alternating_step(state: GanState, x_real, z_d, z_g=None, *, generator, discriminator, tx: Optimizers):
  """1:1 alternating training: a D step on the hinge loss, then a G step against the NEW D."""
  kw = dict(generator=generator, discriminator=discriminator, tx=tx)
  state, m_d = discriminator_step(state, x_real, z_d, **kw)
  state, m_g = generator_step(state, z_d if z_g is None else z_g, **kw)
  return state.replace(step=state.step + 1), {**m_d, **m_g}


def train_step(state: GanState, x_real, key, *, mode: Mode, generator, discriminator, tx: Optimizers, z_dim: int,
               lam: float = 1.0, ema_decay: float = 0.0) -> tuple[GanState, dict]:
  """One training step from a key: z ~ N(0, I) (alternating: a second z, from fold_in(key, 1), for G's half);
  `mode` "alternating" is alternating_step, the others single_step's; then G's EMA (if the state has one)."""
  z = jax.random.normal(key, (x_real.shape[0], z_dim))
  kw = dict(generator=generator, discriminator=discriminator, tx=tx)
  if mode == "alternating":
    state, metrics = alternating_step(state, x_real, z, jax.random.normal(jax.random.fold_in(key, 1), z.shape), **kw)
  else:
    state, metrics = single_step(state, x_real, z, lam=lam, mode=mode, **kw)
  return ema_update(state, ema_decay), metrics


@jax.custom_vjp
def reverse_gradient(x):
  """Identity forward; negates the gradient backward."""
  return x


reverse_gradient.defvjp(lambda x: (x, None), lambda _, g: (jax.tree.map(jnp.negative, g),))

ZERO_SUM_LOSSES = ("minimax",)


def gradient_reversal_loss(params: Params, batch_stats: Params, x_real, z, *, generator, discriminator,
                           loss: str = "minimax") -> tuple[jax.Array, tuple[Params, dict]]:
  """One loss for a zero-sum GAN: V(D, reverse_gradient(G(z))), D minimizing V and G maximizing it.

  Only valid when D and G play min-max on the SAME objective; here the minimax loss
  V = E softplus(D(x)) + E softplus(-D(G(z))) (real scored low). Any other loss (hinge, LSGAN) is refused:
  its G objective is not -V, so reversing D's gradient would train G on the wrong loss.
  """
  if loss not in ZERO_SUM_LOSSES:
    raise ValueError(f"gradient reversal needs a zero-sum loss (one of {ZERO_SUM_LOSSES}); the {loss!r} loss is not "
                     "zero-sum (its generator does not minimize -1 x the discriminator's loss): use "
                     "single_loss(mode='single-freeze') instead")
  x_fake, g_stats = _run(generator, params["G"], batch_stats["G"], z)
  d_real, d_stats = _run(discriminator, params["D"], batch_stats["D"], x_real)
  d_fake, d_stats = _run(discriminator, params["D"], d_stats, reverse_gradient(x_fake))
  value = jax.nn.softplus(d_real).mean() + jax.nn.softplus(-d_fake).mean()
  return value, ({"G": g_stats, "D": d_stats}, {"v": value})


def sample(generator: nn.Module, state: GanState, z_BZ: jax.Array, ema: bool = False) -> jax.Array:
  """Generator samples with BatchNorm's running statistics (inference mode); with `ema`, from the EMA of G's
  params (and G's running statistics)."""
  params = state.ema_g if ema else state.params["G"]
  return generator.apply({"params": params, "batch_stats": state.batch_stats["G"]}, z_BZ, train=False)
