"""Image classification on Fashion-MNIST / MNIST / CIFAR-10: a small CNN, MobileNet v1 (docs/techniques.md#mobilenet) or
the EXACT paper's MNIST net vgg_m3 (models/vgg.py), trained with cross-entropy or one of the losses that train for accuracy (docs/techniques.md#margin, #exact).

    python -m train.classify --model cnn --epochs 1                        # 87% test accuracy in < 1 min on CPU
    python -m train.classify --model mobilenet --augment flip --epochs 50  # the seed's recipe: 56x56x3, batch 64, Adam
    python -m train.classify --recipe seed                                 # the same, by name (RECIPES below)
    python -m train.classify --recipe cpu94 --workdir runs/cpu94           # MobileNet at 28x28 for the 2-core CPU
    python -m train.classify --loss exact_log                              # EXACT with a sigma head, -log p per example
    python -m train.classify --dataset cifar10 --epochs 5                  # 32x32x3
    python -m train.classify --dataset mnist --loss exact --exact-sigma scheduled --exact-margin 0.5 \
        --logit-batchnorm --grad-normalizer --optimizer sgd --lr 0.5 --schedule exponential --weight-decay 1e-4 \
        --batch-size 256 --epochs 20                                        # EXACT as its authors train it
    python -m train.classify --recipe exact_paper_mnist                    # ... on their net, 150 epochs (RECIPES)

Writes <workdir>/metrics.jsonl, TensorBoard events, <workdir>/config.json and orbax checkpoints in
<workdir>/checkpoints/; running again with the same --workdir resumes.
"""

import dataclasses
import functools
import math
import sys
from typing import Literal

import jax
import jax.numpy as jnp
import optax

from jaxtricks import classifier, cli, harness, loop, losses, optim
from jaxtricks.data import IMAGE_SHAPES, pipeline
from jaxtricks.errors import require
from jaxtricks.metrics import correct
from jaxtricks.models.cnn import CNN
from jaxtricks.models.feature_net import FeatureNet
from jaxtricks.models.mobilenet import MOBILENET_V1_BLOCKS, MobileNetV1, blocks_downsampling_at
from jaxtricks.models.vgg import M3_CHANNELS, VGGM3

