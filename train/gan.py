"""A DCGAN on Fashion-MNIST trained with one loss through stop_gradient, or with 1:1 alternating updates
(SPEC.md §2).

    python -m train.gan --mode single --steps 2000          # fused freeze form: one step updates G and D
    python -m train.gan --mode single-subtract               # the seed's subtraction form
    python -m train.gan --mode alternating                   # D step, then G step against the new D

Writes <workdir>/samples_<step>.png every --sample-every steps and at the end, FID-FMNIST of --fid-samples
samples against the test set every --fid-every steps into metrics.jsonl, and orbax checkpoints (resume).
"""

import dataclasses
import functools
import sys
from pathlib import Path
from typing import Literal

import jax
import numpy as np
import optax

from jaxtricks import cli, gan, loop, metrics, parallel
from jaxtricks.cli import require
from jaxtricks.data import load, pipeline
from jaxtricks.images import save_grid
from jaxtricks.models.dcgan import Discriminator, Generator

FORMS = {"single": "fused", "single-freeze": "freeze", "single-subtract": "subtract"}


@dataclasses.dataclass(frozen=True)
class Config:
  """Train a DCGAN with one loss through stop_gradient or with alternating updates."""
  mode: Literal["single", "single-freeze", "single-subtract", "alternating"] = "single"
  dataset: Literal["fashion_mnist", "mnist"] = "fashion_mnist"
  steps: int = 2000
  batch_size: int = 64
  lr_g: float = 2e-4
  lr_d: float = 2e-4
  beta1: float = 0.5
  lam: float = dataclasses.field(default=1.0, metadata={"help": "weight of G's term in the single loss"})
  z_dim: int = 100
  width: int = 64
  seed: int = 0
  workdir: str = "runs/gan"
  data_dir: str = ""
  checkpoint_every: int = 500
  sample_every: int = 500
  fid_every: int = 1000
  fid_samples: int = 2000
  devices: int = dataclasses.field(default=0, metadata={"help": "devices to split each batch over; 0: all visible"})
  progress: bool = True

  def __post_init__(self):
    for name in ("steps", "batch_size", "z_dim", "width", "checkpoint_every", "sample_every", "fid_samples"):
      require(getattr(self, name) > 0, f"{cli.flag(name)} must be positive, got {getattr(self, name)}")
    require(self.fid_every >= 0, f"--fid-every must be >= 0 (0: only at the end), got {self.fid_every}")
    for name in ("lr_g", "lr_d", "lam"):
      require(getattr(self, name) > 0, f"{cli.flag(name)} must be positive, got {getattr(self, name)}")


def to_tanh_range(key, batch):
  del key
  return {"image": pipeline.to_float(batch["image"]) * 2.0 - 1.0}


def make_state(config: Config, key) -> gan.GanState:
  adam = lambda lr: optax.adam(lr, b1=config.beta1)
  tx = ({"G": adam(config.lr_g), "D": adam(config.lr_d)} if config.mode == "alternating"
        else gan.two_timescale(adam(config.lr_g), adam(config.lr_d)))
  return gan.init(key, Generator(width=config.width), Discriminator(width=config.width),
                  (1, config.z_dim), (1, 28, 28, 1), tx)


def train_step(state: gan.GanState, batch: dict, key, *, config: Config):
  x = batch["image"]
  z = jax.random.normal(key, (x.shape[0], config.z_dim))
  if config.mode == "alternating":
    z_g = jax.random.normal(jax.random.fold_in(key, 1), z.shape)
    state, m = gan.alternating_step(state, x, z, z_g)
  else:
    state, m = gan.single_step(state, x, z, lam=config.lam, form=FORMS[config.mode])
  return state, {"loss": m["d_loss"], **m}


def generate(state: gan.GanState, key, n: int, z_dim: int) -> np.ndarray:
  """n samples in [0, 1]."""
  z = jax.random.normal(key, (n, z_dim))
  return np.asarray((jax.jit(gan.sample)(state, z) + 1.0) / 2.0)


def run(config: Config, hooks=()):
  mesh = parallel.make_mesh(config.devices, batch_size=config.batch_size)   # before any data is read
  images, _ = load(config.dataset, "train", data_dir=config.data_dir or None)
  test_images, _ = load(config.dataset, "test", data_dir=config.data_dir or None)
  key = jax.random.PRNGKey(config.seed)
  init_key, data_key, step_key, sample_key = jax.random.split(key, 4)
  batches = pipeline.DeviceBatches({"image": images}, batch_size=config.batch_size, key=data_key,
                                   transform=to_tanh_range, mesh=mesh)
  net = metrics.load_feature_net()
  real_feats, _ = metrics.feature_net_outputs(test_images, net=net)
  real_stats = metrics.gaussian_statistics(real_feats)
  workdir = Path(config.workdir)

  def evaluate(state):
    fake_feats, probs = metrics.feature_net_outputs(generate(state, sample_key, config.fid_samples, config.z_dim),
                                                    net=net)
    return {"fid_fmnist": metrics.frechet_distance(*metrics.gaussian_statistics(fake_feats), *real_stats),
            "inception_score": metrics.inception_score(probs)}

  def sample_hook(step, state):
    if step % config.sample_every == 0 or step == config.steps:
      save_grid(generate(state, sample_key, 64, config.z_dim), workdir / f"samples_{step:06d}.png", ncol=8)

  fingerprint = {k: v for k, v in dataclasses.asdict(config).items()
                 if k in ("mode", "dataset", "batch_size", "z_dim", "width", "seed")}
  return loop.run(
      loop.LoopConfig(steps=config.steps, workdir=config.workdir, checkpoint_every=config.checkpoint_every,
                      eval_every=config.fid_every, progress=config.progress),
      init_fn=lambda: make_state(config, init_key),
      train_step=parallel.jit_step(functools.partial(train_step, config=config), mesh),
      batches=batches, key=step_key, eval_fn=evaluate, hooks=[sample_hook, *hooks], fingerprint=fingerprint,
      state_sharding=parallel.replicated(mesh))


if __name__ == "__main__":
  sys.exit(cli.main(Config, run, prog="python -m train.gan"))
