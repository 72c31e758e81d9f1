"""Image classification on Fashion-MNIST / MNIST: a small CNN or MobileNet v1 (SPEC.md §4), trained with
cross-entropy or one of the losses that train for accuracy (SPEC.md §1, §5).

    python -m train.classify --model cnn --epochs 1                        # 87% test accuracy in < 1 min on CPU
    python -m train.classify --model mobilenet --augment flip --epochs 50  # the seed's recipe: 56x56x3, batch 64, Adam
    python -m train.classify --loss exact_log                              # EXACT with a sigma head, -log p per example

Writes <workdir>/metrics.jsonl, <workdir>/config.json and orbax checkpoints in <workdir>/checkpoints/;
running again with the same --workdir resumes.
"""

import dataclasses
import functools
import math
import sys
from typing import Literal

import jax
import jax.numpy as jnp
import optax

from jaxtricks import cli, losses, loop, parallel
from jaxtricks.cli import require
from jaxtricks.data import load
from jaxtricks.data import pipeline
from jaxtricks.metrics import correct
from jaxtricks.models.cnn import CNN
from jaxtricks.models.feature_net import FeatureNet
from jaxtricks.models.mobilenet import MobileNetV1
from jaxtricks.state import TrainState


@dataclasses.dataclass(frozen=True)
class Config:
  """Train an image classifier with cross-entropy."""
  model: Literal["cnn", "mobilenet", "featnet"] = "cnn"
  loss: Literal["ce", "margin", "soft_acc", "exact", "exact_log_mean", "exact_log"] = "ce"
  margin: float = dataclasses.field(default=0.6, metadata={"help": "--loss margin: no loss once p_y > margin"})
  dataset: Literal["fashion_mnist", "mnist"] = "fashion_mnist"
  epochs: float = 1.0
  steps: int = dataclasses.field(default=0, metadata={"help": "train steps; 0: from --epochs"})
  batch_size: int = 64
  lr: float = 1e-3
  schedule: Literal["constant", "cosine"] = dataclasses.field(
      default="constant", metadata={"help": "learning rate: constant, or cosine decay to 0 over the run"})
  warmup_steps: int = 0
  weight_decay: float = dataclasses.field(default=0.0, metadata={"help": "decoupled (AdamW) weight decay"})
  width: float = dataclasses.field(default=1.0, metadata={"help": "MobileNet width multiplier"})
  input_size: int = dataclasses.field(default=56, metadata={"help": "MobileNet input side (28 -> resized)"})
  stem_stride: int = dataclasses.field(default=2, metadata={"help": "MobileNet first conv stride"})
  augment: Literal["none", "flip"] = "none"
  seed: int = 0
  workdir: str = "runs/classify"
  data_dir: str = dataclasses.field(default="", metadata={"help": "raw data folder (else $JAXTRICKS_DATA)"})
  checkpoint_every: int = 500
  eval_every: int = dataclasses.field(default=0, metadata={"help": "steps between test evaluations; 0: each epoch"})
  eval_batch_size: int = 1000
  devices: int = dataclasses.field(default=0, metadata={"help": "devices to split each batch over; 0: all visible"})
  progress: bool = True

  def __post_init__(self):
    require(self.steps >= 0, f"--steps must be >= 0 (0 means from --epochs), got {self.steps}")
    require(self.steps > 0 or self.epochs > 0, f"--epochs must be positive, got {self.epochs}")
    require(self.batch_size > 0, f"--batch-size must be positive, got {self.batch_size}")
    require(self.lr > 0, f"--lr must be positive, got {self.lr}")
    require(self.loss != "margin" or 0 < self.margin < 1, f"--margin must be in (0, 1), got {self.margin}")
    require(self.warmup_steps >= 0, f"--warmup-steps must be >= 0, got {self.warmup_steps}")
    require(self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}")
    require(self.stem_stride in (1, 2), f"--stem-stride must be 1 or 2, got {self.stem_stride}")
    require(self.width > 0, f"--width must be positive, got {self.width}")
    require(self.input_size >= 28, f"--input-size must be >= 28, got {self.input_size}")
    require(self.checkpoint_every > 0, f"--checkpoint-every must be positive, got {self.checkpoint_every}")
    require(self.eval_every >= 0, f"--eval-every must be >= 0, got {self.eval_every}")
    require(self.eval_batch_size > 0, f"--eval-batch-size must be positive, got {self.eval_batch_size}")


def num_outputs(config: Config) -> int:
  """10 logits; EXACT models add one output for sigma."""
  return 11 if config.loss.startswith("exact") else 10


def make_model(config: Config):
  if config.model == "cnn":
    return CNN(num_classes=num_outputs(config))
  if config.model == "featnet":
    return FeatureNet(num_classes=num_outputs(config))
  return MobileNetV1(num_classes=num_outputs(config), width=config.width, stem_stride=config.stem_stride)


def split_outputs(outputs_BK: jax.Array) -> tuple[jax.Array, jax.Array | None]:
  """(logits or EXACT's mu [B, 10], EXACT's sigma [B] or None): sigma = softplus(last output) + 1e-3."""
  if outputs_BK.shape[-1] == 10:
    return outputs_BK, None
  return outputs_BK[..., :10], jax.nn.softplus(outputs_BK[..., 10]) + 1e-3