NUM_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class Config(harness.EvalOnlyConfig, harness.BaseConfig):
  """Train an image classifier: cross-entropy, the margin and accuracy losses, hinge or EXACT."""
  model: Literal["cnn", "mobilenet", "featnet", "vgg_m3"] = "cnn"
  loss: Literal["ce", "margin", "soft_acc", "hinge", "exact", "exact_log_mean", "exact_log"] = "ce"
  margin: float = dataclasses.field(default=0.6, metadata={"help": "--loss margin: no loss once p_y > margin"})
  hinge_margin: float = dataclasses.field(
      default=1.0, metadata={"help": "--loss hinge (Crammer-Singer): max(0, m + max_other - l_y)"})
  exact_sigma: Literal["learned", "scheduled"] = dataclasses.field(
      default="learned", metadata={"help": "EXACT's sigma: an 11th output (learned), or the paper's schedule"})
  exact_sigma_init: float = dataclasses.field(default=10.0, metadata={"help": "scheduled sigma at step 0"})
  exact_sigma_final: float = dataclasses.field(default=1.0, metadata={"help": "scheduled sigma at the last step"})
  exact_margin: float = dataclasses.field(
      default=0.0, metadata={"help": "EXACT: clip the gaps l_y - l_i at this before dividing by sigma; 0: no clip"})
  logit_batchnorm: bool = dataclasses.field(
      default=False, metadata={"help": "normalize the logits by one scalar mean and std over the batch (EXACT)"})
  dataset: Literal["fashion_mnist", "mnist", "cifar10"] = "fashion_mnist"
  epochs: float = 1.0
  steps: int | None = dataclasses.field(
      default=None, metadata={"help": "train steps (default: --epochs' worth)", "deprecated": {0: None}})
  batch_size: int = 64
  lr: float = 1e-3
  optimizer: Literal["adam", "adamw", "sgd"] = dataclasses.field(
      default="adam", metadata={"help": "adam (adamw when --weight-decay > 0), adamw, or sgd with --momentum"})
  momentum: float = dataclasses.field(default=0.9, metadata={"help": "--optimizer sgd: heavy-ball momentum"})
  schedule: Literal["constant", "cosine", "exponential"] = dataclasses.field(
      default="constant", metadata={"help": "learning rate: constant, cosine decay to 0, or exponential decay to "
                                            "--lr-final over the run"})
  lr_final: float = dataclasses.field(default=1e-4, metadata={"help": "--schedule exponential: the last step's lr"})
  warmup_steps: int = 0
  weight_decay: float = dataclasses.field(
      default=0.0, metadata={"help": "adam/adamw: decoupled weight decay; sgd: L2 added to the gradient"})
  grad_clip: float = dataclasses.field(default=0.0, metadata={"help": "clip the gradient's global norm; 0: no clip"})
  grad_normalizer: bool = dataclasses.field(
      default=False, metadata={"help": "divide the gradient by its moving-average norm (EXACT's normalizer)"})
  width: float = dataclasses.field(default=1.0, metadata={"help": "MobileNet's and vgg_m3's width multiplier"})
  input_size: int = dataclasses.field(default=56, metadata={"help": "MobileNet input side (28 -> resized)"})
  stem_stride: int = dataclasses.field(default=2, metadata={"help": "MobileNet first conv stride"})
  mobilenet_blocks: Literal["paper", "7x7"] = dataclasses.field(
      default="paper", metadata={"help": "MobileNet's strides: the paper's (blocks 1, 3, 5, 11), or only blocks 1 "
                                         "and 3 (28x28 with --stem-stride 1: the last ten blocks on 7x7 maps)"})
  bn_momentum: float = dataclasses.field(default=0.99, metadata={"help": "MobileNet's BatchNorm momentum"})
  depthwise: Literal["auto", "shifted", "conv"] = dataclasses.field(
      default="auto", metadata={"help": "MobileNet's depthwise conv, one function in two forms: shifted sums "
                                        "(3-11x faster on XLA:CPU) or grouped nn.Conv (cuDNN's); auto: shifted on "
                                        "a CPU, else conv"})
  augment: Literal["none", "flip", "crop_flip", "crop_flip_erase", "rotate_shift"] = dataclasses.field(
      default="none", metadata={"help": "training augmentation: flips; + random crops of the 4-pixel zero-padded "
                                        "image; + random erasing; or rotations of up to 20 degrees and shifts of "
                                        "up to 20% (the EXACT authors' MNIST augmentation, no flips)"})
  label_smoothing: float = dataclasses.field(default=0.0, metadata={"help": "--loss ce: smoothed one-hot targets"})
  workdir: str = "runs/classify"
  eval_every: int = dataclasses.field(default=0, metadata={"help": "steps between test evaluations; 0: each epoch"})
  eval_batch_size: int = 1000
  eval_flips: bool = dataclasses.field(
      default=False, metadata={"help": "each evaluation also reports test/accuracy_flips and test/nll_flips: the "
                                       "softmax averaged over each test image and its mirror (test-time "
                                       "augmentation; a softmax --loss only)"})

  def __post_init__(self):
    super().__post_init__()
    require(self.steps is None or self.steps > 0, "steps",
            f"must be positive (or left out: from {{epochs}}), got {self.steps}")
    require(self.steps is not None or self.epochs > 0, "epochs", f"must be positive, got {self.epochs}")
    harness.require_positive(self, "batch_size", "lr", "width", "eval_batch_size")
    require(self.loss != "margin" or 0 < self.margin < 1, "margin", f"must be in (0, 1), got {self.margin}")
    require(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")
    require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
    require(self.stem_stride in (1, 2), "stem_stride", f"must be 1 or 2, got {self.stem_stride}")
    require(not (self.eval_flips and is_exact(self)), "eval_flips",
            f"needs a softmax model; --loss {self.loss} gives EXACT's p, not a softmax: drop --eval-flips")
    require(self.input_size >= 28, "input_size", f"must be >= 28, got {self.input_size}")
    require(self.eval_every >= 0, "eval_every", f"must be >= 0, got {self.eval_every}")
    require(0 <= self.label_smoothing < 1, "label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")
    require(0 <= self.bn_momentum < 1, "bn_momentum", f"must be in [0, 1), got {self.bn_momentum}")
    harness.require_positive(self, "hinge_margin", "exact_sigma_init", "exact_sigma_final", "lr_final")
    require(0 <= self.momentum < 1, "momentum", f"must be in [0, 1), got {self.momentum}")
    for name in ("exact_margin", "grad_clip"):
      require(getattr(self, name) >= 0, name, f"must be >= 0 (0: off), got {getattr(self, name)}")
    for name, losses_ in LOSS_SETTINGS.items():   # given with another loss it would do nothing: refused, not ignored
      value, default = getattr(self, name), self.__dataclass_fields__[name].default
      require(self.eval_only or self.loss in losses_ or value == default, name,   # (--eval-only: the run's loss)
              f"{value} does nothing with {{loss}} {self.loss} (it acts only with {{loss}} {_either(losses_)}); "
              f"add {{loss}} {losses_[0]}, or leave it out (after a --recipe that sets it: give it {default})")


def _either(words) -> str:
  return " or ".join(words) if len(words) < 3 else f"{', '.join(words[:-1])} or {words[-1]}"


# the settings that act with some losses only (Config refuses them, changed from their defaults, with another loss)
EXACT_LOSSES = ("exact", "exact_log_mean", "exact_log")
LOSS_SETTINGS = {"margin": ("margin",), "hinge_margin": ("hinge",), "label_smoothing": ("ce",),
                 **{name: EXACT_LOSSES for name in ("exact_sigma", "exact_sigma_init", "exact_sigma_final",
                                                    "exact_margin")}}


# What defines a run's state (resuming with other values is refused).
# since 2026-12-04: what EXACT's loss and evaluation read (--eval-only's nll), so that a run is evaluated as it
# trained; runs made before do not record them, and are not checked for them (harness.fingerprint's `since`)
FINGERPRINT_SINCE = ("exact_margin", "exact_sigma_final", "logit_batchnorm")
FINGERPRINT = ("model", "loss", "dataset", "width", "input_size", "stem_stride", "mobilenet_blocks", "seed",
               "batch_size", "augment",
               "optimizer", "exact_sigma", "grad_normalizer", *FINGERPRINT_SINCE)


# --recipe NAME: named sets of defaults (flags given beside --recipe still win). docs/techniques.md#mobilenet.
RECIPES = {
    # the seed's MobileNet: 56x56x3 (28x28 resized, grey repeated), width 1, batch 64, Adam 1e-3, flips, 50 epochs
    "seed": dict(model="mobilenet", input_size=56, stem_stride=2, width=1.0, batch_size=64, optimizer="adam",
                 lr=1e-3, augment="flip", epochs=50.0),
    # issue 15's CPU recipe for >= 94% within 150 min on 2 cores: the 28x28 input itself through a stride-1 stem
    # (maps 28, 14, 7, 4, 2 instead of 14, 7, 4, 2, 1), width 0.5, flips (crops + random erasing on top cost
    # 0.47 pts in 40 epochs: benchmarks/studies/mobilenet/README.md), label smoothing, SGD momentum 0.9 with cosine decay after a
    # 1-epoch warm-up, BatchNorm momentum 0.9 for a short run
    "cpu94": dict(model="mobilenet", input_size=28, stem_stride=1, width=0.5, mobilenet_blocks="paper",
                  batch_size=128, optimizer="sgd", momentum=0.9, lr=0.1, weight_decay=5e-4, schedule="cosine",
                  warmup_steps=468, augment="flip", label_smoothing=0.1, bn_momentum=0.9,
                  epochs=40.0),
    # the EXACT paper's MNIST row (Karpukhin et al. 2022, table 2) as its authors' configs train it (github
    # ivan-chai/exact, mdn-metric/configs/exact: template-base, -patch-1-optimizers (sgd), -patch-2-datasets (mnist),
    # best/{exact,xent,hinge}-sgd-mnist.yaml): the M3 net (models/vgg.py), rotations <= 20 degrees and shifts <= 20%,
    # 150 epochs of batch 256, SGD momentum 0.9, weight decay 1e-4, lr decayed exponentially to 1e-4; then per loss
    # the best values of their search: EXACT lr 0.5 (sigma 10 -> 1, margin 0.5, logit batch-norm, gradient
    # normalizer, no clip), CE lr 0.5 with gradient clip 10, hinge (Crammer-Singer) margin 5, lr 0.05, clip 1
    **{name: dict(model="vgg_m3", dataset="mnist", augment="rotate_shift", epochs=150.0, batch_size=256,
                  optimizer="sgd", momentum=0.9, weight_decay=1e-4, schedule="exponential", lr_final=1e-4, **loss)
       for name, loss in (
           ("exact_paper_mnist", dict(loss="exact", lr=0.5, exact_sigma="scheduled", exact_sigma_init=10.0,
                                      exact_sigma_final=1.0, exact_margin=0.5, logit_batchnorm=True,
                                      grad_normalizer=True)),
           ("ce_paper_mnist", dict(loss="ce", lr=0.5, grad_clip=10.0)),
           ("hinge_paper_mnist", dict(loss="hinge", lr=0.05, hinge_margin=5.0, grad_clip=1.0)))},
}


def is_exact(config: Config) -> bool:
  return config.loss.startswith("exact")


def num_outputs(config: Config) -> int:
  """10 logits; EXACT models with a learned sigma add one output for it (losses.split_sigma_head)."""
  return NUM_CLASSES + 1 if is_exact(config) and config.exact_sigma == "learned" else NUM_CLASSES


def depthwise_form(config: Config) -> str:
  if config.depthwise != "auto":
    return config.depthwise
  return "shifted" if jax.default_backend() == "cpu" else "conv"


def make_model(config: Config):
  if config.model == "cnn":
    return CNN(num_classes=num_outputs(config))
  if config.model == "featnet":
    return FeatureNet(num_classes=num_outputs(config))
  if config.model == "vgg_m3":
    return VGGM3(num_classes=num_outputs(config), channels=tuple(max(1, round(c * config.width)) for c in M3_CHANNELS))
  blocks = MOBILENET_V1_BLOCKS if config.mobilenet_blocks == "paper" else blocks_downsampling_at(1, 3)
  return MobileNetV1(num_classes=num_outputs(config), width=config.width, stem_stride=config.stem_stride,
                     blocks=blocks, bn_momentum=config.bn_momentum, depthwise=depthwise_form(config))


def input_shape(config: Config) -> tuple[int, int, int]:
  """The model's input: the data set's images, MobileNet's resized to input_size x input_size x 3."""
  if config.model == "mobilenet":
    return (config.input_size, config.input_size, 3)
  return IMAGE_SHAPES[config.dataset]


def exact_sigma_fn(config: Config, steps: int):
  """step -> EXACT's scheduled sigma (None for the learned form: sigma comes from the model's 11th output)."""
  if config.exact_sigma != "scheduled":
    return None
  return optim.exact_sigma_schedule(init_sigma=config.exact_sigma_init, final_sigma=config.exact_sigma_final,
                                    transition_steps=max(steps, 1))


def objective(config: Config, sigma_fn, outputs_BK: jax.Array, batch: dict, step: jax.Array) -> jax.Array:
  """The training loss of --loss, reduced over the batch (`sigma_fn`: exact_sigma_fn's schedule or None)."""
  labels_B = batch["label"]
  losses.check_in_range("objective", "labels", labels_B, 0, NUM_CLASSES)   # under checkify: the first step
  logits, sigma = losses.split_sigma_head(outputs_BK, num_classes=NUM_CLASSES)
  if config.logit_batchnorm:
    logits = losses.logit_batchnorm(logits)
  if sigma_fn is not None:
    sigma = sigma_fn(step)
  exact = dict(margin=config.exact_margin or None)
  match config.loss:
    case "ce" if config.label_smoothing:
      targets = optax.smooth_labels(jax.nn.one_hot(labels_B, NUM_CLASSES), config.label_smoothing)
      per_example = optax.softmax_cross_entropy(logits, targets)
    case "ce":
      per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels_B)
    case "margin":
      per_example = losses.margin_softmax_cross_entropy(logits, labels_B, margin=config.margin)
    case "soft_acc":
      per_example = losses.soft_accuracy_loss(logits, labels_B)
    case "hinge":
      per_example = losses.multiclass_hinge_loss(logits, labels_B, margin=config.hinge_margin)
    case "exact":
      per_example = losses.exact_loss(logits, sigma, labels_B, **exact)
    case "exact_log_mean":
      return losses.exact_log_mean_loss(logits, sigma, labels_B, **exact)
    case "exact_log":
      per_example = losses.exact_log_loss(logits, sigma, labels_B, **exact)
  return per_example.mean()


