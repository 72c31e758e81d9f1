"""Energy-based model training with Langevin samples from a replay buffer (docs/techniques.md#ebm).

Loss per batch of reals x_r and fakes x_f (constants: no gradient flows through the chain):
    mean U(x_r) - mean U(x_f) + reg * (mean U(x_r)^2 + mean U(x_f)^2)
The seed writes reg * [U^2(x_r) - U^2(x_f)]; the paper and its code use the PLUS (reg = 1), which keeps fake
energies bounded; this is the PLUS.
"""

import dataclasses
import functools
import numbers
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxtricks import langevin, parallel, replay
from jaxtricks.models.energy import EnergyNet, StridedEnergyNet


def contrastive_loss(e_real_B: jax.Array, e_fake_B: jax.Array, *, reg: float = 1.0) -> jax.Array:
  """mean U(x_r) - mean U(x_f) + reg (mean U(x_r)^2 + mean U(x_f)^2)."""
  if jnp.ndim(e_real_B) != 1 or jnp.ndim(e_fake_B) != 1:
    raise ValueError(f"contrastive_loss: energies must be [B] vectors, got shapes {jnp.shape(e_real_B)} and "
                     f"{jnp.shape(e_fake_B)}")
  if isinstance(reg, (int, float)) and not reg >= 0:
    raise ValueError(f"contrastive_loss: reg must be >= 0, got {reg}")
  return e_real_B.mean() - e_fake_B.mean() + reg * ((e_real_B ** 2).mean() + (e_fake_B ** 2).mean())


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """A Langevin chain's settings (jaxtricks.langevin): noise_scale None is sqrt(step_size), grad_clip None no
  clip; unroll as `scan_unroll` reads it."""
  num_steps: int = 60
  step_size: float = 20.0          # the official code's "step 10" in x - (step_size/2) grad
  noise_scale: float | None = 0.005
  grad_clip: float | None = 0.01
  reinit_prob: float = 0.05
  data_range: tuple[float, float] = (0.0, 1.0)
  unroll: int | bool | Literal["auto", "full"] = 1
  augment_shift: int = 0           # > 0: `augment_starts` on the chains' starting points (Improved CD); 0: off

  def __post_init__(self):   # ValueError naming the field (langevin.langevin_chain checks the chain's own)
    if not 0 <= self.reinit_prob <= 1:
      raise ValueError(f"SamplerConfig: reinit_prob must be in [0, 1], got {self.reinit_prob}")
    if self.unroll not in ("auto", "full") and not isinstance(self.unroll, (int, bool)):
      raise ValueError(f"SamplerConfig: unroll must be auto, full, True, False or an integer >= 1, got {self.unroll!r}")
    if isinstance(self.augment_shift, bool) or not isinstance(self.augment_shift, int) or self.augment_shift < 0:
      raise ValueError(f"SamplerConfig: augment_shift must be an integer >= 0, got {self.augment_shift!r}")


# On XLA:CPU the chain's lax.scan unrolls blocks of this many steps (SamplerConfig.unroll "auto"): chains up to this
# long compile as fully unrolled as before (train.ebm's 20-step chains, bit for bit), longer ones as a loop of blocks.
CPU_UNROLL_BLOCK = 20


def default_unroll() -> int:
  """lax.scan's `unroll` of a chain on this backend: `CPU_UNROLL_BLOCK` on a CPU, else 1.

  On XLA:CPU a chain of K <= B = CPU_UNROLL_BLOCK steps is fully unrolled, 2.5-4x faster than the same steps in a
  while loop; a longer one is a while loop over blocks of B unrolled steps plus the K mod B left unrolled, so at
  most 2B - 1 steps are compiled whatever K: compile time grows faster than K when unrolled (a 256-step chain had
  not compiled in 5 minutes), and a step inside the loop costs the same for any block size, 1 included
  (`python -m benchmarks.speed.langevin --long-chains 500`, benchmarks/speed/README.md). Elsewhere the plain scan (a GPU
  runs it at the unrolled speed and compiles it 9x faster)."""
  return CPU_UNROLL_BLOCK if jax.default_backend() == "cpu" else 1


def scan_unroll(unroll: int | bool | Literal["auto", "full"]) -> int | bool:
  """lax.scan's `unroll` of a chain: "full" (True) unrolls every step, "auto" is `default_unroll()` on this
  backend, an int N unrolls N steps per loop iteration (see `langevin.langevin_chain`)."""
  if unroll == "auto":
    return default_unroll()
  return True if unroll == "full" else unroll


