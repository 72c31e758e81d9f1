"""An energy-based model of Fashion-MNIST (or MNIST) trained with Langevin samples from a replay buffer
(SPEC.md §3; Du & Mordatch 2019).

    python -m train.ebm --steps 400                  # ~5 minutes on 2 CPU cores: first garments in the buffer
    python -m train.ebm --steps 20000 --channels 64  # the issue's full-size energy net, for a GPU

Defaults chosen for a CPU: energy net width c = 16 (--channels); Adam lr 1e-3 with beta1 = 0; lambda = 0.1 (the
code of Du & Mordatch uses 1; of two 300-step trials, lr 3e-4 with lambda 1 and lr 1e-3 with lambda 0.1 — both
changed at once, so not an ablation — the second gave the better buffer samples);
chains of 20 steps with the official step 20 (their "step 10"), noise 0.005, gradient clip 0.01.

Each step draws as many fakes as reals: chains start from the replay buffer (or uniform noise with probability
--reinit-prob), run --langevin-steps steps, join the batch as constants and go back into the buffer. Writes
<workdir>/buffer_<step>.png (64 buffer samples) and fresh_<step>.png (64 chains of --fresh-steps steps from noise)
every --sample-every steps and at the end; FID-FMNIST of --fid-samples buffer samples and fresh samples every
--fid-every steps (and at the end) into metrics.jsonl; orbax checkpoints hold params, optimizer, PRNG key and
the buffer, so a resumed run equals an uninterrupted one. Draw from a trained model: `python -m train.ebm_sample`.
"""

import dataclasses
import functools
import sys
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtricks import cli, ebm, loop, metrics, parallel, replay
from jaxtricks.cli import require
from jaxtricks.data import load, pipeline
from jaxtricks.images import save_grid
from jaxtricks.models.energy import EnergyNet

IMAGE_SHAPE = (28, 28, 1)


@dataclasses.dataclass(frozen=True)
class Config:
  """Train an energy-based model with Langevin dynamics and a replay buffer."""
  dataset: Literal["fashion_mnist", "mnist"] = "fashion_mnist"
  steps: int = 400
  batch_size: int = dataclasses.field(default=64, metadata={"help": "reals per step (and as many fakes)"})
  lr: float = 1e-3
  beta1: float = dataclasses.field(default=0.0, metadata={"help": "Adam beta1 (0 as in Du & Mordatch's code)"})
  reg: float = dataclasses.field(
      default=0.1, metadata={"help": "lambda of the energy-magnitude penalty (Du & Mordatch's code: 1)"})
  channels: int = dataclasses.field(
      default=16, metadata={"help": "energy net width c: stem c, stages c, 2c, 4c (the issue's net: 64)"})
  langevin_steps: int = 20
  step_size: float = dataclasses.field(default=20.0, metadata={"help": "epsilon in x - (epsilon/2) grad U"})
  noise_scale: float = dataclasses.field(default=0.005, metadata={"help": "std of the Langevin noise; 0: sqrt(step size)"})
  grad_clip: float = dataclasses.field(default=0.01, metadata={"help": "clip grad_x U to +-this; 0: no clip"})
  reinit_prob: float = 0.05
  buffer_size: int = 10000
  buffer_dtype: Literal["uint8", "float32"] = "uint8"
  unroll: int = dataclasses.field(
      default=-1, metadata={"help": "lax.scan unroll of the chain; 0: fully; -1: fully on CPU, else 1"})
  fresh_steps: int = dataclasses.field(
      default=60, metadata={"help": "Langevin steps of fresh chains from noise (rounded up to --langevin-steps)"})
  seed: int = 0
  workdir: str = "runs/ebm"
  data_dir: str = dataclasses.field(default="", metadata={"help": "raw data folder (else $JAXTRICKS_DATA)"})
  checkpoint_every: int = 200
  sample_every: int = 100
  fid_every: int = dataclasses.field(default=1000, metadata={"help": "steps between FID evaluations (and at the end)"})
  fid_samples: int = 500
  devices: int = dataclasses.field(default=0, metadata={"help": "devices to split each batch over; 0: all visible"})
  progress: bool = True

  def __post_init__(self):
    for name in ("steps", "batch_size", "channels", "langevin_steps", "buffer_size", "fresh_steps",
                 "checkpoint_every", "sample_every", "fid_every", "fid_samples"):
      require(getattr(self, name) > 0, f"{cli.flag(name)} must be positive, got {getattr(self, name)}")
    for name in ("lr", "step_size"):
      require(getattr(self, name) > 0, f"{cli.flag(name)} must be positive, got {getattr(self, name)}")
    for name in ("reg", "noise_scale", "grad_clip"):
      require(getattr(self, name) >= 0, f"{cli.flag(name)} must be >= 0, got {getattr(self, name)}")
    require(0 <= self.beta1 < 1, f"--beta1 must be in [0, 1), got {self.beta1}")
    require(0 <= self.reinit_prob <= 1, f"--reinit-prob must be in [0, 1], got {self.reinit_prob}")
    require(self.unroll >= -1, f"--unroll must be >= -1 (0: fully, -1: fully on CPU), got {self.unroll}")
    require(self.buffer_size >= self.batch_size,
            f"--buffer-size {self.buffer_size} must hold at least one batch (--batch-size {self.batch_size})")


# What defines a run's state (resuming with other values is refused); sampler settings may change on resume.
FINGERPRINT = ("dataset", "batch_size", "channels", "buffer_size", "buffer_dtype", "seed")


def make_model(channels: int) -> EnergyNet:
  return EnergyNet(stem=channels, stages=(channels, 2 * channels, 4 * channels))