def accuracy(outputs_BK: jax.Array, batch: dict) -> dict:
  logits, _ = losses.split_sigma_head(outputs_BK, num_classes=NUM_CLASSES)
  return {"accuracy": correct(logits, batch["label"]).mean()}


def learning_rate(config: Config, steps: int) -> optax.Schedule | float:
  if config.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, config.lr, config.warmup_steps, max(steps, config.warmup_steps + 1))
  if config.schedule == "exponential":   # lr -> lr_final over the steps after warm-up, geometrically
    decay = optax.exponential_decay(config.lr, max(steps - config.warmup_steps, 1), config.lr_final / config.lr,
                                    end_value=config.lr_final)
    if not config.warmup_steps:
      return decay
    return optax.join_schedules([optax.linear_schedule(0.0, config.lr, config.warmup_steps), decay],
                                [config.warmup_steps])
  return optax.linear_schedule(0.0, config.lr, config.warmup_steps) if config.warmup_steps else config.lr


def optimizer(config: Config, steps: int) -> optax.GradientTransformation:
  """--optimizer with the --schedule's learning rate, after the gradient normalizer and the global-norm clip."""
  lr = learning_rate(config, steps)
  if config.optimizer == "sgd":
    decay = [optax.add_decayed_weights(config.weight_decay)] if config.weight_decay else []
    main = optax.chain(*decay, optax.sgd(lr, momentum=config.momentum or None))
  elif config.optimizer == "adamw" or config.weight_decay:
    main = optax.adamw(lr, weight_decay=config.weight_decay)
  else:
    main = optax.adam(lr)
  before = ([optim.gradient_normalizer()] if config.grad_normalizer else []) + (
      [optax.clip_by_global_norm(config.grad_clip)] if config.grad_clip else [])
  return optax.chain(*before, main) if before else main