def energy_net(channels: int, kind: str = "resnet", *, dtype=None, conv: str = "xla") -> nn.Module:
  """The energy net: "resnet" at width c: stem c, stages c, 2c, 4c (Du & Mordatch's design; their 28x28 net is
  c = 64); "strided": the UvA tutorial's four stride-2 convolutions at c, 2c, 4c, 4c (its net is c = 16), with
  compute `dtype` (None or "float32": float32; e.g. "bfloat16", the parameters staying float32) and its 2x2
  convolutions computed as `conv` (models.energy.StridedEnergyNet: "xla", "taps", "shifted"; the same parameters in
  all). The residual net has neither setting: ValueError naming them."""
  dtype = None if dtype is None or jnp.dtype(dtype) == jnp.float32 else jnp.dtype(dtype)
  if kind == "strided":
    return StridedEnergyNet(features=(channels, 2 * channels, 4 * channels, 4 * channels), dtype=dtype, conv=conv)
  if dtype is not None or conv != "xla":
    raise ValueError(f"energy_net: dtype and conv are the strided net's; the residual net takes neither (got dtype "
                     f"{dtype}, conv {conv!r})")
  return EnergyNet(stem=channels, stages=(channels, 2 * channels, 4 * channels))


@struct.dataclass
class EbmState:
  """Arrays only; the model and the optimizer are passed to the functions that need them."""
  step: jax.Array
  params: Any
  stats: Any                       # spectral-norm power-iteration vectors
  opt_state: Any
  buffer: replay.ReplayBuffer


def energy_fn(model: nn.Module, params, stats):
  """x -> U(x) with frozen spectral-norm statistics (what Langevin differentiates)."""
  return lambda x: model.apply({"params": params, "batch_stats": stats}, x, update_stats=False)


def run_chains(energy, x0: jax.Array, key: jax.Array, sampler: SamplerConfig) -> jax.Array:
  """`sampler.num_steps` Langevin steps from x0 under `energy`; no gradient flows out (fakes are constants)."""
  x = langevin.langevin_chain(energy, x0, key, num_steps=sampler.num_steps, step_size=sampler.step_size,
                              noise_scale=sampler.noise_scale, grad_clip=sampler.grad_clip,
                              data_range=sampler.data_range, unroll=scan_unroll(sampler.unroll))
  return jax.lax.stop_gradient(x)


def augment_starts(key: jax.Array, x_BHWC: jax.Array, *, max_shift: int = 2) -> jax.Array:
  """Improved CD's data-augmentation transitions (Du et al. 2021, arXiv 2012.01316), for grey garments:
  each chain's starting point flipped left-right with probability 1/2 and shifted by up to `max_shift` pixels each
  way (zero-padded), so that a chain restarted from the buffer explores past the mode it left. Their CIFAR-10
  transforms (colour jitter, resized crops, blur) are not used: ours is a flip and a shift, our choice for 28x28
  greyscale images (jaxtricks.data.pipeline's random_flip and random_crop, dm-pix)."""
  # imported here: the data package loads tensorflow-datasets, which a technique does not need
  from jaxtricks.data import pipeline
  k_flip, k_shift = jax.random.split(key)
  return pipeline.random_crop(k_shift, pipeline.random_flip(k_flip, x_BHWC), pad=max_shift)


def sample_chains(model: nn.Module, state: EbmState, key: jax.Array, batch_size: int, sampler: SamplerConfig,
                  buffer: replay.ReplayBuffer | None = None, chain_sharding=None):
  """(samples, new buffer): chains started from the buffer (or noise), run, and pushed back.
  `chain_sharding` (e.g. jaxtricks.parallel.sharded(mesh)) splits the chains over devices."""
  buffer = state.buffer if buffer is None else buffer
  k_init, k_chain = jax.random.split(key)
  x0 = replay.sample(buffer, k_init, batch_size, reinit_prob=sampler.reinit_prob)
  if sampler.augment_shift:   # a Python branch: off, the step compiles (and draws its keys) as before
    x0 = augment_starts(jax.random.fold_in(k_init, 1), x0, max_shift=sampler.augment_shift)
  if chain_sharding is not None:
    x0 = jax.lax.with_sharding_constraint(x0, chain_sharding)
  x = run_chains(energy_fn(model, state.params, state.stats), x0, k_chain, sampler)
  return x, replay.push(buffer, x)


