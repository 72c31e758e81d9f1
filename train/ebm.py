"""An energy-based model of Fashion-MNIST (or MNIST, CIFAR-10) trained with Langevin samples from a replay buffer
(docs/techniques.md#ebm; Du & Mordatch 2019).

    python -m train.ebm                              # the main job: 1,000 steps, recognizable garments in the buffer
    python -m train.ebm --recipe du2019              # the defaults until 2026-12-01 (Du & Mordatch's residual net)
    python -m train.ebm --net resnet --channels 64 --steps 20000   # the issue's full-size residual net, for a GPU

Defaults (= --recipe uva --chain-augment 2 --fresh-steps 120, issues 17 and 34): the UvA deep-learning tutorial 8's small net (four
stride-2 convolutions of 16, 32, 64, 64 channels, Swish; --net strided) and sampler (step 10, gradient clip 0.03,
noise 0.005, 5% reinit, 0.005 noise on the real images), Adam lr 1e-3 with beta1 = 0, lambda 0.1, batch 128, chains
of 20 steps, an 8,192-image buffer, and Improved CD's augmented chain starts (each flipped and shifted by up to 2
pixels). On the 2-core VM, in float32, it reached buffer FID-FMNIST 246 (500 samples; 247 +- 17 over 3 seeds) at
step 1,000, against 314 (335 +- 18) without the augmentation and 680 for the older defaults' 400 steps in about the
same time (benchmarks/studies/ebm/README.md).

Each step draws as many fakes as reals: chains start from the replay buffer (or uniform noise with probability
--reinit-prob), run --langevin-steps steps, join the batch as constants and go back into the buffer. Writes
<workdir>/buffer_<step>.png (64 buffer samples) and fresh_<step>.png (64 chains of --fresh-steps steps from noise)
every --sample-every steps and at the end; the FID of --fid-samples buffer samples and fresh samples every
--fid-every steps (and at the end) into metrics.jsonl (FID-FMNIST on Fashion-MNIST and MNIST, FID-CIFAR10 on
CIFAR-10: jaxtricks.metrics.fid_name) with its sample count, KID, precision/recall and density/coverage on the same
features (jaxtricks.metrics.logged_scores);
TensorBoard events; orbax checkpoints hold params, optimizer, PRNG key and
the buffer, so a resumed run equals an uninterrupted one. Draw from a trained model: `python -m train.ebm_sample`.
With --export-samples N it writes, at the end, N samples as 3-channel uint8 PNGs (or .npz) for pytorch-fid, clean-fid
and torch-fidelity: the N latest of the replay buffer (--export-source buffer, the default: the set of the buffer
FID) or N fresh chains from noise (fresh); with --export-real the test split beside them (docs/programs.md). On a
finished workdir it only exports.
"""

import dataclasses
import functools
import sys
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtricks import cli, ebm, harness, loop, metrics, parallel, replay
from jaxtricks.data import IMAGE_SHAPES, pipeline
from jaxtricks.errors import DivergenceError, require