def default_unroll() -> int | bool:
  """XLA:CPU runs a chain's steps 3-6x faster unrolled than inside a scan/while loop (benchmarks/RESULTS.md);
  elsewhere the scan is the norm."""
  return True if jax.default_backend() == "cpu" else 1


def unroll(config: Config) -> int | bool:
  return default_unroll() if config.unroll == -1 else (config.unroll or True)


def sampler(config: Config) -> ebm.SamplerConfig:
  return ebm.SamplerConfig(num_steps=config.langevin_steps, step_size=config.step_size,
                           noise_scale=config.noise_scale or None, grad_clip=config.grad_clip or None,
                           reinit_prob=config.reinit_prob, unroll=unroll(config))


def optimizer(config: Config) -> optax.GradientTransformation:
  return optax.adam(config.lr, b1=config.beta1, b2=0.999)


def make_state(config: Config, key: jax.Array, tx: optax.GradientTransformation | None = None,
               model: EnergyNet | None = None) -> ebm.EbmState:
  """A fresh state; pass `tx` and `model` to get states whose static fields are identical (jit shardings)."""
  tx = optimizer(config) if tx is None else tx
  model = make_model(config.channels) if model is None else model
  return ebm.init(key, model, IMAGE_SHAPE, tx, buffer_size=config.buffer_size,
                  buffer_dtype=jnp.dtype(config.buffer_dtype))


def train_step(state: ebm.EbmState, batch: dict, key: jax.Array, *, config: Config, chain_sharding=None):
  """Langevin fakes from the buffer, then one Adam step on the contrastive loss."""
  return ebm.train_step(state, batch, key, sampler=sampler(config), reg=config.reg, chain_sharding=chain_sharding)


@functools.partial(jax.jit, static_argnums=3)
def _continue_chains(state: ebm.EbmState, x: jax.Array, key: jax.Array, sampler_config: ebm.SamplerConfig):
  return ebm.run_chains(ebm.energy_fn(state), x, key, sampler_config)


def fresh_samples(state: ebm.EbmState, key: jax.Array, n: int, num_steps: int, sampler_config: ebm.SamplerConfig,
                  chunk: int = 500) -> np.ndarray:
  """n chains from uniform noise (no buffer), run for num_steps rounded up to a multiple of the sampler's
  steps (one compiled chain called repeatedly), in chunks of at most `chunk` chains."""
  rounds = -(-num_steps // sampler_config.num_steps)
  parts = []
  for start in range(0, n, chunk):
    k = jax.random.fold_in(key, start)
    x = replay.uniform_noise(k, (min(chunk, n - start), *IMAGE_SHAPE), sampler_config.data_range)
    for r in range(rounds):
      x = _continue_chains(state, x, jax.random.fold_in(k, r + 1), sampler_config)
    parts.append(np.asarray(x))
  return np.concatenate(parts)


def to_unit_range(key, batch):
  del key
  return {"image": pipeline.to_float(batch["image"])}


def run(config: Config, hooks=()):
  mesh = parallel.make_mesh(config.devices, batch_size=config.batch_size)   # before any data is read
  images, _ = load(config.dataset, "train", data_dir=config.data_dir or None)
  test_images, _ = load(config.dataset, "test", data_dir=config.data_dir or None)
  require(config.buffer_size % mesh.size == 0,
          f"--buffer-size {config.buffer_size} does not divide by the {mesh.size} devices it is split over")
  key = jax.random.PRNGKey(config.seed)
  init_key, data_key, step_key, sample_key = jax.random.split(key, 4)
  batches = pipeline.DeviceBatches({"image": images}, batch_size=config.batch_size, key=data_key,
                                   transform=to_unit_range, mesh=mesh)
  fid = metrics.fid_against(test_images)
  chains = sampler(config)
  step_fn = functools.partial(train_step, config=config, chain_sharding=parallel.sharded(mesh))
  # one optimizer and one model: the state's static fields (tx, apply_fn) must be those of its shardings
  tx, model = optimizer(config), make_model(config.channels)
  shardings = ebm.shardings(jax.eval_shape(lambda: make_state(config, init_key, tx, model)), mesh)
  workdir = Path(config.workdir)

  def evaluate(state):
    return {"fid_fmnist_buffer": fid(np.asarray(replay.latest(state.buffer, config.fid_samples))),
            "fid_fmnist_fresh": fid(fresh_samples(state, sample_key, config.fid_samples, config.fresh_steps, chains))}

  def sample_hook(step, state):
    if step % config.sample_every == 0 or step == config.steps:
      save_grid(np.asarray(replay.latest(state.buffer, 64)), workdir / f"buffer_{step:06d}.png", ncol=8)
      save_grid(fresh_samples(state, sample_key, 64, config.fresh_steps, chains), workdir / f"fresh_{step:06d}.png",
                ncol=8)

  return loop.run(
      loop.LoopConfig(steps=config.steps, workdir=config.workdir, checkpoint_every=config.checkpoint_every,
                      eval_every=config.fid_every, progress=config.progress,
                      progress_keys=("energy_real", "energy_fake"),
                      divergence_advice="Resume from it with a lower --lr, more --langevin-steps or a larger --reg"),
      init_fn=lambda: make_state(config, init_key, tx, model),
      train_step=parallel.jit_step(step_fn, mesh, shardings),
      batches=batches, key=step_key, eval_fn=evaluate, hooks=[sample_hook, *hooks],
      fingerprint={k: v for k, v in dataclasses.asdict(config).items() if k in FINGERPRINT}, state_sharding=shardings)


if __name__ == "__main__":
  sys.exit(cli.main(Config, run, prog="python -m train.ebm"))