def preprocess(config: Config, key: jax.Array, batch: dict, *, train: bool) -> dict:
  """uint8 -> float in [0, 1]; when training, --augment's flips, crops and erasing, or rotations and shifts;
  MobileNet: resize and 3 channels."""
  x = pipeline.to_float(batch["image"])
  k_flip, k_crop, k_erase = jax.random.split(key, 3)
  if train and config.augment in ("flip", "crop_flip", "crop_flip_erase"):
    # Key reuse, kept on purpose: --augment flip draws its flips from `key` itself, which was split above. It stays
    # because every recorded flip-only run (--recipe seed, cpu94, the MobileNet tables) drew these flips; k_flip
    # would flip other images and change every one of their numbers. It is harmless: with --augment flip,
    # random_flip's bernoulli(key, 0.5, [B]) is the only draw of this call (k_flip, k_crop and k_erase go unused),
    # and `key` is this step's own (fold_in(transform key, step); pipeline.DeviceBatches), so no draw is correlated.
    x = pipeline.random_flip(k_flip if config.augment != "flip" else key, x)
  if train and config.augment == "rotate_shift":
    x = pipeline.random_rotate_shift(k_crop, x, max_degrees=20.0, max_shift=0.2)
  if train and config.augment.startswith("crop"):
    x = pipeline.random_crop(k_crop, x, pad=4)
  if train and config.augment == "crop_flip_erase":
    x = pipeline.random_erasing(k_erase, x)
  if config.model == "mobilenet":
    x = pipeline.resize_rgb(x, config.input_size)
  return {"image": x, "label": batch["label"]}