@dataclasses.dataclass(frozen=True)
class Config(harness.EvalOnlyConfig, harness.ExportConfig, harness.BaseConfig):
  """Train an energy-based model with Langevin dynamics and a replay buffer."""
  dataset: Literal["fashion_mnist", "mnist", "cifar10"] = "fashion_mnist"
  steps: int = 1000
  batch_size: int = dataclasses.field(default=128, metadata={"help": "reals per step (and as many fakes)"})
  cpu_devices: int | Literal["per_core"] = dataclasses.field(
      default="per_core", metadata={"help": "on a CPU: XLA devices to make of it, the batch, chains and buffer split "
                                            "over them (per_core, the default: one per core, 1.14-1.25x faster than "
                                            "one device here; benchmarks/speed/README.md); JAX_NUM_CPU_DEVICES or "
                                            "XLA_FLAGS' device count win"})
  lr: float = 1e-3
  beta1: float = dataclasses.field(default=0.0, metadata={"help": "Adam beta1 (0 as in Du & Mordatch's code)"})
  reg: float = dataclasses.field(
      default=0.1, metadata={"help": "lambda of the energy-magnitude penalty (Du & Mordatch's code: 1)"})
  kl: float = dataclasses.field(
      default=0.0, metadata={"help": "weight (>= 0) of Improved CD's KL term (Du et al. 2021; jaxtricks.ebm.kl_loss): "
                                     "the gradient through one more Langevin step; 0: off"})
  net: Literal["resnet", "strided"] = dataclasses.field(
      default="strided", metadata={"help": "energy net: Du & Mordatch's residual net, or the UvA tutorial's four "
                                          "stride-2 convolutions (space-to-depth form)"})
  compute_dtype: Literal["auto", "float32", "bfloat16"] = dataclasses.field(
      default="auto", metadata={"help": "the strided net's compute type (convolutions, Dense layers, activations; "
                                        "parameters, Langevin iterates and loss stay float32). auto: bfloat16 on a "
                                        "CPU with AVX-512 BF16 and no AMX (AMD Zen 4/5), where its steps ran 1.30x "
                                        "faster with FIDs within the seeds' spread of float32's "
                                        "(benchmarks/studies/ebm/README.md), float32 elsewhere and for --eval-only"})
  conv: Literal["auto", "xla", "taps", "shifted"] = dataclasses.field(
      default="auto", metadata={"help": "the strided net's 2x2 convolutions: XLA's convolution, or matrix products "
                                        "(taps: one dot over the 4 shifted maps; shifted: 4 dots), which reach a "
                                        "CPU's bf16 matrix units in bfloat16 (in float32 they are slower). auto: "
                                        "taps for bfloat16 on a CPU, else xla. The weights are the same in every "
                                        "form, so a model trained in one runs in any"})
  channels: int = dataclasses.field(
      default=16, metadata={"help": "energy net width c: resnet stem c, stages c, 2c, 4c (Du & Mordatch's net: 64); "
                                    "strided c, 2c, 4c, 4c (the tutorial's: 16)"})
  data_noise: float = dataclasses.field(
      default=0.005, metadata={"help": "std of Gaussian noise added to the real images each step (clipped to the data "
                                     "range; Nijkamp et al.: at least the sampler's noise on flat backgrounds)"})
  langevin_steps: int = 20
  step_size: float = dataclasses.field(default=10.0, metadata={"help": "epsilon in x - (epsilon/2) grad U"})
  noise_scale: float | Literal["sqrt_step_size"] = dataclasses.field(
      default=0.005, metadata={"help": "std of the Langevin noise, or sqrt_step_size: sqrt(epsilon) (true Langevin "
                                       "dynamics)", "deprecated": {0: "sqrt_step_size"}})
  grad_clip: float = dataclasses.field(default=0.03, metadata={"help": "clip grad_x U to +-this; 0: no clip"})
  reinit_prob: float = 0.05
  chain_augment: int = dataclasses.field(
      default=2, metadata={"help": "Improved CD's data-augmentation transitions (Du et al. 2021): each chain's start "
                                   "flipped left-right at random and shifted by up to N pixels (jaxtricks.ebm."
                                   "augment_starts); 0: off (the UvA tutorial's recipe, the default until "
                                   "2026-12-05). At 2 the buffer FID fell from 335 to 247 at the same cost "
                                   "(3 seeds, benchmarks/studies/ebm/README.md)"})
  buffer_size: int = 8192
  buffer_dtype: Literal["uint8", "float32"] = "uint8"
  unroll: int | Literal["auto", "full"] = dataclasses.field(
      default="auto", metadata={"help": "lax.scan unroll of the chain: N steps per iteration, full, or auto (20 on "
                                        "a CPU: chains up to 20 steps fully unrolled; else 1)",
                                "deprecated": {-1: "auto", 0: "full"}})
  fresh_steps: int = dataclasses.field(
      default=120, metadata={"help": "Langevin steps of fresh chains from noise (rounded up to --langevin-steps); "
                                     "120 since 2026-12-05 (60 before): its mean FID beat 60 steps' for every recipe "
                                     "measured, within the seeds' spread (benchmarks/studies/ebm/README.md)"})
  workdir: str = "runs/ebm"
  checkpoint_every: int = 200
  sample_every: int = 250
  fid_every: int = dataclasses.field(default=1000, metadata={"help": "steps between FID evaluations (and at the end)"})
  fid_samples: int = 500
  export_source: Literal["buffer", "fresh"] = dataclasses.field(
      default="buffer", metadata={"help": "what --export-samples writes: the latest samples of the replay buffer (the "
                                          "buffer FID's set), or chains of --fresh-steps steps from noise (fresh)"})
  export_real: bool = dataclasses.field(
      default=False, metadata={"help": "also export the test split (the images the FIDs here compare with) as real/ "
                                       "in the same layout"})

  def split_sizes(self) -> tuple[int, ...]:
    return (self.batch_size, self.buffer_size)   # the buffer is split over the devices too

  def __post_init__(self):
    super().__post_init__()
    harness.require_positive(self, "steps", "batch_size", "channels", "langevin_steps", "buffer_size", "fresh_steps",
                             "sample_every", "fid_every", "fid_samples", "lr", "step_size")
    for name in ("reg", "kl", "grad_clip", "data_noise", "chain_augment"):
      require(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")
    require(self.noise_scale == "sqrt_step_size" or self.noise_scale >= 0, "noise_scale",
            f"must be >= 0 or sqrt_step_size, got {self.noise_scale}")
    require(0 <= self.beta1 < 1, "beta1", f"must be in [0, 1), got {self.beta1}")
    for name, plain in (("compute_dtype", "float32"), ("conv", "xla")):
      require(self.net == "strided" or getattr(self, name) in ("auto", plain), name,
              f"is the strided net's setting; the {self.net} net runs {plain} only")
    require(0 <= self.reinit_prob <= 1, "reinit_prob", f"must be in [0, 1], got {self.reinit_prob}")
    require(self.unroll in ("auto", "full") or self.unroll >= 1, "unroll",
            f"must be auto, full or >= 1, got {self.unroll}")
    require(self.fid_samples >= 2, "fid_samples", f"must be >= 2 (an FID compares covariances; a few thousand give a "
            f"stable value), got {self.fid_samples}")
    require(self.buffer_size >= self.batch_size, "buffer_size",
            f"{self.buffer_size} must hold at least one batch ({{batch_size}} {self.batch_size})")
    self.check_export()
    held = min(self.buffer_size, self.steps * self.batch_size)   # each step pushes a batch of fakes
    require(self.eval_only or self.export_source == "fresh" or self.export_samples is None or
            self.export_samples <= held, "export_samples", f"{self.export_samples} exceeds the {held} samples the "
            f"buffer holds after {{steps}} {self.steps} (at most {{buffer_size}}); export fewer, or fresh chains "
            "({export_source} fresh)")   # (--eval-only: checked against the checkpoint's buffer, before evaluating)


# What defines a run's state (resuming with other values is refused); sampler settings may change on resume.
FINGERPRINT = ("dataset", "batch_size", "net", "channels", "buffer_size", "buffer_dtype", "seed")


def sampler(config: Config) -> ebm.SamplerConfig:
  """The chains' settings (--grad-clip 0: no clip, as a clip at 0 would zero every gradient)."""
  noise_scale = None if config.noise_scale == "sqrt_step_size" else config.noise_scale
  return ebm.SamplerConfig(num_steps=config.langevin_steps, step_size=config.step_size, noise_scale=noise_scale,
                           grad_clip=config.grad_clip or None, reinit_prob=config.reinit_prob, unroll=config.unroll,
                           augment_shift=config.chain_augment)


# The CPUs' bf16 units (parallel.cpu_bf16_units) where the bf16 taps form was measured faster in train.ebm with its
# FIDs within the seeds' spread (AMD Zen 5, AVX-512 BF16, 2026-12-05); AMX hosts join when measured there.
BF16_MEASURED = ("avx512_bf16",)


def compute(config: Config) -> tuple[str, str]:
  """(compute dtype, 2x2 convolution form) of the energy net: --compute-dtype and --conv, "auto" resolved here —
  bfloat16 and taps where the strided net trains on a CPU whose bf16 units are in BF16_MEASURED, float32 and XLA's
  convolution elsewhere and for --eval-only (the tables' numbers are float32's)."""
  cpu = jax.default_backend() == "cpu"
  fast = config.net == "strided" and not config.eval_only and cpu and parallel.cpu_bf16_units() in BF16_MEASURED
  dtype = config.compute_dtype if config.compute_dtype != "auto" else "bfloat16" if fast else "float32"
  conv = config.conv if config.conv != "auto" else "taps" if dtype == "bfloat16" and cpu else "xla"
  return dtype, conv


def optimizer(config: Config) -> optax.GradientTransformation:
  return optax.adam(config.lr, b1=config.beta1, b2=0.999)


def real_images(config: Config, key, batch):
  """uint8 -> [0, 1], plus --data-noise."""
  x = pipeline.to_float(batch["image"])
  if config.data_noise:
    x = jnp.clip(x + config.data_noise * jax.random.normal(key, x.shape, x.dtype), 0.0, 1.0)
  return {"image": x}


def check_export(config: Config, state) -> None:
  """--export-samples N from the buffer: at most what `state`'s buffer holds (fresh chains: any N)."""
  held = int(state.buffer.count)
  require(config.export_source == "fresh" or config.export_samples is None or config.export_samples <= held,
          "export_samples", f"{config.export_samples} exceeds the {held} samples this buffer holds; export at "
          "most that many, or chains from noise ({export_source} fresh)")


def run(config: Config, actions=()):
  mesh = harness.mesh(config, config.batch_size)   # before any data is read
  train, test = harness.load_images(config.dataset, config)
  require(config.buffer_size % mesh.size == 0, "buffer_size",
          f"{config.buffer_size} does not divide by the {mesh.size} devices it is split over")
  keys = harness.keys(config.seed, "init", "data", "step", "sample")
  batches = harness.batches({"image": train["image"]}, config.batch_size, keys["data"], mesh, transform=functools.partial(real_images, config))
  image_shape = IMAGE_SHAPES[config.dataset]
  dtype, conv = compute(config)
  if config.compute_dtype == "auto" and dtype == "bfloat16":
    print(f"computing in bfloat16 with the 2x2 convolutions as {conv} matrix products (--compute-dtype auto: this "
          "CPU has AVX-512 BF16); --compute-dtype float32 --conv xla computes as before 2026-12-05", flush=True)
  model = ebm.energy_net(config.channels, config.net, dtype=dtype, conv=conv)
  tx, chains = optimizer(config), sampler(config)
  init = lambda: ebm.init(keys["init"], model, image_shape, tx, buffer_size=config.buffer_size,
                          buffer_dtype=jnp.dtype(config.buffer_dtype))
  shardings = ebm.shardings(jax.eval_shape(init), mesh)

  def fresh(state, n):
    return ebm.fresh_samples(model, state.params, state.stats, keys["sample"], image_shape, n, config.fresh_steps,
                             chains)

  def grids(step, state):
    return {"buffer": np.asarray(replay.latest(state.buffer, 64)), "fresh": fresh(state, 64)}

  periodic = [loop.Periodic(config.sample_every, grids)]
  fid_name = metrics.fid_name(config.dataset)
  if fid_name is not None:
    score = harness.scores_against_test(config.dataset, config, test["image"], fid_name)

    def evaluate(step, state):   # FID, its sample count, KID, precision/recall... from one feature pass per set
      held, drawn = np.asarray(replay.latest(state.buffer, config.fid_samples)), fresh(state, config.fid_samples)
      if not (np.isfinite(held).all() and np.isfinite(drawn).all()):   # the step's metrics are read a step later
        raise DivergenceError(None, f"training diverged at step {step}: the samples hold non-finite values")
      buffer = metrics.logged_scores(score(held), fid_name, "_buffer") if len(held) >= 2 else {}   # --batch-size 1
      return {**buffer, **metrics.logged_scores(score(drawn), fid_name, "_fresh")}
    periodic.append(loop.Periodic(config.fid_every, evaluate, announce=True))
  def export(state):   # the buffer's latest (a pretrained model keeps 500 of them), or fresh chains from noise
    check_export(config, state)
    harness.export(config, lambda n: np.asarray(replay.latest(state.buffer, n)) if config.export_source == "buffer"
                   else fresh(state, n), reals=test["image"])
  if config.eval_only:   # the FIDs of a checkpoint or pretrained model (benchmarks/pretrained/), then its export
    require(fid_name is not None, "eval_only", f"needs a feature net for {config.dataset}'s FID")
    harness.evaluate_checkpoint(config.workdir, init_fn=init, evaluate=lambda state: evaluate(int(state.step), state),
                                check=functools.partial(check_export, config), then=export,
                                fingerprint=harness.fingerprint(config, FINGERPRINT))
    return None
  step_fn = functools.partial(ebm.train_step, model=model, tx=tx, sampler=chains, reg=config.reg,
                              kl=config.kl, chain_sharding=parallel.sharded(mesh))
  state = harness.train(
      config, steps=config.steps, init_fn=init, train_step=step_fn, batches=batches, key=keys["step"], mesh=mesh,
      state_sharding=shardings, actions=[*periodic, *actions], fingerprint=harness.fingerprint(config, FINGERPRINT),
      progress_keys=("energy_real", "energy_fake"),
      divergence_advice="Resume from it with a lower {lr}, more {langevin_steps} or a larger {reg}")
  export(state)
  return state


# --recipe NAME: named sets of defaults (flags beside --recipe still win)
RECIPES = {
    # the defaults up to 2026-12-01 (README's 400-step main job of then): Du & Mordatch's residual net at c = 16
    "du2019": dict(steps=400, sample_every=100, net="resnet", channels=16, batch_size=64, lr=1e-3, beta1=0.0, reg=0.1, langevin_steps=20,
                   step_size=20.0, noise_scale=0.005, grad_clip=0.01, reinit_prob=0.05, buffer_size=10000,
                   data_noise=0.0, chain_augment=0, fresh_steps=60),
    # the UvA tutorial's net and sampler (step 10, clip 0.03, noise 0.005, 5% reinit, 0.005 noise on the data,
    # beta1 0, lambda 0.1) with 20-step chains and a batch of 128: the defaults from 2026-12-01 (issue 17) to
    # 2026-12-05, when the chains' augmented starts and 120-step fresh chains joined them (issue 34: the defaults
    # are uva + --chain-augment 2 --fresh-steps 120)
    "uva": dict(steps=1000, sample_every=250, net="strided", channels=16, batch_size=128, lr=1e-3, beta1=0.0, reg=0.1, langevin_steps=20,
                step_size=10.0, noise_scale=0.005, grad_clip=0.03, reinit_prob=0.05, buffer_size=8192,
                data_noise=0.005, chain_augment=0, fresh_steps=60),
}


def main(argv=None) -> int:
  return cli.main(Config, run, argv=argv, prog="python -m train.ebm", recipes=RECIPES)


if __name__ == "__main__":
  sys.exit(main())