def stack(trees):
  """Stacks same-shaped pytrees (e.g. the params of several trained models) along a new axis 0."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def sample_ensemble(model: nn.Module, params_M, stats_M, buffer: replay.ReplayBuffer, key: jax.Array,
                    chains_per_model: int, sampler: SamplerConfig, chain_sharding=None):
  """Several models sampling with ONE shared buffer (Du & Mordatch 2019's ensemble), vmapped over models.

  params_M / stats_M are M models' variables stacked on axis 0 (`stack`). M * n starting points are drawn from
  the shared buffer (or noise), model m runs n chains under its own energy, and all M * n results are pushed
  back, so a sample refined by one model may be picked up by another in the next round.
  `chain_sharding` (a sharding of [M, n, ...] arrays, e.g. NamedSharding(mesh, P(None, 'data'))) splits each
  model's chains over devices. Returns (samples [M, n, ...], new buffer).
  """
  num_models = jax.tree.leaves(params_M)[0].shape[0]
  k_init, k_chain = jax.random.split(key)
  x0 = replay.sample(buffer, k_init, num_models * chains_per_model, reinit_prob=sampler.reinit_prob)
  x0_M = x0.reshape((num_models, chains_per_model) + x0.shape[1:])
  if chain_sharding is not None:
    x0_M = jax.lax.with_sharding_constraint(x0_M, chain_sharding)

  def one_model(params, stats, x, k):
    return run_chains(energy_fn(model, params, stats), x, k, sampler)

  x_M = jax.vmap(one_model)(params_M, stats_M, x0_M, jax.random.split(k_chain, num_models))
  return x_M, replay.push(buffer, x_M.reshape(x0.shape))


def kl_loss(model: nn.Module, params, stats, x_fake_B: jax.Array, *, step_size: float,
            data_range: tuple[float, float] | None = (0.0, 1.0)) -> jax.Array:
  """The KL term of Improved Contrastive Divergence (Du et al. 2021, arXiv 2012.01316, eq. 7): the gradient the
  usual loss leaves out, of the sampler's output with respect to the energy's parameters, taken through one more
  Langevin step from the constant fakes under U_theta,

      x~ = x_f - (step_size / 2) grad_x U_theta(x_f), kept in data_range;   loss = mean U_stop(theta)(x~),

  so that minimising it moves theta to make that step land lower on the (frozen) energy: the gradient reaches theta
  through the step only. The step is the sampler's without its noise and without its gradient clip (our choice: a
  clip passes no gradient wherever it binds), so it is longer than a sampler step where the clip would bind, and
  pixels it pushes past data_range pass no gradient either. Their entropy term (nearest neighbours in the buffer)
  is not included."""
  energy = energy_fn(model, params, stats)
  x = x_fake_B - 0.5 * step_size * jax.grad(lambda v: energy(v).sum())(x_fake_B)
  x = jnp.clip(x, *data_range) if data_range is not None else x
  return energy_fn(model, jax.lax.stop_gradient(params), stats)(x).mean()


def train_step(state: EbmState, batch: dict, key: jax.Array, *, model: nn.Module, tx: optax.GradientTransformation,
               sampler: SamplerConfig, reg: float = 1.0, kl: float = 0.0, chain_sharding=None):
  """Sample as many fakes as reals with the buffer, then one optimizer step on the contrastive loss (plus `kl` times
  Improved CD's KL term, `kl_loss`, when kl > 0)."""
  x_real = batch["image"]
  x_fake, buffer = sample_chains(model, state, key, x_real.shape[0], sampler, chain_sharding=chain_sharding)

  def loss_fn(params):
    energies, updates = model.apply({"params": params, "batch_stats": state.stats},
                                    jnp.concatenate([x_real, x_fake]), update_stats=True, mutable=["batch_stats"])
    e_real, e_fake = jnp.split(energies, 2)
    loss = contrastive_loss(e_real, e_fake, reg=reg)
    if kl:   # a Python branch: kl = 0 compiles the step as before
      loss = loss + kl * kl_loss(model, params, state.stats, x_fake, step_size=sampler.step_size,
                                 data_range=sampler.data_range)
    return loss, (updates["batch_stats"], e_real.mean(), e_fake.mean())

  (loss, (stats, e_real, e_fake)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {"loss": loss, "energy_real": e_real, "energy_fake": e_fake, "grad_norm": optax.global_norm(grads)}
  return state.replace(step=state.step + 1, params=params, stats=stats, opt_state=opt_state, buffer=buffer), metrics


def buffer_shardings(buffer: replay.ReplayBuffer, mesh) -> replay.ReplayBuffer:
  """A replay buffer's data-parallel layout: its items split along 'data' like the chains, the counters
  replicated. Sampling draws from the whole buffer; XLA moves the drawn rows."""
  tree = jax.tree.map(lambda _: parallel.replicated(mesh), buffer)
  return tree.replace(data=parallel.sharded(mesh))


def shardings(state: EbmState, mesh) -> EbmState:
  """The data-parallel layout of a state (or its eval_shape): the buffer as `buffer_shardings`, everything else
  replicated."""
  tree = jax.tree.map(lambda _: parallel.replicated(mesh), state)
  return tree.replace(buffer=buffer_shardings(state.buffer, mesh))


def init(key, model, image_shape, tx, *, buffer_size: int = 10000, buffer_dtype=jnp.uint8,
         data_range=(0.0, 1.0)) -> EbmState:
  variables = model.init(key, jnp.zeros((1, *image_shape)), update_stats=True)
  params = variables["params"]
  return EbmState(step=jnp.zeros((), jnp.int32), params=params, stats=variables.get("batch_stats", {}),
                  opt_state=tx.init(params),
                  buffer=replay.create(buffer_size, image_shape, dtype=buffer_dtype, data_range=data_range))


@functools.partial(jax.jit, static_argnums=(0, 5))
def _continue_chains(model, params, stats, x, key, sampler: SamplerConfig):
  return run_chains(energy_fn(model, params, stats), x, key, sampler)


def fresh_samples(model: nn.Module, params, stats, key: jax.Array, image_shape: tuple[int, ...], n: int,
                  num_steps: int, sampler: SamplerConfig, chunk: int = 500) -> np.ndarray:
  """n chains from uniform noise (no buffer), run for num_steps rounded up to a multiple of the sampler's
  steps (one compiled chain called repeatedly), in chunks of at most `chunk` chains."""
  if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral) or num_steps < 1:
    raise ValueError(f"fresh_samples: num_steps must be a positive integer, got {num_steps!r}")
  if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
    raise ValueError(f"fresh_samples: n must be a positive integer, got {n!r}")
  rounds = -(-num_steps // sampler.num_steps)
  parts = []
  for start in range(0, n, chunk):
    k = jax.random.fold_in(key, start)
    x = replay.uniform_noise(k, (min(chunk, n - start), *image_shape), sampler.data_range)
    for r in range(rounds):
      x = _continue_chains(model, params, stats, x, jax.random.fold_in(k, r + 1), sampler)
    parts.append(np.asarray(x))
  return np.concatenate(parts)


def buffer_from_checkpoint(tree: dict, data_range=(0.0, 1.0)) -> replay.ReplayBuffer:
  """The replay buffer of a state restored as plain dicts (checkpoints.restore without a target)."""
  b = tree["buffer"]
  return replay.ReplayBuffer(data=b["data"], count=b["count"], pointer=b["pointer"], data_range=tuple(data_range))


# Out-of-distribution scores: higher = more in-distribution (the convention of metrics.auroc).
# -U(x) alone fails on simple inputs: an EBM of Fashion-MNIST gives MNIST digits (mostly black, few strokes) lower
# energy than its own test images, as likelihood models do (Nalisnick et al. 2019, "Do deep generative models know
# what they don't know?"). The scores below correct for that in the three ways that literature proposes.

def energy_score(e_B: jax.Array) -> jax.Array:
  """-U(x): the unnormalized log density."""
  return -e_B


def input_gradient_norm(energy, x_B: jax.Array) -> jax.Array:
  """||dU/dx||_2 per example: how far x is from a stationary point of the energy (a mode). Used as the score
  -||dU/dx|| (Grathwohl et al. 2020, "Your classifier is secretly an energy based model", score (c))."""
  g = jax.grad(lambda x: energy(x).sum())(x_B)
  return jnp.sqrt(jnp.sum(jnp.reshape(g, (g.shape[0], -1)) ** 2, axis=-1))


def typicality_score(e_B: jax.Array, *, e_reference_N: jax.Array) -> jax.Array:
  """-|U(x) - mean U(reference)| / std U(reference): a per-example typicality test (Nalisnick et al. 2019's
  test at batch size 1): in-distribution inputs have the energies the training data has, neither higher (noise)
  nor lower (simpler images than the data's). `e_reference_N`: energies of held-out in-distribution images."""
  mu, sd = jnp.mean(e_reference_N), jnp.std(e_reference_N) + 1e-12
  return -jnp.abs(e_B - mu) / sd


def complexity_corrected_score(e_B: jax.Array, bits_B: jax.Array, *, temperature: float) -> jax.Array:
  """-U(x)/T + ln(2) L(x): Serra et al. 2020 ("Input complexity and out-of-distribution detection with
  likelihood-based generative models"), S(x) = -log p(x) - L(x) with sign flipped, log p(x) = -U(x)/T - log Z
  (the constant dropped) and L(x) the bits of a generic compressor (images.png_bits). T converts energy to nats:
  an EBM's energy has no fixed scale; `standardized_temperature` gives both terms one scale on in-distribution
  data, which needs no out-of-distribution data at all."""
  return -e_B / temperature + jnp.log(2.0) * bits_B


def standardized_temperature(e_reference_N: jax.Array, bits_reference_N: jax.Array) -> jax.Array:
  """T = std U / std (ln 2 L) over held-out in-distribution images: the temperature at which the two terms of
  `complexity_corrected_score` vary equally on the data. (Large T leaves the compressor alone, which ranks simple
  images such as MNIST as out but uniform noise as in; small T leaves -U, which does the opposite.)"""
  return jnp.std(e_reference_N) / (jnp.log(2.0) * jnp.std(bits_reference_N))
