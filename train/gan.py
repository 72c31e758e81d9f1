"""A DCGAN on Fashion-MNIST (or MNIST, CIFAR-10) trained with one loss through stop_gradient, or with 1:1 alternating updates
(docs/techniques.md#gan).

    python -m train.gan --mode single --steps 2000          # one loss: one step updates G and D
    python -m train.gan --mode single-subtract               # the seed's subtraction form
    python -m train.gan --mode alternating                   # D step, then G step against the new D

Writes <workdir>/samples_<step>.png every --sample-every steps and at the end, FID of --fid-samples samples against
the test set every --fid-every steps into metrics.jsonl (FID-FMNIST on Fashion-MNIST and MNIST, FID-CIFAR10 on
CIFAR-10 once its feature net's weights are committed: jaxtricks.metrics.FEATURE_NETS) with its sample count, KID,
precision/recall and density/coverage on the same features (jaxtricks.metrics.logged_scores), TensorBoard events,
and orbax checkpoints (resume). With --export-samples N it writes N samples of G (of its EMA with --ema-decay) at
the end as 3-channel uint8 PNGs (or .npz) for pytorch-fid, clean-fid and torch-fidelity, and with --export-real the
test split beside them (docs/programs.md); on a finished workdir it only exports.
"""

import dataclasses
import functools
import sys
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxtricks import cli, gan, harness, loop, metrics, onednn
from jaxtricks.data import IMAGE_SHAPES, pipeline
from jaxtricks.errors import DivergenceError, require
from jaxtricks.models.dcgan import Discriminator, Generator


@dataclasses.dataclass(frozen=True)
class Config(harness.EvalOnlyConfig, harness.ExportConfig, harness.BaseConfig):
  """Train a DCGAN with one loss through stop_gradient or with alternating updates."""
  mode: gan.Mode = dataclasses.field(
      default="single", metadata={"help": "single: one loss, one step updates G and D (the freeze form with one D "
                                          "forward on the fakes); single-freeze, single-subtract: the one loss in "
                                          "that form (jaxtricks.gan); alternating: a D step, then a G step"})
  dataset: Literal["fashion_mnist", "mnist", "cifar10"] = "fashion_mnist"
  steps: int = 2000
  batch_size: int = 64
  lr_g: float = 2e-4
  lr_d: float = 2e-4
  beta1: float = 0.5
  optimizer: Literal["adam", "optimistic_adam"] = dataclasses.field(
      default="adam", metadata={"help": "both players' optimizer; optimistic_adam (optax; Daskalakis et al. 2018) "
                                        "extrapolates with the previous step's update: a saved gradient, no extra "
                                        "forward pass"})
  adam_eps: float = dataclasses.field(
      default=1e-8, metadata={"help": "Adam's epsilon; large enough (e.g. 1e-3) that --lam scales G's steps"})
  lam: float = dataclasses.field(default=1.0, metadata={"help": "weight of G's term in the single loss"})
  z_dim: int = 100
  width: int = 64
  ema_decay: float = dataclasses.field(
      default=0.0, metadata={"help": "keep an EMA of G's weights with this decay (e.g. 0.999) and sample from it; "
                                     "0: off"})
  cpu_ynn_convolutions: bool = dataclasses.field(
      default=False, metadata={"help": "on a CPU: run the step's convolutions with XLA's YNNPACK kernels (XLA's "
                                       "default); off (this program's default): XLA's own kernels, 1.1-1.2x faster "
                                       "for the DCGAN step (benchmarks/speed/README.md); unused on a GPU/TPU"})
  compute_dtype: Literal["float32", "bfloat16"] = dataclasses.field(
      default="float32", metadata={"help": "both nets' compute type (parameters, optimizer and losses stay float32)"})
  conv: Literal["xla", "taps", "onednn"] = dataclasses.field(
      default="xla", metadata={"help": "how the convolutions are computed: XLA's, as one matrix product over their taps, "
                                       "or by oneDNN (built by `make onednn`; a CPU, one device): with --compute-dtype "
                                       "bfloat16, steps 1.69x faster than the float32 default on an AVX-512 BF16 host "
                                       "(benchmarks/speed/README.md). The weights are the same in every form"})
  workdir: str = "runs/gan"
  sample_every: int = 500
  fid_every: int = dataclasses.field(default=1000, metadata={"help": "steps between FID evaluations (0: only at the end)"})
  fid_samples: int = 2000
  export_real: bool = dataclasses.field(
      default=False, metadata={"help": "also export the test split (the images the FIDs here compare with) as real/ "
                                       "in the same layout"})

  def __post_init__(self):
    super().__post_init__()
    self.check_export()
    harness.require_positive(self, "steps", "batch_size", "z_dim", "width", "sample_every", "fid_samples",
                             "lr_g", "lr_d", "lam")
    require(self.fid_samples >= 2, "fid_samples", f"must be >= 2 (an FID compares covariances; a few thousand give a "
            f"stable value), got {self.fid_samples}")
    require(self.fid_every >= 0, "fid_every", f"must be >= 0 (0: only at the end), got {self.fid_every}")
    require(self.adam_eps > 0, "adam_eps", f"must be positive, got {self.adam_eps}")
    require(0 <= self.ema_decay < 1, "ema_decay", f"must be in [0, 1) (0: off), got {self.ema_decay}")
    require(self.conv != "onednn" or onednn.available(), "conv",
            f"onednn: {onednn.NOT_BUILT}")
    require(self.conv != "onednn" or self.cpu_devices == 1, "conv",
            f"onednn runs on one CPU device (its threads use every core), not {{cpu_devices}} {self.cpu_devices}")