def objective(config: Config, outputs_BK: jax.Array, labels_B: jax.Array) -> jax.Array:
  """The training loss of --loss, reduced over the batch."""
  logits, sigma = split_outputs(outputs_BK)
  match config.loss:
    case "ce":
      per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels_B)
    case "margin":
      per_example = losses.margin_softmax_cross_entropy(logits, labels_B, margin=config.margin)
    case "soft_acc":
      per_example = losses.soft_accuracy_loss(logits, labels_B)
    case "exact":
      per_example = losses.exact_loss(logits, sigma, labels_B)
    case "exact_log_mean":
      return losses.exact_log_mean_loss(logits, sigma, labels_B)
    case "exact_log":
      per_example = losses.exact_log_loss(logits, sigma, labels_B)
  return per_example.mean()


def nll(outputs_BK: jax.Array, labels_B: jax.Array) -> jax.Array:
  """-log p(y|x) under the model's own reading: softmax of the logits, or EXACT's p."""
  logits, sigma = split_outputs(outputs_BK)
  if sigma is None:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels_B)
  return losses.exact_log_loss(logits, sigma, labels_B)


def optimizer(config: Config, steps: int) -> optax.GradientTransformation:
  if config.schedule == "cosine":
    lr = optax.warmup_cosine_decay_schedule(0.0, config.lr, config.warmup_steps, max(steps, config.warmup_steps + 1))
  else:
    lr = optax.linear_schedule(0.0, config.lr, config.warmup_steps) if config.warmup_steps else config.lr
  if config.weight_decay:
    return optax.adamw(lr, weight_decay=config.weight_decay)
  return optax.adam(lr)


def preprocess(config: Config, key: jax.Array, batch: dict, *, train: bool) -> dict:
  """uint8 -> float in [0, 1]; flips when training with --augment flip; MobileNet: resize and 3 channels."""
  x = pipeline.to_float(batch["image"])
  if train and config.augment == "flip":
    x = pipeline.random_flip(key, x)
  if config.model == "mobilenet":
    x = pipeline.resize_rgb(x, config.input_size)
  return {"image": x, "label": batch["label"]}


def init_state(config: Config, model, key: jax.Array, steps: int = 1) -> TrainState:
  size = config.input_size if config.model == "mobilenet" else 28
  x = jnp.zeros((1, size, size, 3 if config.model == "mobilenet" else 1))
  variables = model.init(key, x)
  return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=optimizer(config, steps),
                           batch_stats=variables.get("batch_stats", {}))


def train_step(state: TrainState, batch: dict, key: jax.Array, *, config: Config) -> tuple[TrainState, dict]:
  """One optimizer step on the batch mean of --loss."""
  def loss_fn(params):
    outputs, updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats}, batch["image"],
                                      train=True, rngs={"dropout": key}, mutable=["batch_stats"])
    return objective(config, outputs, batch["label"]), (outputs, updates)

  (loss, (outputs, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", {}))
  metrics = {"loss": loss, "accuracy": correct(split_outputs(outputs)[0], batch["label"]).mean(),
             "grad_norm": optax.global_norm(grads), "param_norm": optax.global_norm(state.params)}
  return state, metrics


@jax.jit
def _eval_batch(state: TrainState, batch: dict, mask_B: jax.Array) -> dict:
  outputs = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, batch["image"])
  return {"correct": (correct(split_outputs(outputs)[0], batch["label"]) * mask_B).sum(),
          "nll": (nll(outputs, batch["label"]) * mask_B).sum()}


def make_eval_fn(config: Config, test: dict):
  prep = jax.jit(functools.partial(preprocess, config, train=False))
  key = jax.random.PRNGKey(0)   # unused without augmentation
  n = test["label"].shape[0]

  def evaluate(state):
    sums = [_eval_batch(state, prep(key, b), m) for b, m in pipeline.eval_batches(test, batch_size=config.eval_batch_size)]
    total = jax.device_get(jax.tree.map(lambda *v: sum(v), *sums))
    return {"test/accuracy": total["correct"] / n, "test/nll": total["nll"] / n}
  return evaluate


def run(config: Config, hooks=()) -> TrainState:
  mesh = parallel.make_mesh(config.devices, batch_size=config.batch_size)   # before any data is read
  images, labels = load(config.dataset, "train", data_dir=config.data_dir or None)
  test_images, test_labels = load(config.dataset, "test", data_dir=config.data_dir or None)
  require(config.batch_size <= len(labels), f"--batch-size {config.batch_size} exceeds the {len(labels)} training examples")
  key = jax.random.PRNGKey(config.seed)
  model_key, data_key, step_key = jax.random.split(key, 3)
  batches = pipeline.DeviceBatches({"image": images, "label": labels}, batch_size=config.batch_size,
                                   key=data_key, transform=functools.partial(preprocess, config, train=True),
                                   mesh=mesh)
  steps = config.steps or math.ceil(config.epochs * batches.steps_per_epoch)
  model = make_model(config)
  fingerprint = {k: v for k, v in dataclasses.asdict(config).items()
                 if k in ("model", "loss", "dataset", "width", "input_size", "stem_stride", "seed", "batch_size",
                          "augment")}
  return loop.run(
      loop.LoopConfig(steps=steps, workdir=config.workdir, checkpoint_every=config.checkpoint_every,
                      eval_every=config.eval_every or batches.steps_per_epoch, progress=config.progress),
      init_fn=lambda: init_state(config, model, model_key, steps),
      train_step=parallel.jit_step(functools.partial(train_step, config=config), mesh),
      batches=batches, key=step_key,
      eval_fn=make_eval_fn(config, {"image": jax.device_put(test_images), "label": jax.device_put(test_labels)}),
      hooks=hooks, fingerprint=fingerprint, state_sharding=parallel.replicated(mesh))


if __name__ == "__main__":
  sys.exit(cli.main(Config, run, prog="python -m train.classify"))