def train_step(state, batch, key, *, config: Config, model, tx, sigma_fn=None):
  """One optimizer step on the batch mean of --loss."""
  return classifier.train_step(state, batch, key, model=model, tx=tx,
                               objective=functools.partial(objective, config, sigma_fn), metrics_fn=accuracy)


def per_example(config: Config, model, state, batch) -> dict:
  """Test metrics of each example: accuracy and nll (-log p(y|x): softmax, or EXACT's p; a scheduled sigma is
  read at its final value); with --eval-flips also both of the flip-averaged softmax."""
  x = preprocess(config, jax.random.PRNGKey(0), batch, train=False)["image"]   # the key is unused without training
  outputs = classifier.predict(model, state, x)
  logits, _ = losses.split_sigma_head(outputs, num_classes=NUM_CLASSES)
  if is_exact(config) and config.exact_sigma == "scheduled":
    mu = losses.logit_batchnorm(logits) if config.logit_batchnorm else logits
    nll = losses.exact_log_loss(mu, config.exact_sigma_final, batch["label"], margin=config.exact_margin or None)
  else:
    nll = losses.model_nll(outputs, batch["label"], num_classes=NUM_CLASSES)
  out = {"accuracy": correct(logits, batch["label"]), "nll": nll}
  if config.eval_flips:   # --eval-flips: test-time augmentation by mirroring (a softmax model: __post_init__)
    log_p_BK = classifier.flip_averaged_log_probs(model, state, x)
    out["accuracy_flips"] = correct(log_p_BK, batch["label"])
    out["nll_flips"] = -jnp.take_along_axis(log_p_BK, batch["label"][:, None], axis=-1)[:, 0]
  return out