FINGERPRINT = ("mode", "dataset", "batch_size", "z_dim", "width", "seed", "ema_decay", "optimizer")


def to_tanh_range(key, batch):
  del key
  return {"image": pipeline.to_float(batch["image"]) * 2.0 - 1.0}


def nets(config: Config) -> tuple[Generator, Discriminator]:
  require(config.conv != "onednn" or jax.default_backend() == "cpu", "conv",
          f"onednn is a CPU kernel; on {jax.default_backend()} use xla")
  dtype = jnp.dtype(config.compute_dtype)
  return (Generator(image_shape=IMAGE_SHAPES[config.dataset], width=config.width, dtype=dtype, conv=config.conv),
          Discriminator(width=config.width, dtype=dtype, conv=config.conv))


def optimizers(config: Config) -> gan.Optimizers:
  """{'G', 'D'}: --optimizer with each player's learning rate (two time scales when --lr-d differs from --lr-g)."""
  return gan.adam_players(lr_g=config.lr_g, lr_d=config.lr_d, b1=config.beta1, eps=config.adam_eps,
                          optimistic=config.optimizer == "optimistic_adam")


def train_step(state: gan.GanState, batch: dict, key, *, config: Config, generator, discriminator, tx):
  state, m = gan.train_step(state, batch["image"], key, mode=config.mode, generator=generator,
                            discriminator=discriminator, tx=tx, z_dim=config.z_dim, lam=config.lam,
                            ema_decay=config.ema_decay)
  return state, {"loss": m["d_loss"], **m}


def generate(generator, state: gan.GanState, key, n: int, z_dim: int, ema: bool = False) -> np.ndarray:
  """n samples in [0, 1] (from the EMA of G with `ema`)."""
  z = jax.random.normal(key, (n, z_dim))
  return np.asarray((jax.jit(gan.sample, static_argnums=(0, 3))(generator, state, z, ema) + 1.0) / 2.0)


def draw(generator, state: gan.GanState, key, n: int, z_dim: int, ema: bool, chunk: int = 1000) -> np.ndarray:
  """n samples in [0, 1] for the export, generated `chunk` at a time (keys folded from `key`)."""
  return np.concatenate([generate(generator, state, jax.random.fold_in(key, i), min(chunk, n - start), z_dim, ema)
                         for i, start in enumerate(range(0, n, chunk))])


def init(config: Config, key, generator, discriminator, tx) -> gan.GanState:
  state = gan.init(key, generator, discriminator, (1, config.z_dim), (1, *IMAGE_SHAPES[config.dataset]), tx)
  return gan.with_ema(state) if config.ema_decay > 0 else state


def run(config: Config, actions=()):
  mesh = harness.mesh(config, config.batch_size)   # before any data is read
  train, test = harness.load_images(config.dataset, config)
  keys = harness.keys(config.seed, "init", "data", "step", "sample")
  batches = harness.batches({"image": train["image"]}, config.batch_size, keys["data"], mesh, transform=to_tanh_range)
  generator, discriminator = nets(config)
  tx = optimizers(config)
  ema = config.ema_decay > 0
  samples = lambda state, n, ema=ema: generate(generator, state, keys["sample"], n, config.z_dim, ema)
  periodic = [loop.Periodic(config.sample_every, lambda step, state: {"samples": samples(state, 64)})]
  fid_name = metrics.fid_name(config.dataset)
  if fid_name is not None:
    score = harness.scores_against_test(config.dataset, config, test["image"], fid_name)

    def scores(step, images, suffix=""):   # FID, its sample count, KID, precision/recall... from one feature pass
      if not np.isfinite(images).all():   # the step's own metrics are read one step later
        raise DivergenceError(None, f"training diverged at step {step}: G{suffix}'s samples hold non-finite values")
      s = score(images)
      return {**metrics.logged_scores(s, fid_name, suffix), f"inception_score{suffix}": s["inception_score"]}

    def evaluate(step, state):   # G itself, and with --ema-decay its EMA too
      out = scores(step, samples(state, config.fid_samples, ema=False))
      return {**out, **scores(step, samples(state, config.fid_samples, ema=True), "_ema")} if ema else out
    periodic.append(loop.Periodic(config.fid_every, evaluate, announce=True))
  init_fn = lambda: init(config, keys["init"], generator, discriminator, tx)
  export = lambda state: harness.export(
      config, lambda n: draw(generator, state, jax.random.fold_in(keys["sample"], 1), n, config.z_dim, ema),
      reals=test["image"])
  if config.eval_only:   # the FIDs of a checkpoint or pretrained model (benchmarks/pretrained/), then its export
    require(fid_name is not None, "eval_only", f"needs a feature net for {config.dataset}'s FID")
    harness.evaluate_checkpoint(config.workdir, init_fn=init_fn, evaluate=lambda state: evaluate(int(state.step), state),
                                then=export, fingerprint=harness.fingerprint(config, FINGERPRINT))
    return None
  state = harness.train(
      config, steps=config.steps,
      init_fn=init_fn,
      train_step=functools.partial(train_step, config=config, generator=generator, discriminator=discriminator,
                                   tx=tx),
      batches=batches, key=keys["step"], mesh=mesh, fingerprint=harness.fingerprint(config, FINGERPRINT),
      actions=[*periodic, *actions], divergence_advice="Resume from it with a lower {lr_g} and {lr_d}")
  export(state)
  return state


def main(argv=None) -> int:
  return cli.main(Config, run, argv=argv, prog="python -m train.gan")


if __name__ == "__main__":
  sys.exit(main())