def run(config: Config, actions=()) -> classifier.ClassifierState | None:
  mesh = harness.mesh(config, config.batch_size)   # before any data is read
  train, test = harness.load_images(config.dataset, config)
  keys = harness.keys(config.seed, "init", "data", "step")
  batches = harness.batches(train, config.batch_size, keys["data"], mesh,
                            transform=functools.partial(preprocess, config, train=True))
  steps = config.steps if config.steps is not None else math.ceil(config.epochs * batches.steps_per_epoch)
  model, tx = make_model(config), optimizer(config, steps)
  evaluate = harness.evaluator(functools.partial(per_example, config, model), test,
                               batch_size=config.eval_batch_size)
  init_fn = lambda: classifier.init(keys["init"], model, (1, *input_shape(config)), tx)
  if config.eval_only:
    harness.evaluate_checkpoint(config.workdir, init_fn=init_fn, evaluate=evaluate,
                                fingerprint=harness.fingerprint(config, FINGERPRINT, since=FINGERPRINT_SINCE))
    return None
  return harness.train(
      config, steps=steps, init_fn=init_fn,
      train_step=functools.partial(train_step, config=config, model=model, tx=tx,
                                   sigma_fn=exact_sigma_fn(config, steps)), batches=batches,
      key=keys["step"], mesh=mesh, fingerprint=harness.fingerprint(config, FINGERPRINT, since=FINGERPRINT_SINCE),
      actions=[loop.Periodic(config.eval_every or batches.steps_per_epoch, lambda step, s: evaluate(s),
                             announce=True), *actions])


def main(argv=None) -> int:
  return cli.main(Config, run, argv=argv, prog="python -m train.classify", recipes=RECIPES)


if __name__ == "__main__":
  sys.exit(main())
